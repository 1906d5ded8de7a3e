"""The job store: download jobs kept in SQLite, so that they outlive the command that started them.

One file, ``jobs.sqlite``, in the user's state folder (``$DLUTILS_HOME``, else
``$XDG_STATE_HOME/dlutils``, else ``~/.local/state/dlutils``). Each job is one row: what
it downloads (credentials removed), its options (no secrets), the process running it
with a heartbeat, its state and counters, and an abort-request flag. Every text written
or read (description, source, errors, failure) goes through
:func:`~dlutils.names.redact_text`. Several workers and readers may use the store at
once: WAL journal, a busy timeout, and every write one short ``BEGIN IMMEDIATE``
transaction. The schema is versioned with ``user_version``.

Times that other processes compare (heartbeats) are wall-clock seconds; no deadline or
rate is computed from them. The store needs a local filesystem (SQLite's WAL needs
shared memory, which network filesystems rarely give).
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, BinaryIO

from .errors import DownloadError, InvalidInputError, JobNotFoundError, JobStateError
from .jobs.status import JobStatus, State, TaskInfo
from .names import redact_text as _redact_text
from .workfiles import check_database, confirm_database, open_working_file

__all__ = ["JobStore", "JobRecord", "state_home", "new_job_id", "HEARTBEAT_STALE"]

SCHEMA_VERSION = 1
#: A job whose worker has not reported for this many seconds is Interrupted.
HEARTBEAT_STALE = 10.0
#: Errors kept per job in the store (the error counter counts them all).
MAX_STORED_ERRORS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    source TEXT NOT NULL,
    dest TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    abort_requested INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    host TEXT,
    heartbeat REAL,
    created REAL NOT NULL,
    started_time TEXT,
    finished_time TEXT,
    total INTEGER,
    scheduled INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    all_dispatched INTEGER NOT NULL DEFAULT 0,
    current_tasks TEXT NOT NULL DEFAULT '[]',
    finished_tasks TEXT NOT NULL DEFAULT '[]',
    download_errors TEXT NOT NULL DEFAULT '[]',
    failure TEXT,
    failure_code INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_request ON jobs (source, dest)
"""

#: :func:`~dlutils.names.redact_text`, remembered: a job's errors are written again at each
#: report and read at each poll.
redact_text = functools.lru_cache(maxsize=4096)(_redact_text)

_RESET = dict(
    total=None, scheduled=0, finished=0, skipped=0, errors=0, deleted=0, bytes=0,
    all_dispatched=0, current_tasks="[]", finished_tasks="[]", download_errors="[]",
    started_time=None, finished_time=None, failure=None, failure_code=None, abort_requested=0,
)  # fmt: skip


