"""One object in ranges fetched by several processes: learn its size and version
(:func:`probe`), write one range into a ``.part`` another process holds
(:func:`fetch_range`), verify and place the whole (:func:`place_part`).

A caller (a Dask cluster job, :mod:`dlutils.jobs.split`) plans the ranges, creates and
locks the ``.part`` at the object's size, sends ranges to other processes and places the
file once every range is in. Each range reuses the engine's own request, range checks,
write and retry code (a :class:`~dlutils.transfer.engine._Transfer` on the ``.part``):
every answer must be a 206 of exactly the range asked, of the version the object was
planned with (``If-Range`` is sent, and the answer's validator and total compared), so a
changed object raises :class:`~dlutils.RemoteChangedError` and never mixes versions.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..budget import ConnectionBudget
from ..checksums import Checksum, file_digest
from ..control import AbortEvent
from ..errors import (
    ChecksumMismatchError,
    DownloadAborted,
    DownloadError,
    IncompleteDownloadError,
    OverlongBodyError,
    RemoteChangedError,
)
from ..progress import Throttled, as_callback
from ..retry import AttemptBudget, RetryPolicy
from ..workfiles import open_working_file
from .checks import _FinalRemoteChanged
from .engine import _Transfer
from .parts import _check_still_ours
from .protocols import Remote, _Settings
from .retries import _give_up, _quietly, call_with_retries
from .tunables import current as current_tunables

__all__ = ["Probe", "probe", "plan_ranges", "fetch_range", "place_part"]

log = logging.getLogger("dlutils")


@dataclass(frozen=True)
class Probe:
    """What one ranged request told of an object: its size and version, ranges accepted."""

    total: int
    validator: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def probe(
    remote: Remote,
    *,
    retry: RetryPolicy | None = None,
    abort: threading.Event | None = None,
    sleep: Any = time.sleep,
) -> Probe | None:
    """Ask ``remote`` for its first byte: a :class:`Probe` when it answers with a range
    (206) naming the object's size and a validator; ``None`` otherwise (no ranges, size
    unknown, no validator to pin ranges to): then the object cannot be split safely."""
    body = call_with_retries(
        lambda: remote.open(0, 0),
        classify=remote.classify,
        retry=retry or RetryPolicy(),
        abort=abort,
        sleep=sleep,
    )
    try:
        if body.status != 206 or body.total is None or not body.validator:
            return None
        if body.start != 0 or body.end != 0 or body.encoding:
            return None
        return Probe(body.total, body.validator, dict(body.headers))
    finally:
        _quietly(body.close)


def plan_ranges(total: int, count: int, smallest: int) -> list[tuple[int, int]]:
    """``total`` bytes in at most ``count`` ranges of at least ``smallest`` bytes (the last
    may be smaller), as ``(start, end)`` inclusive; the same answer for the same arguments,
    so a rerun finds the ranges an earlier run recorded.

    Examples
    --------
    >>> plan_ranges(10, 3, 1)
    [(0, 3), (4, 7), (8, 9)]
    >>> plan_ranges(10, 8, 4)
    [(0, 3), (4, 7), (8, 9)]
    """
    size = max(1, smallest, math.ceil(total / max(1, count)))
    return [(start, min(start + size, total) - 1) for start in range(0, total, size)]


def fetch_range(
    remote: Remote,
    part: str,
    start: int,
    end: int,
    validator: str,
    total: int,
    *,
    identity: tuple[int, int] | None = None,
    progress: Any = None,
    limiter: Any = None,
    abort: threading.Event | None = None,
    budget: ConnectionBudget | None = None,
    retry: RetryPolicy | None = None,
    sleep: Any = time.sleep,
    clock: Any = time.monotonic,
) -> int:
    """Fetch bytes ``start``-``end`` of ``remote`` into the existing ``part`` at their offset.

    The ``.part`` is another process's (it created it at ``total`` bytes and holds its
    lock): it is opened without following links and must be that file (``identity``,
    its ``(st_dev, st_ino)``) at that size. Every request carries ``If-Range:
    validator`` and every answer must be a 206 of this range of that version; a range
    of another version (or a whole object, sent because it changed) raises
    :class:`~dlutils.RemoteChangedError` at once, with no retry. Other failures are
    retried as the engine retries a segment; ``budget`` is held for each request.

    Returns the bytes received.
    """
    if not 0 <= start <= end < total:
        raise ValueError(f"range {start}-{end} is not inside an object of {total} bytes")
    try:
        fd = open_working_file(part, os.O_RDWR, what="partial file")
    except FileNotFoundError as exc:
        raise DownloadError(f"{part!r} is gone: the download of its ranges was ended") from exc
    try:
        st = os.fstat(fd)
        if identity is not None and (st.st_dev, st.st_ino) != tuple(identity):
            raise DownloadError(f"{part!r} is no longer the file this download began")
        if st.st_size != total:
            raise DownloadError(f"{part!r} holds {st.st_size} bytes, not the planned {total}")
        s = _Settings(
            remote=remote,
            path=part,
            key=os.path.abspath(part),
            part=part,
            checksum=None,
            expected_size=None,
            progress=Throttled(as_callback(progress), 0.1, clock=clock),
            limiter=limiter,
            abort=abort,
            journal=None,
            retry=retry or RetryPolicy(),
            segments=1,
            segment_threshold=total + 1,
            sleep=sleep,
            clock=clock,
            rng=random.Random(),
            fsync=False,
            budget=budget,
            tunables=current_tunables(),
        )
        transfer = _Transfer(s, fd)
        try:
            _fetch(transfer, start, end, validator, total)
        finally:
            s.progress.flush()
        return transfer.received
    finally:
        os.close(fd)


def _fetch(t: _Transfer, start: int, end: int, validator: str, total: int) -> None:
    """The engine's segment loop (:meth:`_Segments._run_segments`) for one range."""
    s = t.s
    seg = [start, end, 0]
    lock = threading.Lock()
    stop = AbortEvent()  # nothing else of this object runs here: only ``abort`` stops it
    budget = AttemptBudget(s.retry, s.rng)
    while start + seg[2] <= end:
        before = seg[2]
        held = s.budget.hold(s.abort) if s.budget is not None else None
        body = None
        try:
            body = t._open(start + seg[2], end, validator, stop)
            problem = t._range_problem(body, start + seg[2], end, total, validator)
            if problem is not None:
                raise _FinalRemoteChanged(
                    f"{s.remote.display} {problem} while its ranges were fetched across "
                    "the cluster; nothing was placed"
                )
            t._stream_segment(body, seg, end, lock, stop)
            body = None
        except BaseException as exc:
            if body is not None:
                _quietly(body.close)
            if s.abort is not None and s.abort.is_set() and not isinstance(exc, DownloadAborted):
                raise DownloadAborted(
                    f"bytes {start}-{end} of {s.remote.display} were aborted; {t.s.part!r} is kept"
                ) from exc
            if t._stopped() or isinstance(exc, DownloadAborted):
                raise
            retryable, retry_after = t._classify(exc)
            if isinstance(exc, (RemoteChangedError, OverlongBodyError)) or not retryable:
                raise
            delay = budget.delay(exc, retry_after, progress=seg[2] > before)
            if delay is None:
                _give_up(exc, budget.attempts)
            log.debug("retry of bytes %d-%d of %s: %s", start, end, s.remote.display, exc)
            t._pause(delay)
        finally:
            if held is not None:
                held.close()


def place_part(
    fd: int,
    part: str,
    path: str,
    total: int,
    checksum: Checksum | None,
    display: str,
) -> None:
    """Verify the ``.part`` whose descriptor (and lock) is ``fd``, then ``os.replace`` it to
    ``path``: it must hold ``total`` bytes, and ``checksum`` when given; a mismatch deletes
    it (its bytes are not the object), nothing is placed."""
    size = os.fstat(fd).st_size
    if size != total:
        raise IncompleteDownloadError(
            f"{part!r} holds {size} bytes, {total} expected", received=size, expected=total
        )
    if checksum is not None:
        actual = file_digest(part, checksum.algorithm)
        if actual != checksum.hexdigest:
            _check_still_ours(part, fd, path)
            _quietly(lambda: os.unlink(part))
            raise ChecksumMismatchError(
                f"{display} does not have the expected {checksum.algorithm}: expected "
                f"{checksum.hexdigest}, got {actual}; the file was not kept",
                algorithm=checksum.algorithm,
                expected=checksum.hexdigest,
                actual=actual,
            )
    _check_still_ours(part, fd, path)
    os.replace(part, path)
