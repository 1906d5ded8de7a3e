"""The one streaming engine: bytes to ``NAME.part``, verified, resumed, retried, then placed.

Every source describes how to open its object as a :class:`Remote`; :func:`download`
does everything else: an exclusive lock on the ``.part`` file (two processes asking
for the same file do not corrupt it: the second waits and finds it done), resume with
a range pinned to the validator recorded when the part was started, retries with
backoff, segmented parallel download of large objects, size and checksum checks, and
``os.replace`` into place. Nothing unverified ever sits under the final name.

The package, one job a module: :func:`download` (here) locks the ``.part`` and runs a
``_Transfer`` (``engine.py``: attempts, retries, restarts), whose sides are ``stream.py``
(one body read in order), ``segments.py`` (ranges in parallel, grown while throughput
rises), ``journal.py`` (the resume record) and ``parts.py`` (the whole write side: the
``.part`` opened and locked, written, truncated, hashed, verified and placed).
``options.py`` holds :class:`TransferOptions` (what the sources take), ``tunables.py``
the engine's :class:`Tunables`; ``protocols.py``, ``checks.py`` and ``retries.py`` what
they share.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ..budget import current_budget
from ..checksums import Checksum, parse_checksum
from ..control import AbortEvent, opening, register_socket
from ..errors import InvalidInputError
from ..progress import Callback, Throttled, as_callback
from ..retry import RetryPolicy
from .checks import object_headers
from .engine import _Transfer
from .options import MAX_SEGMENTS, SEGMENT_THRESHOLD, TransferOptions
from .parts import _check_placed_by_other, _lock_part, _remove_if_empty
from .protocols import (
    PART_SUFFIX,
    Body,
    Fetched,
    Journal,
    Remote,
    TransferResult,
    _Settings,
    part_path,
    resume_point,
)
from .retries import _quietly, call_with_retries
from .tunables import Tunables, tuned
from .tunables import current as current_tunables

__all__ = [
    "Body",
    "Remote",
    "Journal",
    "AbortEvent",
    "TransferResult",
    "Fetched",
    "download",
    "call_with_retries",
    "register_socket",
    "opening",
    "part_path",
    "resume_point",
    "object_headers",
    "PART_SUFFIX",
    "CHUNK_SIZE",
    "Tunables",
    "TransferOptions",
    "tuned",
]

log = logging.getLogger("dlutils")

#: The defaults of :class:`~dlutils.transfer.tunables.Tunables` (change them for a test
#: with :func:`~dlutils.transfer.tunables.tuned`; assigning these changes nothing).
CHUNK_SIZE = Tunables.chunk_size
MIN_SEGMENT_SIZE = Tunables.min_segment_size
INITIAL_SEGMENTS = Tunables.initial_segments
SPLIT_MIN = Tunables.split_min
GROW_INTERVAL = Tunables.grow_interval
GROW_GAIN = Tunables.grow_gain
JOURNAL_INTERVAL = Tunables.journal_interval
MAX_RESTARTS = Tunables.max_restarts


def download(
    remote: Remote,
    path: str | os.PathLike,
    *,
    first: Body | None = None,
    checksum: str | Checksum | None = None,
    expected_size: int | None = None,
    progress: Callback | Callable[[int], Any] | None = None,
    limiter: Any = None,
    abort: threading.Event | None = None,
    journal: Journal | None = None,
    retry: RetryPolicy | None = None,
    segments: int = MAX_SEGMENTS,
    segment_threshold: int = SEGMENT_THRESHOLD,
    fsync: bool = False,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> TransferResult:
    """Fetch ``remote`` into ``path`` through ``path + ".part"``; return what was done.

    Parameters
    ----------
    remote : Remote
        Opens the object (see :class:`Remote`).
    path : str or PathLike
        Final location; parent folders are created.
    first : Body, optional
        A body the caller already opened from byte 0 (for instance the answer to
        a conditional GET); it is used instead of a first request. When a matching
        partial download exists it is closed and the partial resumed instead.
    checksum : str or Checksum, optional
        ``"sha256:<hex>"``, ``"md5:<hex>"``, ``"crc32c:<hex>"``...: verified before
        the file is placed; on a mismatch the ``.part`` is deleted.
    expected_size : int, optional
        Size the object must have (from a listing); a different size is an error.
    progress : Callback or callable, optional
        Receives byte counts, at most ten times a second.
    limiter : object with ``acquire(nbytes, abort=None)``, optional
        A shared rate limiter (:class:`dlutils.limits.TokenBucket`), called before each
        chunk is written; it must return early, raising, when ``abort`` is set.
    abort : threading.Event, optional
        Set it to stop; the ``.part`` stays for a later resume. An :class:`AbortEvent`
        also interrupts a transfer blocked on the network within a second, whatever
        its phase (connecting, waiting for headers, reading), and its ``time_limit``
        bounds each attempt (:class:`~dlutils.DownloadTimeoutError`, not retried).
        ``KeyboardInterrupt`` stops every range of a segmented download at once, records
        what arrived and is raised again.
    journal : Journal, optional
        Records the validator of a partial download, without which a ``.part``
        cannot be resumed safely (it is then restarted from zero).
    retry : RetryPolicy, optional
        Retries, backoff and ``Retry-After`` handling; at most ``2 * (retries + 1)``
        attempts per object, whatever each received (see :class:`RetryPolicy`).
    segments, segment_threshold : int
        Objects of at least ``segment_threshold`` bytes, from servers that accept
        ranges, are fetched over up to ``segments`` connections at once: a few at
        first, more while the throughput rises, and the largest range left is split
        again for a connection that finished early. Inside a job, the job's
        :class:`~dlutils.budget.ConnectionBudget` caps them all.
    fsync : bool
        Flush the file to stable storage before placing it, and before each resume
        record of a segmented download. Without it, a record never claims bytes the
        ``.part`` lacks after the process dies (SIGKILL, a crash: written bytes are in
        the page cache), but may after a power loss.
    sleep, clock, rng
        Injected time and randomness, for tests.

    Returns
    -------
    TransferResult

    Raises
    ------
    dlutils.DownloadAborted
        ``abort`` was set.
    dlutils.DownloadTimeoutError
        An attempt ran out of ``abort.time_limit``; the ``.part`` is kept.
    dlutils.IncompleteDownloadError
        The connection kept ending early after every retry; the ``.part`` is kept.
    dlutils.ChecksumMismatchError, dlutils.SizeMismatchError
        The bytes are not the expected ones; nothing was placed.
    requests.HTTPError, OSError, ...
        Errors of the source that retries could not cure.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InvalidInputError(f"destination {path!r} is a folder; give a file path inside it")
    if segments < 1:
        raise InvalidInputError(f"segments={segments!r} is not valid: use an int >= 1")
    settings = _Settings(
        remote=remote,
        path=path,
        key=os.path.abspath(path),
        part=part_path(path),
        checksum=parse_checksum(checksum),
        expected_size=expected_size,
        progress=Throttled(as_callback(progress), 0.1, clock=clock),
        limiter=limiter,
        abort=abort,
        journal=journal,
        retry=retry or RetryPolicy(),
        segments=segments,
        segment_threshold=segment_threshold,
        sleep=sleep,
        clock=clock,
        rng=rng,
        fsync=fsync,
        budget=current_budget(),
        tunables=current_tunables(),
    )
    try:
        fd = _lock_part(settings)
    except BaseException:
        if first is not None:
            _quietly(first.close)
        raise
    if fd is None:
        if first is not None:
            _quietly(first.close)
        size = os.path.getsize(path)
        _check_placed_by_other(settings)
        return TransferResult(path=path, size=size, outcome="placed-by-other")
    placed = False
    transfer: _Transfer | None = None
    started = clock()
    try:
        transfer = _Transfer(settings, fd)
        result = transfer.run(first)
        placed = True
        # the one INFO line per object placed, whichever source or job asked for it
        log.info("placed %s (%d bytes in %.2f s)", path, result.size, clock() - started)
        return result
    finally:
        settings.progress.flush()
        if transfer is None:
            _quietly(lambda: os.close(fd))
        else:
            if not placed and not transfer.lingering:
                _remove_if_empty(settings.part, fd)
            transfer.close()
