"""A job's state and its status snapshot, in the AIStore downloader's terms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = ["State", "TaskInfo", "JobStatus"]


class State(str, Enum):
    """The life of a job: pending, running, then finished or aborted."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(frozen=True)
class TaskInfo:
    """One object of a job: its name and how many of its bytes are here."""

    name: str
    downloaded: int = 0
    total: int | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job, with the AIStore downloader's counters.

    ``finished`` counts the objects done, skipped ones included (as in the
    reference); ``errors`` the objects that failed; ``scheduled`` the ones handed
    to the executor so far; ``total`` is ``None`` while unknown.
    """

    id: str
    description: str
    state: State
    total: int | None
    scheduled: int
    finished: int
    skipped: int
    errors: int
    bytes: int
    started_time: datetime | None
    finished_time: datetime | None
    all_dispatched: bool
    current_tasks: tuple[TaskInfo, ...] = ()
    finished_tasks: tuple[TaskInfo, ...] = ()
    download_errors: tuple[tuple[str, str], ...] = ()
    #: Local files removed by a synchronising backend job (counted in ``finished`` too).
    deleted: int = 0

    @property
    def pending(self) -> int:
        """Objects not yet finished or failed."""
        total = self.total if self.total is not None else self.scheduled
        return max(0, total - self.finished - self.errors)

    @property
    def done(self) -> bool:
        """True once the job is finished or aborted."""
        return self.state in (State.FINISHED, State.ABORTED)

    @property
    def aborted(self) -> bool:
        return self.state is State.ABORTED

    def to_dict(self) -> dict[str, Any]:
        """The status in the AIStore downloader's JSON field names."""

        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        def task(t: TaskInfo) -> dict[str, Any]:
            return {"name": t.name, "downloaded": t.downloaded, "total": t.total}

        return {
            "id": self.id,
            "description": self.description,
            "state": self.state.value,
            "started_time": when(self.started_time),
            "finished_time": when(self.finished_time),
            "finished_cnt": self.finished,
            "scheduled_cnt": self.scheduled,
            "skipped_cnt": self.skipped,
            "error_cnt": self.errors,
            "deleted_cnt": self.deleted,
            "total": self.total if self.total is not None else -1,
            "all_dispatched": self.all_dispatched,
            "aborted": self.aborted,
            "bytes": self.bytes,
            "current_tasks": [task(t) for t in self.current_tasks],
            "finished_tasks": [task(t) for t in self.finished_tasks],
            "download_errors": [{"name": n, "error": e} for n, e in self.download_errors],
        }
