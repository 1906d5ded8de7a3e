"""The engine's tunables: chunk size, segment sizes, growth and journal rhythm, in one object.

Every transfer reads :func:`current` once, when it starts, and uses that
:class:`Tunables` throughout. Tests and benchmarks change them with :func:`tuned`
(process-wide, restored on exit) instead of patching module globals; the module
constants of :mod:`dlutils.transfer` (``CHUNK_SIZE``, ``MIN_SEGMENT_SIZE``...) are the
defaults.

Examples
--------
>>> from dlutils.transfer import tunables
>>> with tunables.tuned(min_segment_size=64 * 1024):
...     tunables.current().min_segment_size
65536
>>> tunables.current().min_segment_size == tunables.Tunables().min_segment_size
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Tunables", "current", "tuned"]


@dataclass(frozen=True)
class Tunables:
    """How the engine reads, splits, grows and records; the defaults suit real links.

    Examples
    --------
    >>> from dlutils.transfer import Tunables
    >>> Tunables().initial_segments, Tunables(split_min=8 << 20).split_min
    (8, 8388608)
    """

    #: Bytes asked for per read: large enough that Python's per-chunk cost is negligible,
    #: small enough that 32 ranges in flight stay within the memory target (1 MiB: ~20 MB
    #: more at the peak of a 1 GiB download, for no speed measured).
    chunk_size: int = 512 << 10
    #: No segment of the first plan is smaller than this.
    min_segment_size: int = 16 << 20
    #: Ranges a segmented download starts with; it adds more while its throughput rises.
    initial_segments: int = 8
    #: A range is split in two (to grow, or to help a straggler) only with this much left.
    split_min: int = 4 << 20
    #: How often a segmented download measures its throughput to decide whether to grow.
    grow_interval: float = 0.1
    #: Throughput must have risen by this factor since the last growth to grow again.
    grow_gain: float = 1.10
    #: How often a segmented download records its progress for resume.
    journal_interval: float = 1.0
    #: Restarts from zero one object may take because an answer did not hold together (a
    #: range of another version, a contradictory Content-Range, a body longer than
    #: announced); the next such answer ends its download with an error instead of looping.
    max_restarts: int = 1
    #: Seconds an interrupted segmented download waits for its threads before it returns.
    stop_grace: float = 2.0


_DEFAULT = Tunables()
_lock = threading.Lock()
_now = _DEFAULT


def current() -> Tunables:
    """The tunables a transfer starting now uses."""
    return _now


@contextlib.contextmanager
def tuned(**changes: Any) -> Iterator[Tunables]:
    """Use :class:`Tunables` with ``changes`` for every transfer started inside the block.

    Process-wide (a job's worker threads see it too); the previous values come back on
    exit. An unknown name raises :class:`TypeError`.

    Examples
    --------
    >>> from dlutils import transfer
    >>> with transfer.tuned(chunk_size=64 * 1024) as now:
    ...     now.chunk_size, transfer.tunables.current().chunk_size
    (65536, 65536)
    >>> transfer.tunables.current().chunk_size == transfer.Tunables().chunk_size
    True
    """
    global _now
    with _lock:
        before = _now
        _now = dataclasses.replace(before, **changes)
    try:
        yield _now
    finally:
        with _lock:
            _now = before