def state_home() -> str:
    """The folder of the job store: ``$DLUTILS_HOME``, else ``$XDG_STATE_HOME/dlutils``.

    Without either, ``~/.local/state/dlutils`` (the XDG default).
    """
    if os.environ.get("DLUTILS_HOME"):
        return os.path.abspath(os.environ["DLUTILS_HOME"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
    return os.path.join(os.path.abspath(os.path.expanduser(base)), "dlutils")


def new_job_id() -> str:
    """A fresh job id, in the form :class:`~dlutils.Job` uses (``dnl-`` and 10 hex digits)."""
    return "dnl-" + secrets.token_hex(5)


def _alive(pid: int | None, host: str | None) -> bool:
    """Whether process ``pid`` still runs; ``True`` when it cannot be told (another host)."""
    if pid is None or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _utc_text(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).isoformat()


def _tasks(text: str) -> tuple[TaskInfo, ...]:
    return tuple(TaskInfo(t["name"], t["downloaded"], t["total"]) for t in json.loads(text))


@dataclass(frozen=True)
class JobRecord:
    """One job as the store knows it, read at one moment.

    ``interrupted`` is decided when the row is read: the job is pending or running,
    but its worker process is gone or has not reported for :data:`HEARTBEAT_STALE`
    seconds. ``failure`` says why a job could not start at all.
    """

    id: str
    description: str
    source: str
    dest: str
    options: dict[str, Any]
    state: State
    abort_requested: bool
    pid: int | None
    host: str | None
    heartbeat: float | None
    created: float
    status: JobStatus
    failure: str | None = None
    failure_code: int | None = None
    interrupted: bool = field(default=False)

    @property
    def done(self) -> bool:
        """True once the job is finished or aborted (an interrupted job is not done)."""
        return self.state in (State.FINISHED, State.ABORTED)

    @property
    def active(self) -> bool:
        """True while a live worker runs (or is about to run) the job."""
        return not self.done and not self.interrupted

    def label(self) -> str:
        """The STATUS column: ``Finished``, ``Aborted``, ``Interrupted`` or ``N pending``."""
        if self.interrupted:
            return "Interrupted"
        if self.state is State.ABORTED:
            return "Aborted"
        if self.state is State.FINISHED:
            return "Finished"
        return f"{self.status.pending} pending"

    def to_dict(self) -> dict[str, Any]:
        """:meth:`JobStatus.to_dict` plus where, how, by which process, and the label."""
        out = self.status.to_dict()
        out.update(
            status=self.label(),
            interrupted=self.interrupted,
            source=self.source,
            dest=self.dest,
            options=self.options,
            pid=self.pid,
            failure=self.failure,
        )
        return out


class JobStore:
    """The persistent list of download jobs, shared by every ``dlutils`` process of a user.

    Parameters
    ----------
    home : str, optional
        The state folder; :func:`state_home` when not given. Created (mode 0700) if absent.
    timeout : float
        Seconds to wait for another process's write before giving up.
    clock : callable
        Wall-clock seconds, for heartbeats (tests pass a fake).

    Examples
    --------
    >>> import tempfile
    >>> from dlutils.jobstore import JobStore
    >>> with tempfile.TemporaryDirectory() as home:
    ...     store = JobStore(home)
    ...     job_id, resumed = store.claim("https://h/a.bin -> /data", "https://h/a.bin", "/data")
    ...     record = store.get(job_id)
    ...     print(record.state.value, record.label(), resumed)
    ...     store.close()
    pending 0 pending False
    """

    FILENAME = "jobs.sqlite"

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
        self.home = os.fspath(home) if home is not None else state_home()
        self.path = os.path.join(self.home, self.FILENAME)
        self.clock = clock
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        self._conn = self._open(timeout)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:  # e.g. a network filesystem: the default journal
            pass
        try:
            check_database(self.path, what="job store")  # the -wal and -shm now exist
        except BaseException:
            self._conn.close()
            raise
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DownloadError(
                    f"job store {self.path!r} has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this dlutils reads: upgrade dlutils, or set DLUTILS_HOME "
                    "to another folder"
                )
            for statement in _SCHEMA.split(";"):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._conn.row_factory = sqlite3.Row

    def _open(self, timeout: float) -> sqlite3.Connection:
        """Connect, never through a link planted at the store or its journals.

        SQLite follows links, so the files are checked before and after it opens them.
        """
        before = check_database(self.path, what="job store")
        if before is None:  # created here, not by SQLite: O_NOFOLLOW, and private
            os.close(open_working_file(self.path, os.O_RDWR | os.O_CREAT, 0o600, what="job store"))
            before = check_database(self.path, what="job store")
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            confirm_database(self.path, before, what="job store")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log_path(self, job_id: str) -> str:
        """Where the worker of ``job_id`` writes its log."""
        return os.path.join(self.home, "logs", f"{job_id}.log")

    def open_log(self, job_id: str) -> BinaryIO:
        """The log of ``job_id``'s worker, opened to append, never through a link."""
        path = self.log_path(job_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        return os.fdopen(open_working_file(path, flags, 0o600, what="job log"), "ab")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _update(
        self, conn: sqlite3.Connection, job_id: str, *, owner: int | None = None, **values: Any
    ) -> bool:
        """Set ``values`` in the row; with ``owner``, only while that pid owns the row."""
        assignments = ", ".join(f"{name} = ?" for name in values)
        sql, params = f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id)
        if owner is not None:
            sql, params = sql + " AND pid = ?", (*params, owner)
        return conn.execute(sql, params).rowcount > 0

    def _owned_update(self, job_id: str, owner: int, **values: Any) -> bool:
        """Update the row of a worker; the abort flag, or True when the row is not its own."""
        with self._transaction() as conn:
            if not self._update(conn, job_id, owner=owner, heartbeat=self.clock(), **values):
                return True  # removed, or taken over by a rerun: this worker must stop
            row = conn.execute("SELECT abort_requested FROM jobs WHERE id = ?", (job_id,))
            return bool(row.fetchone()[0])

    # -- reading

    def _record(self, row: sqlite3.Row, now: float) -> JobRecord:
        state = State(row["state"])
        record = JobRecord(
            id=row["id"],
            description=redact_text(row["description"]),  # a row from before redaction too
            source=redact_text(row["source"]),
            dest=row["dest"],
            options=json.loads(row["options"]),
            state=state,
            abort_requested=bool(row["abort_requested"]),
            pid=row["pid"],
            host=row["host"],
            heartbeat=row["heartbeat"],
            created=row["created"],
            failure=redact_text(row["failure"]) if row["failure"] else row["failure"],
            failure_code=row["failure_code"],
            status=JobStatus(
                id=row["id"],
                description=redact_text(row["description"]),
                state=state,
                total=row["total"],
                scheduled=row["scheduled"],
                finished=row["finished"],
                skipped=row["skipped"],
                errors=row["errors"],
                bytes=row["bytes"],
                started_time=_when(row["started_time"]),
                finished_time=_when(row["finished_time"]),
                all_dispatched=bool(row["all_dispatched"]),
                current_tasks=_tasks(row["current_tasks"]),
                finished_tasks=_tasks(row["finished_tasks"]),
                download_errors=tuple(
                    (e["name"], redact_text(e["error"])) for e in json.loads(row["download_errors"])
                ),
                deleted=row["deleted"],
            ),
        )
        if state in (State.PENDING, State.RUNNING):
            stale = (row["heartbeat"] or row["created"]) < now - HEARTBEAT_STALE
            if stale or not _alive(row["pid"], row["host"]):
                record = replace(record, interrupted=True)
        return record

    def _rows(self, where: str = "", params: tuple = ()) -> list[JobRecord]:
        rows = self._conn.execute(f"SELECT * FROM jobs {where}", params).fetchall()
        now = self.clock()
        return [self._record(row, now) for row in rows]

    def get(self, job_id: str) -> JobRecord:
        """The job ``job_id``; :class:`~dlutils.JobNotFoundError` when there is none."""
        found = self._rows("WHERE id = ?", (job_id,))
        if not found:
            raise JobNotFoundError(
                f"no download job {job_id!r}; `dlutils show download --all` lists the known ones"
            )
        return found[0]

    def list(self, regex: str | None = None, *, active_only: bool = False) -> list[JobRecord]:
        """Jobs, unfinished first (oldest first), then finished ones (earliest finish first).

        Parameters
        ----------
        regex : str, optional
            Keep jobs whose description contains a match (``re.search``).
        active_only : bool
            Keep jobs not yet finished or aborted (interrupted ones included).
        """
        try:
            pattern = re.compile(regex) if regex is not None else None
        except re.error as exc:
            raise InvalidInputError(f"regex {regex!r} is not valid: {exc}") from exc
        jobs = self._rows()
        if pattern is not None:
            jobs = [job for job in jobs if pattern.search(job.description)]
        if active_only:
            jobs = [job for job in jobs if not job.done]
        return sorted(
            jobs,
            key=lambda j: (j.done, (j.status.finished_time or datetime.min).isoformat(), j.created),
        )

    # -- writing

    def claim(
        self,
        description: str,
        source: str,
        dest: str,
        options: dict[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """Record a new pending job, or take over an interrupted one of the same request.

        The same request is the same ``source``, ``dest`` and ``options``. A matching job
        still running is refused, so two workers never write the same files. Returns the
        job id and whether an interrupted job was taken over (its counters start again).

        Raises
        ------
        JobStateError
            A live job already runs this request.
        """
        description, source = redact_text(description), redact_text(source)
        options_json = redact_text(json.dumps(options or {}, sort_keys=True))
        now = self.clock()
        with self._transaction():
            same = self._rows(
                "WHERE source = ? AND dest = ? AND options = ? AND state IN (?, ?) "
                "ORDER BY created",
                (source, dest, options_json, State.PENDING.value, State.RUNNING.value),
            )
            for job in same:
                if job.active:
                    raise JobStateError(
                        f"job {job.id} is already downloading this into {dest!r}: wait for it "
                        f"(dlutils wait download {job.id}) or stop it first"
                    )
            fresh = dict(_RESET, description=description, state=State.PENDING.value)
            fresh.update(pid=None, host=None, heartbeat=now, created=now)
            if same:
                job_id = same[0].id
                self._update(self._conn, job_id, **fresh)
                return job_id, True
            job_id = new_job_id()
            fresh.update(id=job_id, source=source, dest=dest, options=options_json)
            names = ", ".join(fresh)
            marks = ", ".join("?" for _ in fresh)
            self._conn.execute(
                f"INSERT INTO jobs ({names}) VALUES ({marks})", tuple(fresh.values())
            )
            return job_id, False

    def attach(self, job_id: str, pid: int) -> bool:
        """Make process ``pid`` the worker of ``job_id``; returns the abort-request flag."""
        with self._transaction() as conn:
            self._update(conn, job_id, pid=pid, host=socket.gethostname(), heartbeat=self.clock())
            row = conn.execute("SELECT abort_requested FROM jobs WHERE id = ?", (job_id,))
            return bool((row.fetchone() or (1,))[0])

    def beat(self, job_id: str, pid: int) -> bool:
        """Tell that worker ``pid`` of ``job_id`` is alive; returns the abort-request flag.

        True as well when the job is no longer this worker's (removed, or taken over).
        """
        return self._owned_update(job_id, pid)

    def save_status(self, job_id: str, status: JobStatus, pid: int) -> bool:
        """Copy the status of the job worker ``pid`` runs into its row, as :meth:`beat` does."""

        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        def tasks(items: tuple[TaskInfo, ...]) -> str:
            return json.dumps([{"name": t.name, "downloaded": t.downloaded, "total": t.total}
                               for t in items])  # fmt: skip

        errors = [
            {"name": n, "error": redact_text(e)}
            for n, e in status.download_errors[:MAX_STORED_ERRORS]
        ]
        return self._owned_update(
            job_id,
            pid,
            state=status.state.value,
            started_time=when(status.started_time),
            finished_time=when(status.finished_time),
            total=status.total,
            scheduled=status.scheduled,
            finished=status.finished,
            skipped=status.skipped,
            errors=status.errors,
            deleted=status.deleted,
            bytes=status.bytes,
            all_dispatched=int(status.all_dispatched),
            current_tasks=tasks(status.current_tasks),
            finished_tasks=tasks(status.finished_tasks),
            download_errors=json.dumps(errors),
        )

    def fail(self, job_id: str, message: str, code: int = 1) -> None:
        """Record that ``job_id`` could not start: ``message``, and the exit code it means."""
        now = _utc_text(self.clock())
        with self._transaction() as conn:
            self._update(
                conn,
                job_id,
                state=State.ABORTED.value,
                failure=redact_text(message),
                failure_code=code,
                finished_time=now,
                heartbeat=self.clock(),
            )

    def request_abort(self, job_id: str) -> JobRecord:
        """Ask the worker of ``job_id`` to abort; an interrupted job is marked aborted here.

        Returns the job as it was before the request. A finished job is left as it is.
        """
        with self._transaction() as conn:
            job = self.get(job_id)
            if job.interrupted:
                now = _utc_text(self.clock())
                self._update(conn, job_id, state=State.ABORTED.value, finished_time=now,
                             current_tasks="[]", abort_requested=1)  # fmt: skip
            elif not job.done:
                self._update(conn, job_id, abort_requested=1)
        return job

    def remove(self, job_id: str) -> JobRecord:
        """Forget a finished, aborted or interrupted job, and its log.

        Raises
        ------
        JobStateError
            The job is still running.
        """
        with self._transaction() as conn:
            job = self.get(job_id)
            if job.active:
                raise JobStateError(
                    f"job {job_id} is {job.label()} (running): stop it (dlutils stop download "
                    f"{job_id}) or wait for it before removing it"
                )
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        try:
            os.unlink(self.log_path(job_id))
        except FileNotFoundError:
            pass
        return job
