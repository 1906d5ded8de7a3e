"""One download in progress: :class:`_Transfer` runs the attempts, retries and restarts of
one object; its journal, write, single-stream and segmented sides live beside it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..control import AbortEvent, opening, timed_out
from ..errors import (
    DownloadAborted,
    DownloadError,
    DownloadTimeoutError,
    IncompleteDownloadError,
    OverlongBodyError,
    RemoteChangedError,
)
from ..retry import AttemptBudget
from .checks import (
    _Final,
    _FinalIncomplete,
    _FinalOverlong,
    _FinalRemoteChanged,
    _unasked_codings,
)
from .journal import _Journaled
from .parts import _Writes
from .protocols import (
    Body,
    TransferResult,
    _Settings,
)
from .retries import _give_up, _quietly
from .segments import _Segments
from .stream import _Stream

log = logging.getLogger("dlutils")


class _Transfer(_Journaled, _Writes, _Stream, _Segments):
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
        #: Seconds a request takes to its headers (a moving average; None: none measured):
        #: a range is split only when a new request pays for itself (see segments).
        self.latency: float | None = None

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

    def _failure(self, kind: type[DownloadError], problem: str, **kw: Any) -> DownloadError:
        """The error for an answer that does not hold together; the object restarts from zero.

        The first such answer for an object costs a restart; the next one is final.
        """
        with self._restart_lock:
            if self._failed_generation != self.generation:
                self._failed_generation = self.generation
                self.restarts += 1
            final = self.restarts > self.s.tunables.max_restarts
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
        began = time.monotonic()
        with opening(self.s.abort, stop):
            body = self.s.remote.open(start, end, if_range=if_range)
        took = time.monotonic() - began
        self.latency = took if self.latency is None else 0.7 * self.latency + 0.3 * took
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
