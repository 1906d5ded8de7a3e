"""The one streaming engine: bytes to ``NAME.part``, verified, resumed, retried, then placed.

Every source describes how to open its object as a :class:`Remote`; :func:`download`
does everything else: an exclusive lock on the ``.part`` file (two processes asking
for the same file do not corrupt it: the second waits and finds it done), resume with
a range pinned to the validator recorded when the part was started, retries with
backoff, segmented parallel download of large objects, size and checksum checks, and
``os.replace`` into place. Nothing unverified ever sits under the final name.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from ..budget import current_budget
from ..checksums import Checksum, new_hasher, parse_checksum
from ..codings import CodingError, EndedEarly, decoder, known_codings
from ..control import AbortEvent, opening, register_socket, timed_out
from ..errors import (
    ChecksumMismatchError,
    ContentEncodingError,
    DownloadAborted,
    DownloadError,
    DownloadTimeoutError,
    IncompleteDownloadError,
    InvalidInputError,
    OverlongBodyError,
    RemoteChangedError,
    SizeMismatchError,
)
from ..progress import Callback, Throttled, as_callback
from ..retry import AttemptBudget, RetryPolicy
from .checks import (
    _Final,
    _FinalIncomplete,
    _FinalOverlong,
    _FinalRemoteChanged,
    _same_version,
    _unasked_codings,
    object_headers,
)
from .parts import _check_placed_by_other, _check_still_ours, _lock_part, _remove_if_empty
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
from .retries import _give_up, _interrupter, _quietly, call_with_retries

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
]

log = logging.getLogger("dlutils")

#: Bytes asked for per read: large reads keep Python's per-chunk cost negligible.
CHUNK_SIZE = 1 << 20
#: Objects at least this big are fetched in parallel ranges when the server allows it.
SEGMENT_THRESHOLD = 64 << 20
#: No segment of the first plan is smaller than this.
MIN_SEGMENT_SIZE = 16 << 20
#: Ranges a segmented download starts with; it adds more while its throughput rises.
INITIAL_SEGMENTS = 8
#: Default most ranges one object is fetched over at once.
MAX_SEGMENTS = 32
#: A range is split in two (to grow, or to help a straggler) only with this much left.
SPLIT_MIN = 4 << 20
#: How often a segmented download measures its throughput to decide whether to grow.
GROW_INTERVAL = 0.1
#: Throughput must have risen by this factor since the last growth to grow again.
GROW_GAIN = 1.10
#: How often a segmented download records its progress for resume.
JOURNAL_INTERVAL = 1.0
#: Restarts from zero one object may take because an answer did not hold together (a range
#: of another version, a contradictory Content-Range, a body longer than announced); the
#: next such answer ends its download with an error instead of looping.
MAX_RESTARTS = 1
#: Seconds an interrupted segmented download waits for its threads before it returns.
_STOP_GRACE = 2.0


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


def _origin_of(remote: Remote) -> str:
    """What a partial download records of where its bytes come from: the link without its
    query and fragment (a signed link signed anew is the same object)."""
    return re.split(r"[?#]", str(getattr(remote, "display", "")), maxsplit=1)[0]


class _Transfer:
    """One download in progress: its ``.part`` descriptor, offset and hasher."""

    def __init__(self, s: _Settings, fd: int):
        self.s = s
        self.fd = fd
        self.received = 0
        self.resumed_from = 0
        self.hasher: Any = None
        self.hashed = 0
        self.headers: Mapping[str, str] | None = None
        self.validator: str | None = None
        self.segments_used = 1
        # (validator, total) of the version last seen announced: a later answer of that
        # version that announces no length is still held to it.
        self.known: tuple[str, int] | None = None
        # Integrity restarts: counted once per .part generation (segments fail together).
        self.generation = 0
        self.restarts = 0
        self._failed_generation = -1
        self._restart_lock = threading.Lock()
        #: Times bytes already in the ``.part`` were thrown away to start again.
        self.discards = 0
        #: Segment threads still running after the download stopped (they own ``fd``).
        self.lingering: list[Any] = []

    def close(self) -> None:
        """Close the ``.part``, or leave that to the last segment thread still writing it."""
        pending = [f for f in self.lingering if not f.done()]
        if not pending:
            _quietly(lambda: os.close(self.fd))
            return
        remaining = [len(pending)]
        lock = threading.Lock()

        def one_done(_future: Any) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                _quietly(lambda: os.close(self.fd))

        for future in pending:
            future.add_done_callback(one_done)

    # -- bookkeeping ---------------------------------------------------------------

    def _partial(self) -> dict[str, Any] | None:
        if self.s.journal is None:
            return None
        try:
            info = self.s.journal.get_partial(self.s.key)
        except Exception:  # noqa: BLE001 - a damaged journal only costs a restart
            log.warning("cannot read the resume record of %s", self.s.path, exc_info=True)
            return None
        if not (isinstance(info, dict) and info.get("validator")):
            return None
        # A .part begun from another link (the same name, another server or object) is not
        # this one's to resume: a 206 without validators would splice it onto another object.
        source = info.get("source")
        if source is not None and source != _origin_of(self.s.remote):
            log.debug("%s was begun from %s; starting it from zero", self.s.part, source)
            return None
        return info

    def _record(self, info: dict[str, Any]) -> None:
        if self.s.journal is not None:
            try:
                info = {**info, "source": _origin_of(self.s.remote)}
                self.s.journal.put_partial(self.s.key, info)
            except Exception:  # noqa: BLE001
                log.warning("cannot record resume state of %s", self.s.path, exc_info=True)

    def _forget(self) -> None:
        if self.s.journal is not None:
            _quietly(lambda: self.s.journal.drop_partial(self.s.key))

    def _truncate(self) -> None:
        if os.fstat(self.fd).st_size:
            self.discards += 1  # bytes thrown away: the attempt after this is no resume
        os.ftruncate(self.fd, 0)
        self._forget()
        self.hasher = None
        self.hashed = 0
        self.generation += 1

    def _failure(self, kind: type[DownloadError], problem: str, **kw: Any) -> DownloadError:
        """The error for an answer that does not hold together; the object restarts from zero.

        The first such answer for an object costs a restart; the next one is final.
        """
        with self._restart_lock:
            if self._failed_generation != self.generation:
                self._failed_generation = self.generation
                self.restarts += 1
            final = self.restarts > MAX_RESTARTS
        if not final:
            return kind(f"{self.s.remote.display} {problem}; restarting it from zero", **kw)
        final_kind: type[DownloadError] = _FinalRemoteChanged
        if issubclass(kind, OverlongBodyError):
            final_kind = _FinalOverlong
        elif issubclass(kind, IncompleteDownloadError):
            final_kind = _FinalIncomplete
        return final_kind(
            f"{self.s.remote.display} {problem}, again after a restart from zero; nothing was "
            "placed. The server (or a proxy in front of it) answers inconsistently: try "
            "again later, or report it to its operator",
            **kw,
        )

    def _check_abort(self) -> None:
        if self.s.abort is not None and self.s.abort.is_set():
            raise DownloadAborted(f"download of {self.s.remote.display} was aborted")
        timed_out(self.s.abort, self.s.remote.display)

    def _stopped(self) -> bool:
        """Whether the download was aborted or its attempt ran out of time."""
        abort = self.s.abort
        return abort is not None and (abort.is_set() or getattr(abort, "expired", False))

    def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        abort = self.s.abort
        if isinstance(abort, AbortEvent):
            if abort.pause(seconds):
                self._check_abort()
        elif abort is not None:
            if abort.wait(seconds):
                self._check_abort()
        else:
            self.s.sleep(seconds)

    def _open(
        self, start: int, end: int | None, if_range: str | None, stop: threading.Event | None = None
    ) -> Body:
        self._check_abort()
        with opening(self.s.abort, stop):
            body = self.s.remote.open(start, end, if_range=if_range)
        if self.headers is None and body.status in (200, 206):
            self.headers, self.validator = body.headers, body.validator
        return body

    def _watch(self, body: Body) -> int | None:
        if isinstance(self.s.abort, AbortEvent):
            # The callback runs in the aborting thread, so it must not block: closing a
            # body another thread reads can wait for that read.
            callback = body.interrupt or (
                lambda: threading.Thread(target=body.close, daemon=True).start()
            )
            return self.s.abort.add_callback(callback)
        return None

    def _unwatch(self, handle: int | None) -> None:
        if handle is not None:
            self.s.abort.remove_callback(handle)

    # -- the main loop ------------------------------------------------------------

    def run(self, first: Body | None) -> TransferResult:
        s = self.s
        budget = AttemptBudget(s.retry, s.rng)
        timed = isinstance(s.abort, AbortEvent) and s.abort.time_limit is not None
        pending_first = first
        try:
            while True:
                before = self.received
                discards = self.discards
                if timed and not (pending_first is not None and s.abort.attempt_running()):
                    s.abort.begin_attempt()  # a body opened by the caller goes on with its clock
                try:
                    result = self._attempt(pending_first)
                    pending_first = None
                    return self._finish(result)
                except BaseException as exc:
                    pending_first = None
                    if timed:
                        s.abort.end_attempt()
                    if s.abort is not None and s.abort.is_set():
                        raise DownloadAborted(
                            f"download of {s.remote.display} was aborted; "
                            f"{s.part!r} is kept for resume"
                        ) from (exc if not isinstance(exc, DownloadAborted) else None)
                    if isinstance(exc, DownloadTimeoutError):
                        raise
                    timed_out(s.abort, s.remote.display, exc)
                    retryable, retry_after = self._classify(exc)
                    if not retryable:
                        raise
                    # A changed object restarts from zero at once: its bytes cannot be
                    # spliced onto the .part, and waiting does not change it back.
                    changed = isinstance(exc, RemoteChangedError)
                    if changed:
                        self._truncate()
                    # Bytes count as progress only when the next attempt can keep them.
                    progress = self.received > before and self.discards == discards and not changed
                    delay = budget.delay(exc, retry_after, progress=progress)
                    if delay is None:
                        _give_up(exc, budget.attempts)
                    if changed:
                        delay = 0.0
                    log.debug(
                        "retry %d of %s (at most %d) in %.2fs after %s: %s",
                        budget.attempts - 1,
                        s.remote.display,
                        2 * (s.retry.retries + 1),
                        delay,
                        type(exc).__name__,
                        exc,
                    )
                    self._pause(delay)
        finally:
            if timed:
                s.abort.end_attempt()

    def _classify(self, exc: BaseException) -> tuple[bool, float | None]:
        if isinstance(exc, _Final):
            return False, None
        if isinstance(exc, (IncompleteDownloadError, RemoteChangedError)):
            return True, None
        if isinstance(exc, (DownloadError, KeyboardInterrupt, SystemExit, MemoryError)):
            return False, None
        if not isinstance(exc, Exception):
            return False, None
        try:
            return self.s.remote.classify(exc)
        except Exception:  # noqa: BLE001
            return False, None

    def _attempt(self, first: Body | None) -> int | None:
        """Bring the ``.part`` to completion; returns (a body for headers, the total)."""
        s = self.s
        self.generation += 1  # integrity failures of one attempt count as one
        part_size = os.fstat(self.fd).st_size
        # An empty .part has nothing to resume: no need to ask the journal.
        partial = self._partial() if part_size else None
        if partial is None and part_size:
            log.debug("%s has no resume record; starting %s from zero", s.part, s.path)
            self._truncate()
            part_size = 0
        if partial is not None and partial.get("segments"):
            return self._resume_segments(partial, first)
        offset = part_size
        validator = partial["validator"] if partial else None
        pinned_total = partial.get("total") if partial else None
        if validator and pinned_total is not None:
            self.known = (validator, pinned_total)
        if (
            first is not None
            and offset
            and first.status == 200
            and first.validator == validator
            and first.accepts_ranges
            and not _unasked_codings(first)
        ) or (first is not None and first.status == 206 and first.start != offset):
            # The object is unchanged: ask only for the missing bytes (or the .part moved on
            # since the caller asked for its range).
            _quietly(first.close)
            first = None
        if first is not None:
            body = first
        elif offset:
            body = self._open(offset, None, validator)
        else:
            body = self._open(0, None, None)
        return self._consume(body, offset, validator, pinned_total)

    def _consume(
        self,
        body: Body,
        offset: int,
        validator: str | None,
        pinned_total: int | None = None,
    ) -> int | None:
        s = self.s
        handle = self._watch(body)

        def restart() -> None:
            """Drop the .part and ask for the whole object, with no range to splice."""
            nonlocal body, handle, offset
            self._unwatch(handle)
            handle = None
            _quietly(body.close)
            self._truncate()
            body = self._open(0, None, None)
            handle = self._watch(body)
            offset = 0

        try:
            if body.status == 416 and offset:
                if body.total == offset and validator and pinned_total in (None, offset):
                    log.debug("%s was complete but not yet placed", s.part)
                    # Keep what the answer and the journal say of the object, for its record.
                    headers = dict(body.headers)
                    name = "ETag" if validator.startswith(('"', "W/")) else "Last-Modified"
                    headers.setdefault(name, validator)
                    self.headers, self.validator = headers, validator
                    return offset
                log.debug("%s cannot be resumed at byte %d; starting from zero", s.path, offset)
                restart()
            if body.status == 206 and offset:
                problem = self._range_problem(body, offset, None, pinned_total, validator)
                if problem is not None:
                    error = self._failure(RemoteChangedError, problem)
                    if isinstance(error, _Final):
                        raise error
                    log.warning("%s", error)
                    restart()
            if body.status == 206 and not offset:
                # A range where the whole object was asked for (or the restart's answer):
                # it must at least hold together, and it starts the object.
                problem = self._range_problem(body, 0, None, None, None)
                if problem is not None:
                    raise self._failure(RemoteChangedError, problem)
            elif body.status == 206:
                self.resumed_from = offset
                log.debug("resuming %s at byte %d", s.path, offset)
            elif body.status == 200:
                if offset:
                    log.debug(
                        "%s changed on the server; starting %s from zero", s.remote.display, s.path
                    )
                offset = 0
            else:
                raise RemoteChangedError(
                    f"{s.remote.display} answered a range request with bytes from "
                    f"{body.start} (status {body.status}) instead of {offset}"
                )
            if offset == 0 and os.fstat(self.fd).st_size:
                self._truncate()
            codings = _unasked_codings(body)
            if codings:
                return self._decode(body, codings)
            self.headers, self.validator = body.headers, body.validator
            total = body.total
            if total is not None and body.validator:
                self.known = (body.validator, total)
            elif self.known is not None and body.validator == self.known[0]:
                total = self.known[1]  # no length announced, but this version's is known
            if body.status == 200 and None not in (body.length, total) and body.length != total:
                raise self._failure(
                    RemoteChangedError,
                    f"announced a body of {body.length} bytes (Content-Length) for an object "
                    f"of {total} (Content-Range)",
                )
            self._check_size(total)
            s.progress.set_size(total)
            if (
                offset == 0
                and total is not None
                and total >= s.segment_threshold
                and s.segments > 1
                and body.accepts_ranges
                and body.validator
            ):
                self._unwatch(handle)
                handle = None
                return self._segmented(body, total)
            if body.validator and (total is None or total > CHUNK_SIZE) and not offset:
                self._record({"validator": body.validator, "total": total})
            # A range may end before the object does; the rest is resumed.
            stop = body.end + 1 if body.status == 206 and body.end is not None else total
            self._stream_sequential(body, offset, total, stop)
            return total
        finally:
            self._unwatch(handle)
            _quietly(body.close)

    def _range_problem(
        self,
        body: Body,
        start: int,
        end: int | None,
        total: int | None,
        validator: str | None,
    ) -> str | None:
        """What is wrong with ``body`` as the answer to a range request, or ``None``.

        ``start``-``end`` is the range asked for; ``total`` and ``validator`` what the
        ``.part`` is pinned to (``None``: nothing to compare).
        """
        if body.status != 206:
            asked = f"{start}-{'' if end is None else end}"
            return f"answered status {body.status} to a request for bytes {asked}"
        shown = f"Content-Range: bytes {body.start}-{body.end}/{body.total or '*'}"
        if body.end is None:
            return "answered 206 without a usable Content-Range"
        if body.end < body.start or (body.total is not None and body.end >= body.total):
            return f"sent a Content-Range that contradicts itself ({shown})"
        if body.start != start:
            return f"sent bytes from {body.start} where bytes from {start} were asked ({shown})"
        if end is not None and body.end > end:
            return f"sent bytes up to {body.end} where bytes up to {end} were asked ({shown})"
        if total is not None and body.total != total:
            return (
                f"is now {body.total or 'of unknown size'} bytes, not the {total} its partial "
                f"download was begun with ({shown}): a range of another version"
            )
        if validator and not _same_version(body, validator):
            return (
                f"is now version {body.validator}, not {validator} its partial download was "
                "begun with: the server sent a range of another version (it ignored If-Range)"
            )
        if _unasked_codings(body):
            return f"sent a range compressed with Content-Encoding: {body.encoding}"
        span = body.end - body.start + 1
        if body.length is not None and body.length != span:
            return f"announced {body.length} bytes (Content-Length) for a range of {span} ({shown})"
        return None

    def _decode(self, body: Body, codings: list[str]) -> int:
        """Store the decoded bytes of a body compressed although it was not asked to be.

        Its sizes and digests describe the compressed bytes, so the size and checksum
        checks apply to what the decoding gives; it is never resumed nor segmented.
        """
        s = self.s
        unknown = [c for c in codings if c not in known_codings()]
        if unknown:
            raise ContentEncodingError(
                f"{s.remote.display} was sent compressed with Content-Encoding: "
                f"{body.encoding}, which was not asked for and cannot be decoded here "
                f"({', '.join(unknown)}); nothing was placed. Install "
                "'brotli' or 'zstandard' if it names br or zstd, or ask the server's operator"
            )
        log.debug("%s came compressed (%s) unasked; storing it decoded", s.remote.display, codings)
        self.headers, self.validator = object_headers(body), None
        s.progress.set_size(None)
        read = decoder(body.read, codings)

        def decoded(size: int) -> bytes:
            try:
                return read(size)
            except CodingError as exc:
                if isinstance(exc, EndedEarly):
                    raise self._failure(
                        IncompleteDownloadError, f"ended its {body.encoding} body early"
                    ) from exc
                raise ContentEncodingError(
                    f"{s.remote.display} sent a {body.encoding} body that cannot be decoded "
                    f"({exc}); nothing was placed"
                ) from exc

        return self._stream_sequential(body, 0, None, None, read=decoded)

    def _check_size(self, total: int | None) -> None:
        expected = self.s.expected_size
        if expected is not None and total is not None and total != expected:
            raise SizeMismatchError(
                f"{self.s.remote.display} is {total} bytes, but {expected} were expected"
            )

    def _stream_sequential(
        self,
        body: Body,
        offset: int,
        total: int | None,
        stop: int | None = None,
        *,
        read: Callable[[int], bytes] | None = None,
    ) -> int:
        """Write ``body`` at ``offset`` until it ends; returns the position reached.

        ``stop`` is where the body announced it ends (``total`` when not given). No byte
        past ``stop`` or the expected size is ever written: at most one byte more is read.
        """
        s = self.s
        read = read or body.read
        stop = total if stop is None else stop
        expected = s.expected_size
        limit = min((n for n in (stop, expected) if n is not None), default=None)
        if s.checksum is not None and self.hasher is None:
            self.hasher = new_hasher(s.checksum.algorithm)
            self.hashed = 0
        if self.hasher is not None and self.hashed < offset:
            self._hash_file(self.hashed, offset)
        position = offset
        while True:
            self._check_abort()
            want = CHUNK_SIZE if limit is None else max(1, min(CHUNK_SIZE, limit - position + 1))
            data = read(want)
            if not data:
                break
            if limit is not None and position + len(data) > limit:
                self._truncate()  # its bytes cannot be trusted: none is kept
                if stop is not None and position + len(data) > stop:
                    raise self._failure(
                        OverlongBodyError,
                        f"sent more than the {stop - (body.start if body.status == 206 else 0)} "
                        "bytes it announced",
                        received=position + len(data),
                        expected=stop,
                    )
                raise SizeMismatchError(
                    f"{s.remote.display} sent more than the {expected} bytes expected of it; "
                    "the download was stopped there and nothing was placed"
                )
            if s.limiter is not None:
                s.limiter.acquire(len(data), abort=s.abort)
            self._write(data, position)
            position += len(data)
            self.received += len(data)
            if self.hasher is not None:
                self.hasher.update(data)
                self.hashed = position
            s.progress.update(len(data))
        if stop is not None and position != stop:
            raise IncompleteDownloadError(
                f"{s.remote.display} ended after {position} of {stop} bytes; "
                f"{s.part!r} is kept for resume",
                received=position,
                expected=stop,
            )
        if total is not None and position != total:
            raise IncompleteDownloadError(
                f"{s.remote.display} sent bytes up to {position} of {total}; "
                f"{s.part!r} is kept for resume",
                received=position,
                expected=total,
            )
        return position

    def _write(self, data: bytes, position: int) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self.fd, view, position)
                view = view[written:]
                position += written
        except OSError as exc:
            raise DownloadError(f"cannot write {self.s.part!r}: {exc.strerror or exc}") from exc

    def _hash_file(self, start: int, stop: int) -> None:
        position = start
        while position < stop:
            block = os.pread(self.fd, min(CHUNK_SIZE, stop - position), position)
            if not block:
                break
            self.hasher.update(block)
            position += len(block)
        self.hashed = position

    # -- segmented downloads ------------------------------------------------------

    def _plan(self, total: int) -> list[list[int]]:
        smallest = max(1, min(MIN_SEGMENT_SIZE, self.s.segment_threshold // 2))
        count = max(1, min(INITIAL_SEGMENTS, self.s.segments, total // smallest))
        size = math.ceil(total / count)
        return [[start, min(start + size, total) - 1, 0] for start in range(0, total, size)]

    def _segmented(self, first: Body, total: int) -> int:
        plan = self._plan(total)
        os.ftruncate(self.fd, total)
        self._record({"validator": first.validator, "total": total, "segments": plan})
        return self._run_segments(plan, first.validator, total, first)

    def _resume_segments(self, partial: dict[str, Any], first: Body | None) -> int | None:
        validator, total = partial["validator"], partial.get("total")
        plan = [list(map(int, seg)) for seg in partial["segments"]]
        if total is not None:
            self.known = (validator, total)
        if first is not None:
            if first.validator == validator and first.total == total:
                _quietly(first.close)
            else:
                self._truncate()
                return self._consume(first, 0, None)
        if os.fstat(self.fd).st_size != total:
            self._truncate()
            return self._consume(self._open(0, None, None), 0, None)
        done = sum(seg[2] for seg in plan)
        self.resumed_from = done
        log.debug("resuming %s: %d of %d bytes already here", self.s.path, done, total)
        self.s.progress.set_size(total)
        return self._run_segments(plan, validator, total, None)

    def _run_segments(
        self, plan: list[list[int]], validator: str, total: int, first: Body | None
    ) -> int:
        """Fetch the ranges of ``plan`` in threads; this thread schedules them and records
        progress for resume.

        ``plan`` holds ``[start, end, done]`` per range; ``done`` only counts bytes
        ``os.pwrite`` has returned for, so the journal, written from here every
        :data:`JOURNAL_INTERVAL` and whenever the download stops, never claims bytes the
        file lacks after a crash of the process (SIGKILL, ^C). It may after a power
        loss, unless ``fsync=True``: then the ``.part`` is flushed before each record.

        The download starts with the ranges of the plan and grows: every
        :data:`GROW_INTERVAL`, while the throughput rose by :data:`GROW_GAIN` since the
        last growth, each running range with the most bytes left is split in two (its
        fetch keeps the lower half, a new one takes the upper half), up to ``segments``
        ranges and as long as the job's connection budget has free slots. A connection
        whose range is done takes the upper half of the range with the most bytes left
        (a straggler). A split range is two entries of the plan, so of the journal.
        """
        s = self.s
        lock = threading.Lock()
        # Set when the download must stop (a failed range, ^C): interrupts every range.
        stop = AbortEvent()
        link = s.abort.add_callback(stop.set) if isinstance(s.abort, AbortEvent) else None
        last_record = [s.clock()]

        def record(force: bool = False) -> None:
            now = s.clock()
            if force or now - last_record[0] >= JOURNAL_INTERVAL:
                last_record[0] = now
                with lock:
                    snapshot = [list(seg) for seg in plan]
                if s.fsync:
                    _quietly(lambda: os.fdatasync(self.fd))
                self._record({"validator": validator, "total": total, "segments": snapshot})

        # The failure that stopped the others: interrupting their reads makes them fail
        # too (a reset connection, a short body), and those errors must not hide it.
        causes: list[BaseException] = []

        def fetch(index: int, body: Body | None) -> None:
            try:
                _fetch(index, body)
            except BaseException as exc:
                with lock:
                    if not stop.is_set():
                        causes.append(exc)
                stop.set()  # the others stop at once, not at their next chunk
                raise

        def _fetch(index: int, body: Body | None) -> None:
            seg = plan[index]
            budget = AttemptBudget(s.retry, s.rng)
            while True:
                with lock:  # a split may lower ``end`` at any time
                    start, end, done = seg
                if start + done > end:
                    if body is not None:
                        _quietly(body.close)
                    return
                if stop.is_set():
                    if body is not None:
                        _quietly(body.close)
                    raise DownloadAborted("stopped because another segment failed")
                before = done
                handle = None
                try:
                    if body is None:
                        body = self._open(start + done, end, validator, stop)
                        problem = self._range_problem(body, start + done, end, total, validator)
                        if problem is not None:
                            raise self._failure(
                                RemoteChangedError, f"{problem} while it was downloaded in pieces"
                            )
                    handle = stop.add_callback(_interrupter(body))
                    self._stream_segment(body, seg, end, lock, stop)
                    body = None
                except BaseException as exc:
                    if body is not None:
                        _quietly(body.close)
                    body = None
                    if stop.is_set() or self._stopped():
                        raise
                    retryable, retry_after = self._classify(exc)
                    if isinstance(exc, (RemoteChangedError, OverlongBodyError)) or not retryable:
                        raise
                    delay = budget.delay(exc, retry_after, progress=seg[2] > before)
                    if delay is None:
                        _give_up(exc, budget.attempts)
                    log.debug(
                        "retry %d of a segment of %s in %.2fs: %s",
                        budget.attempts - 1,
                        s.remote.display,
                        delay,
                        exc,
                    )
                    if stop.pause(delay):
                        raise DownloadAborted("stopped because another segment failed") from exc
                finally:
                    if handle is not None:
                        stop.remove_callback(handle)

        cap = max(1, s.segments)
        shared = s.budget
        pool = ThreadPoolExecutor(max_workers=cap, thread_name_prefix="dlutils-seg")
        futures: list[Any] = []
        active: dict[Any, int] = {}
        # Ranges not started yet (a resumed plan may hold more than can run at once).
        queue = [i for i, (start, end, done) in enumerate(plan) if start + done <= end]
        # Connections this object may use now: its own, and those taken from the budget.
        slots = [1]

        def start(index: int, body: Body | None = None) -> None:
            future = pool.submit(fetch, index, body)
            active[future] = index
            futures.append(future)
            self.segments_used = max(self.segments_used, len(active))

        def one_more() -> bool:
            """Whether one more range may run now, taking a slot of the budget if needed."""
            if len(active) >= cap:
                return False
            if len(active) < slots[0]:
                return True
            if shared is not None and not shared.try_acquire():
                return False
            slots[0] += 1
            return True

        def split_largest() -> int | None:
            """Split the running range with the most bytes left; the new range's index."""
            with lock:
                best, most = None, 0
                for index in active.values():
                    seg = plan[index]
                    left = seg[1] + 1 - (seg[0] + seg[2])
                    if left > most:
                        best, most = seg, left
                # Both halves hold more than a chunk: the chunk the running fetch is
                # reading now ends below the new range.
                if best is None or most < max(SPLIT_MIN, 2 * CHUNK_SIZE + 4):
                    return None
                middle = best[0] + best[2] + most // 2
                plan.append([middle, best[1], 0])
                best[1] = middle - 1
                return len(plan) - 1

        def add(count: int) -> None:
            for _ in range(count):
                if queue:
                    if not one_more():
                        return
                    start(queue.pop(0))
                    continue
                if not one_more():
                    return
                index = split_largest()
                if index is None:
                    return
                start(index)

        def give_back() -> None:
            while slots[0] > max(1, len(active)):
                slots[0] -= 1
                if shared is not None:
                    shared.release()

        self.segments_used = 0
        measured_at, measured = s.clock(), self.received
        grown_at_rate = 0.0
        try:
            if first is not None and queue and queue[0] == 0:
                start(queue.pop(0), first)
            first = None
            add(len(queue))
            while active:
                finished, _ = wait(list(active), timeout=GROW_INTERVAL, return_when=FIRST_COMPLETED)
                if any(f.exception() is not None for f in finished):
                    break
                for future in finished:
                    del active[future]
                # A connection whose range is done takes a waiting range, or half of the
                # straggler's.
                add(max(0, slots[0] - len(active)))
                now = s.clock()
                if now - measured_at >= GROW_INTERVAL:
                    rate = (self.received - measured) / (now - measured_at)
                    measured_at, measured = now, self.received
                    if rate > grown_at_rate * GROW_GAIN and active:
                        grown_at_rate = rate
                        add(len(active))
                give_back()
                record()
            # A range failed (or the download was stopped): the others end at once.
            stop.set()
            while not all(f.done() for f in futures):
                wait(futures, timeout=JOURNAL_INTERVAL)
                record()
        except BaseException:
            # ^C (or SystemExit) in this thread: stop every range now, keep what arrived.
            stop.set()
            if first is not None:
                _quietly(first.close)
            pool.shutdown(wait=False, cancel_futures=True)
            wait(futures, timeout=_STOP_GRACE)  # interrupted ranges end in milliseconds
            self.lingering = [f for f in futures if not f.done()]
            record(force=True)
            raise
        finally:
            pool.shutdown(wait=False)
            active.clear()
            give_back()
            if link is not None:
                s.abort.remove_callback(link)
        self.segments_used = max(1, self.segments_used)
        error: BaseException | None = causes[0] if causes else None
        for future in futures:
            exc = future.exception()
            # The first real cause wins over the "stopped" errors it provoked elsewhere.
            if exc is not None and (error is None or isinstance(error, DownloadAborted)):
                error = exc
        if error is not None:
            if isinstance(error, (RemoteChangedError, OverlongBodyError)):
                self._truncate()
            else:
                record(force=True)
            raise error
        record(force=True)
        return total

    def _stream_segment(
        self,
        body: Body,
        seg: list[int],
        asked: int,
        lock: threading.Lock,
        stop: threading.Event,
    ) -> None:
        """Write ``body`` into the range ``seg`` until the range is done.

        ``asked`` is the last byte the request asked for; a split may lower ``seg[1]``
        below it meanwhile, and the body is then closed where the range now ends.
        """
        s = self.s
        start = seg[0]
        ranged = body.status == 206 and body.end == asked  # this body must end with the range
        handle = self._watch(body)
        try:
            while True:
                self._check_abort()
                if stop.is_set():
                    raise DownloadAborted("stopped because another segment failed")
                with lock:
                    end, position = seg[1], start + seg[2]
                exact = ranged and end == asked  # not split: the body ends here too
                remaining = end + 1 - position
                if remaining <= 0:
                    # A range answer must end with its range; the first answer (status
                    # 200, the whole object) only lends its first segment's bytes.
                    if exact and body.length is None and body.read(1):
                        raise self._failure(
                            OverlongBodyError,
                            f"sent more than the bytes {start}-{end} of its range",
                            received=end + 2,
                            expected=end + 1,
                        )
                    return
                # One byte more than the range holds is asked, so a longer body shows.
                data = body.read(min(CHUNK_SIZE, remaining + 1 if exact else remaining))
                if not data:
                    raise IncompleteDownloadError(
                        f"{s.remote.display} ended a range at byte {position} of {end + 1}",
                        received=position,
                        expected=end + 1,
                    )
                if len(data) > remaining:
                    if exact:
                        raise self._failure(
                            OverlongBodyError,
                            f"sent more than the bytes {start}-{end} of its range",
                            received=position + len(data),
                            expected=end + 1,
                        )
                    data = data[:remaining]
                if s.limiter is not None:
                    s.limiter.acquire(len(data), abort=s.abort)
                self._write(data, position)
                with lock:
                    seg[2] += len(data)
                    self.received += len(data)
                s.progress.update(len(data))
        finally:
            self._unwatch(handle)
            _quietly(body.close)

    # -- placing the file ---------------------------------------------------------

    def _finish(self, total: int | None) -> TransferResult:
        s = self.s
        size = os.fstat(self.fd).st_size
        if total is not None and size != total:
            raise IncompleteDownloadError(
                f"{s.part!r} holds {size} bytes, {total} expected", received=size, expected=total
            )
        self._check_size(size)
        if s.checksum is not None:
            if self.hasher is None or self.hashed != size:
                self.hasher = new_hasher(s.checksum.algorithm)
                self.hashed = 0
                self._hash_file(0, size)
            actual = self.hasher.hexdigest()
            if actual != s.checksum.hexdigest:
                self._truncate()
                _quietly(lambda: os.unlink(s.part))
                raise ChecksumMismatchError(
                    f"{s.remote.display} does not have the expected {s.checksum.algorithm}: "
                    f"expected {s.checksum.hexdigest}, got {actual}; the file was not kept. "
                    "Check the checksum, or whether the server now holds another version.",
                    algorithm=s.checksum.algorithm,
                    expected=s.checksum.hexdigest,
                    actual=actual,
                )
        if s.fsync:
            os.fsync(self.fd)
        _check_still_ours(s.part, self.fd, s.path)
        os.replace(s.part, s.path)
        return TransferResult(
            path=s.path,
            size=size,
            received=self.received,
            resumed_from=self.resumed_from,
            segments=self.segments_used,
            validator=self.validator,
            headers=self.headers or {},
            checksum=s.checksum,
        )
