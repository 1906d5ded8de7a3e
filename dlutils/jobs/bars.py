"""A job's progress bars: one of bytes for the job (files done as its postfix), and one of
its own for each big file; and :class:`_TaskProgress`, which counts one task's bytes into
the job's status and bars.

``_open_bar``, ``_bar_bytes`` and ``_close_bar`` are methods of :class:`~dlutils.Job`
(``self`` is the job), kept here with the rest of the bars.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..progress import Callback, TqdmCallback

if TYPE_CHECKING:
    from .runner import Job


#: Files at least this big get a progress bar of their own.
FILE_BAR_THRESHOLD = 16 << 20


def _open_bar(self) -> None:
    """One bar of bytes for the job (files done as its postfix): it moves during a large
    file. Its total grows as the objects' sizes become known."""
    from tqdm.auto import tqdm

    self._bar = tqdm(
        total=0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=self.id,
        dynamic_ncols=True,
    )


def _bar_bytes(self, expected: int = 0, received: int = 0) -> None:
    """``expected`` more bytes to come (negative: fewer than said), ``received`` came."""
    bar = self._bar
    if bar is None or not (expected or received):
        return
    with self._bar_lock:
        if expected:
            bar.total = max(bar.total + expected, bar.n + received)
        if received:
            bar.update(received)  # tqdm redraws at most every 0.1 s


def _close_bar(self) -> None:
    if self._bar is not None:
        with self._bar_lock:
            self._bar.total = self._bar.n  # what was not received will not come
            self._bar.close()


class _TaskProgress(Callback):
    """Counts one task's bytes and feeds them, for big files, to a bar of its own.

    The bytes go to the task's entry in the job's ``_current`` under a lock of this
    task only (the status adds the entries up); the job's lock is taken once, when the
    task closes and its bytes join the job's count. Bytes delivered after that (a late
    delivery of the throttled callback) go to the job's count directly.
    """

    def __init__(self, job: Job, entry: list[Any]):
        self.job = job
        self.entry = entry
        self.bar: TqdmCallback | None = None
        self.announced = 0  # bytes this task added to the job bar's total
        self.closed = False
        self._lock = threading.Lock()

    def set_size(self, size: int | None) -> None:
        expected = 0
        with self._lock:
            self.entry[2] = size
            if size is not None:  # a restart announces the size again: count it once
                expected = max(size, self.entry[1]) - self.announced
                self.announced += expected
        self.job._bar_bytes(expected=expected)
        if self.job._opts.progress and size and size >= FILE_BAR_THRESHOLD and self.bar is None:
            self.bar = TqdmCallback(self.entry[0], leave=False)
            self.bar.set_size(size)

    def update(self, nbytes: int) -> None:
        with self._lock:
            late = self.closed
            if not late:
                self.entry[1] += nbytes
                # more than announced (or nothing was): the total grows with what came
                expected = max(0, self.entry[1] - self.announced)
                self.announced += expected
        if late:
            with self.job._lock:
                self.job._bytes += nbytes
            expected = nbytes
        self.job._bar_bytes(expected=expected, received=nbytes)
        if self.bar is not None:
            self.bar.update(nbytes)

    def close(self) -> None:
        # resumed, skipped or failed: its share of the total is what it received
        with self._lock:
            self.closed = True
            expected, self.announced = self.entry[1] - self.announced, self.entry[1]
        job = self.job
        with job._lock:  # one step: the status counts these bytes once, before or after
            if job._current.get(self.entry[0]) is self.entry:
                del job._current[self.entry[0]]
            job._bytes += self.entry[1]
        job._bar_bytes(expected=expected)
        if self.bar is not None:
            self.bar.close()
