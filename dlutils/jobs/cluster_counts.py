"""What the client of a cluster job counts: the workers' reports and the batches' results.

Each object is counted once, by its place in its batch, whatever runs of the batch report
it (:class:`_Counting`); :class:`_Counts` is the part of
:class:`dlutils.jobs.cluster._ClusterRun` that does so, on the job's counters and under
its lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DownloadError
from .shared import _describe
from .status import TaskInfo
from .tasks import _Task

log = logging.getLogger("dlutils")


@dataclass
class _Counting:
    """The client's counts of one batch: which places were counted, bytes per run."""

    tasks: list[_Task]
    counted: set[int] = field(default_factory=set)
    received: dict[tuple[int, str], int] = field(default_factory=dict)  # (place, run) -> bytes
    #: One big object in range tasks: its runs are its ranges, and its progress their sum.
    split: bool = False
    #: place -> bytes counted for it over all its runs, never more than its size: a run
    #: lost with its worker and the run that finishes the object count its bytes once.
    credited: dict[int, int] = field(default_factory=dict)

    def credit(self, place: int, run: str, done: int, size: int | None) -> int:
        """The bytes to add to the job for a run's ``done`` so far (``size``: the cap)."""
        before = self.received.get((place, run), 0)
        if done <= before:
            return 0
        self.received[(place, run)] = done
        so_far = self.credited.get(place, 0)
        added = done - before
        if size is not None:
            added = max(0, min(added, size - so_far))
        self.credited[place] = so_far + added
        return added


class _Counts:
    """The counting of :class:`~dlutils.jobs.cluster._ClusterRun` (which sets these)."""

    job: Any
    batches: dict[int, _Counting]
    inflight: int
    cond: threading.Condition

    # -- reports from the workers (on the client's event loop)

    def on_event(self, event: Any) -> None:
        try:
            _, msg = event
            self._report(msg)
        except Exception:  # noqa: BLE001 - a bad report must not stop the client's loop
            log.exception("job %s: a report from a worker could not be read", self.job.id)

    def _report(self, msg: Mapping[str, Any]) -> None:
        job = self.job
        with job._lock:
            for index, place, run, name, done, total in msg.get("current", ()):
                counting = self.batches.get(index)
                if counting is None or place in counting.counted:
                    continue
                added = counting.credit(place, run, done, total)
                if added:
                    job._bytes += added
                    job._bar_bytes(expected=added, received=added)
                if counting.split:
                    done = counting.credited.get(place, 0)
                job._current[name] = [name, done, total]
            for index, place, run, name, skipped, size, received in msg.get("done", ()):
                counting = self.batches.get(index)
                if counting is not None:
                    self._count_done(counting, place, run, name, skipped, size, received)

    def _count_done(
        self,
        counting: _Counting,
        place: int,
        run: str,
        name: str,
        skipped: bool,
        size: Any,
        got: int,
    ) -> None:
        """Count one object placed (hold the job's lock); a second report of it is ignored."""
        job = self.job
        if place in counting.counted:
            return
        counting.counted.add(place)
        added = counting.credit(place, run, got, size if isinstance(size, int) else None)
        if added:
            job._bytes += added
            job._bar_bytes(expected=added, received=added)
        job._finished_cnt += 1
        job._skipped += bool(skipped)
        job._current.pop(name, None)
        job._recent.append(TaskInfo(name, size or 0, size))

    # -- batch results

    def batch_done(self, index: int, future: Any) -> None:
        try:
            outcome = None if future.cancelled() else future.exception()
            results = future.result() if outcome is None and not future.cancelled() else None
        except BaseException as exc:  # noqa: BLE001 - cancelled, or lost with its worker
            outcome, results = exc, None
        self._settle(index, results, outcome)

    def _settle(self, index: int, results: list[tuple] | None, outcome: Any) -> None:
        """Count a batch's results (``None``: it failed whole, with ``outcome``)."""
        job = self.job
        with job._lock:
            counting = self.batches.pop(index)
            for place, task in enumerate(counting.tasks):
                if place in counting.counted:
                    continue
                job._current.pop(task.name, None)
                if results is None:
                    if job._abort.is_set():
                        job._scheduled -= 1
                    else:
                        job._errors += 1
                        message = _describe(outcome or DownloadError("batch cancelled"), task.link)
                        job._download_errors.append((task.name, message))
                    continue
                kind, *rest = results[place]
                if kind == "done":
                    skipped, size, received, run = rest
                    self._count_done(counting, place, run, task.name, skipped, size, received)
                elif kind == "aborted":
                    job._scheduled -= 1
                else:
                    job._errors += 1
                    job._download_errors.append((task.name, rest[0]))
            self.inflight -= 1
            self.cond.notify_all()
