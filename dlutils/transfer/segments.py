"""Segmented downloads: ranges fetched in parallel, grown while throughput rises, resumed from
their recorded plan."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from ..control import AbortEvent
from ..errors import (
    DownloadAborted,
    IncompleteDownloadError,
    OverlongBodyError,
    RemoteChangedError,
)
from ..retry import AttemptBudget
from .protocols import (
    Body,
)
from .retries import _give_up, _interrupter, _quietly

log = logging.getLogger("dlutils")


class _Segments:
    """The segmented side of :class:`~dlutils.transfer.engine._Transfer`."""

    def _plan(self, total: int) -> list[list[int]]:
        smallest = max(1, min(self.s.tunables.min_segment_size, self.s.segment_threshold // 2))
        count = max(1, min(self.s.tunables.initial_segments, self.s.segments, total // smallest))
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
        ``tunables.journal_interval`` and whenever the download stops, never claims bytes the
        file lacks after a crash of the process (SIGKILL, ^C). It may after a power
        loss, unless ``fsync=True``: then the ``.part`` is flushed before each record.

        The download starts with the ranges of the plan and grows: every
        ``tunables.grow_interval``, while the throughput rose by ``tunables.grow_gain`` since the
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
            if force or now - last_record[0] >= self.s.tunables.journal_interval:
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
                        with lock:
                            began[index] = (time.monotonic(), seg[2])
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

        def rate_of(index: int, now: float) -> float | None:
            """Bytes per second of range ``index`` since its request answered (hold the lock)."""
            since, done_then = began.get(index, (None, 0))
            got = plan[index][2] - done_then
            if since is None or got <= 0 or now <= since:
                return None
            return got / (now - since)

        def split_largest() -> int | None:
            """Split the running range with the most bytes left; the new range's index."""
            with lock:
                if self.latency is None and any(i not in began for i in active.values()):
                    return None  # how long a request takes is known when this one answers
                best, most, best_index = None, 0, -1
                for index in active.values():
                    if self.latency and index not in began:
                        continue  # not answered yet: a new request would wait as long
                    seg = plan[index]
                    left = seg[1] + 1 - (seg[0] + seg[2])
                    if left > most:
                        best, most, best_index = seg, left, index
                # Both halves hold more than a chunk: the chunk the running fetch is
                # reading now ends below the new range.
                if best is None or most < max(
                    self.s.tunables.split_min, 2 * self.s.tunables.chunk_size + 4
                ):
                    return None
                # A new request pays only if the half it takes would still need more than
                # two of its waits for headers at the range's pace: on a server slow to
                # answer each request (or one that reads the whole object for each range),
                # splitting costs more than it saves.
                if self.latency:
                    now = time.monotonic()
                    rate = rate_of(best_index, now)
                    if rate is None:  # no pace yet: split only a range silent for long
                        if now - began[best_index][0] < 4 * self.latency:
                            return None
                    elif most < 4 * self.latency * rate:
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
        # index -> (when its request answered, its bytes done then): each range's pace.
        began: dict[int, tuple[float, int]] = {}
        measured_at, measured = s.clock(), self.received
        grown_at_rate = 0.0
        try:
            if first is not None and queue and queue[0] == 0:
                began[0] = (time.monotonic(), plan[0][2])
                start(queue.pop(0), first)
            first = None
            add(len(queue))
            while active:
                finished, _ = wait(
                    list(active), timeout=self.s.tunables.grow_interval, return_when=FIRST_COMPLETED
                )
                if any(f.exception() is not None for f in finished):
                    break
                for future in finished:
                    del active[future]
                # A connection whose range is done takes a waiting range, or half of the
                # straggler's.
                add(max(0, slots[0] - len(active)))
                now = s.clock()
                if now - measured_at >= self.s.tunables.grow_interval:
                    rate = (self.received - measured) / (now - measured_at)
                    measured_at, measured = now, self.received
                    if rate > grown_at_rate * self.s.tunables.grow_gain and active:
                        grown_at_rate = rate
                        add(len(active))
                give_back()
                record()
            # A range failed (or the download was stopped): the others end at once.
            stop.set()
            while not all(f.done() for f in futures):
                wait(futures, timeout=self.s.tunables.journal_interval)
                record()
        except BaseException:
            # ^C (or SystemExit) in this thread: stop every range now, keep what arrived.
            stop.set()
            if first is not None:
                _quietly(first.close)
            pool.shutdown(wait=False, cancel_futures=True)
            wait(
                futures, timeout=self.s.tunables.stop_grace
            )  # interrupted ranges end in milliseconds
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
                data = body.read(
                    min(self.s.tunables.chunk_size, remaining + 1 if exact else remaining)
                )
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
