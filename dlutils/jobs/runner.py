"""The job: runs a request's tasks on an executor, counts, reports, honours limits and abort.

A :class:`Job` is thin: its request (:mod:`dlutils.jobs.tasks`) gives the tasks (one
link, one local path each); it runs them through :func:`dlutils.sources.fetch`, counts,
and reports. All transfer logic lives below it.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from ..budget import ConnectionBudget
from ..checksums import parse_checksum
from ..destinations import is_store, resolve
from ..errors import DownloadAborted, InvalidInputError, JobStateError
from ..limits import TokenBucket
from ..names import redact, redact_text
from ..options import Options, dask_client, runs_here
from ..sources import fetch
from ..transfer import MAX_SEGMENTS, AbortEvent, Fetched, TransferOptions
from ..transports import choose
from . import bars, constructors, elsewhere
from .bars import _TaskProgress
from .elsewhere import check_sendable, client_environment
from .folders import Folders
from .records import open_manifest
from .registry import given_id, register
from .shared import _describe, _raise_if_unusable, _task_extras, _transport_timeout
from .status import JobStatus, State, TaskInfo
from .tasks import Plan, _Task

__all__ = ["Job"]

log = logging.getLogger("dlutils")

#: Transfers a job runs at once when ``connections`` is not given.
DEFAULT_WORKERS = 8
#: Seconds ``wait()`` gives an aborted job to stop after a KeyboardInterrupt.
_STOP_WAIT = 2.0
#: How many finished tasks a status keeps (the counters cover all of them).
RECENT_TASKS = 32


class Job:
    """A download job: many objects, one id, status counters, limits, abort.

    Create one with :meth:`single`, :meth:`multi`, :meth:`range`, :meth:`backend`,
    :meth:`hf` or :meth:`from_request` (unstarted), or with :func:`dlutils.download`
    (started). Every constructor takes the job's options as ``options=``
    (:class:`dlutils.Options`, where each is documented) and/or as keywords of the same
    names (``connections=4, timeout="30s"``); they are checked once, here, and a wrong
    or unknown one raises :class:`~dlutils.InvalidInputError`.

    Examples
    --------
    >>> import tempfile
    >>> from dlutils import Job
    >>> from dlutils.localserver import LocalServer
    >>> files = {f"d/f{i}.bin": bytes([i]) * 100 for i in range(5)}
    >>> with LocalServer(files) as server, tempfile.TemporaryDirectory() as dest:
    ...     job = Job.range(server.url + "/d/f{0..4}.bin", dest).start()
    ...     status = job.wait(timeout=60)
    ...     print(status.state.value, status.finished, status.errors, status.bytes)
    finished 5 0 500
    """

    def __init__(self, plan: Plan, dest: str | os.PathLike, options: Options):
        dest = resolve(dest)
        #: An object-store destination (``s3://``, ``memory://``): no local manifest.
        self._store = is_store(dest)
        self._opts = options
        self._tasks = plan.tasks
        self._sync = plan.sync
        self._blob_threshold = plan.blob_threshold
        self.dest = os.fspath(dest)
        #: The client's folder when the job was made: a relative ``dest`` is resolved
        #: against it for tasks sent to other processes, whose folders differ.
        self._cwd = os.getcwd()
        self.id = given_id() or "dnl-" + secrets.token_hex(5)
        self.description = redact_text(
            self._opts.description or f"{redact(plan.source)} -> {self.dest or '.'}"
        )
        self._total = plan.total
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._done = threading.Event()
        self._abort = AbortEvent()
        self._state = State.PENDING
        self._started: float | None = None
        self._finished: float | None = None
        self._scheduled = self._finished_cnt = self._skipped = self._errors = self._bytes = 0
        self._deleted = 0
        self._inflight = 0
        self._all_dispatched = False
        self._current: dict[str, list[Any]] = {}
        #: Tasks sent to an executor of other processes, not done yet (abort cancels them).
        self._elsewhere: dict[Future, str] = {}
        self._recent: collections.deque[TaskInfo] = collections.deque(maxlen=RECENT_TASKS)
        self._download_errors: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._bar_lock = threading.Lock()
        #: The objects' folders, checked once each (see :mod:`dlutils.jobs.folders`).
        self._folders = Folders(self.dest or ".")

    # -- request types (see dlutils.jobs.constructors) ---------------------------

    single = classmethod(constructors.single)
    multi = classmethod(constructors.multi)
    range = classmethod(constructors.range)
    backend = classmethod(constructors.backend)
    hf = classmethod(constructors.hf)
    from_request = classmethod(constructors.from_request)

    # -- running -----------------------------------------------------------------

    def start(self) -> Job:
        """Start the job in the background and return it at once.

        An object-store ``dest`` that cannot be written (no such bucket, no answer) is
        refused here, before anything starts.
        """
        if self._store and self._state is State.PENDING:
            from ..stores.objects import check_reachable

            check_reachable(self.dest, self._opts.storage_options)
            if self.dest.startswith("memory:") and not runs_here(self._opts.executor):
                raise InvalidInputError(
                    f"dest {redact(self.dest)!r} is this process's memory: an executor of other "
                    "processes would write into its own; use an s3:// destination or threads"
                )
        with self._lock:
            if self._state is not State.PENDING:
                raise JobStateError(f"job {self.id} was already started ({self._state.value})")
            if not runs_here(self._opts.executor):  # what cannot travel, named before it starts
                sent = self._opts.transfer(make_session=False)
                check_sendable(
                    {**vars(sent), "session_factory": self._opts.session_factory},
                    self._opts.executor,
                )
                client = dask_client(self._opts.executor)
                if client is not None:  # workers, and the same dest on each, or refused
                    from .cluster_checks import check_cluster

                    local = None if self._store else os.path.join(self._cwd, self.dest or ".")
                    check_cluster(client, local, self.id)
            self._state = State.RUNNING
            self._started = time.time()
        log.info("job %s started: %s", self.id, self.description)
        register(self)
        self._thread = threading.Thread(target=self._run, name=f"dlutils-{self.id}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        opts = self._opts
        client = dask_client(opts.executor)
        if client is not None:  # batches on a Dask cluster: see dlutils.jobs.cluster
            from .cluster import run_on_cluster

            return run_on_cluster(self, client)
        own = opts.executor is None
        workers = opts.connections or DEFAULT_WORKERS
        executor = opts.executor or ThreadPoolExecutor(workers, thread_name_prefix=self.id)
        live = runs_here(opts.executor)
        window = threading.BoundedSemaphore(opts.connections or workers * 2)
        # another process has its own folder: it gets the path resolved here
        folder = (self.dest or ".") if live else os.path.join(self._cwd, self.dest or ".")
        # (a local folder's manifest reads a cluster job's records too, if it left some)
        manifest: Any = _NoManifest() if self._store else open_manifest(folder)
        settings = {} if live else client_environment()
        limiter = TokenBucket.per_hour(opts.bytes_per_hour) if opts.bytes_per_hour else None
        # One budget for the files and the ranges of big files: connections= is a hard cap.
        self._budget = ConnectionBudget(opts.connections) if opts.connections else None
        common = opts.transfer(make_session=live).replace(
            # Elsewhere (other processes) no budget reaches: one connection per object.
            **({"segments": 1} if opts.connections and not live and opts.segments is None else {}),
            timeout=_transport_timeout(opts.timeout),
            manifest=None if self._store else manifest,
        )
        big_lane: ThreadPoolExecutor | None = None
        big_common = common.replace(segments=max(2, opts.segments or MAX_SEGMENTS))
        if self._blob_threshold is not None:
            big_common = big_common.replace(segment_threshold=max(1, self._blob_threshold))
        if opts.progress:
            self._open_bar()
        lane: Any = None
        if live and own and limiter is None and not self._store and _lane_suits(opts, common):
            from .lane import Lane  # imports pycurl: only when it is the transport

            def handoff(task: _Task, retries: int | None, pause: float) -> None:
                # the engine's, on the job's threads: after the lane's failed attempt, with
                # the retries left and the pause before the next attempt
                given = common if retries is None else common.replace(retries=retries)
                future = executor.submit(self._execute, task, given, limiter, pause)
                future.add_done_callback(
                    lambda f, t=task: self._task_done(t, f, window, counted_bytes=True)
                )

            lane = Lane(
                self,
                slots=workers,
                common=common,
                window=window,
                handoff=handoff,
                checksum_of=lambda task: parse_checksum(task.checksum),
            )
        where = "<manifest>"
        try:
            manifest.check()  # a manifest planted as a link would write elsewhere: refuse the job
            where = "<listing>"
            for task in self._tasks():
                if task.big:  # one at a time, beside the pool: never in its window
                    if self._abort.is_set():
                        break
                    if big_lane is None:
                        big_lane = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-big")
                    future = big_lane.submit(self._execute, task, big_common, limiter)
                    with self._lock:
                        self._scheduled += 1
                        self._inflight += 1
                    future.add_done_callback(
                        lambda f, t=task: self._task_done(t, f, None, counted_bytes=True)
                    )
                    continue
                if not self._acquire(window):
                    break
                if lane is not None and lane.takes(task):
                    with self._lock:
                        self._scheduled += 1
                        self._inflight += 1
                    lane.put(task)
                    continue
                try:
                    if live:
                        future = executor.submit(self._execute, task, common, limiter)
                    else:
                        future = self._submit_elsewhere(executor, task, common, settings)
                except BaseException:
                    window.release()  # e.g. the caller shut its executor down
                    raise
                with self._lock:
                    self._scheduled += 1
                    self._inflight += 1
                future.add_done_callback(
                    lambda f, t=task: self._task_done(t, f, window, counted_bytes=live)
                )
            else:
                with self._lock:
                    self._all_dispatched = True
                    if self._total is None:  # a listing: known once it is complete
                        self._total = self._scheduled
        except Exception as exc:  # a request that fails while it is being expanded
            log.exception("job %s could not list its objects", self.id)
            with self._lock:
                self._errors += 1
                self._download_errors.append((where, _describe(exc, "")))
        finally:
            if lane is not None:
                lane.finish()
            with self._lock:
                while self._inflight:
                    self._idle.wait(0.5)
                complete = self._all_dispatched and not self._abort.is_set()
            if lane is not None:
                lane.join()
            if complete and self._sync is not None:
                try:
                    self._sync(self, manifest)
                except Exception as exc:
                    log.exception("job %s could not synchronise", self.id)
                    with self._lock:
                        self._errors += 1
                        self._download_errors.append(("<sync>", _describe(exc, "")))
            if own:
                executor.shutdown(wait=True)
            if big_lane is not None:
                big_lane.shutdown(wait=True)
            manifest.close()
            with self._lock:
                self._state = State.ABORTED if self._abort.is_set() else State.FINISHED
                self._finished = time.time()
            self._close_bar()
            self._log_end()
            self._done.set()

    def _log_end(self) -> None:
        s = self.status()
        took = (self._finished or 0.0) - (self._started or self._finished or 0.0)
        log.info(
            "job %s %s: %d done (%d skipped), %d errors, %d bytes in %.1f s: %s",
            self.id,
            s.state.value,
            s.finished,
            s.skipped,
            s.errors,
            s.bytes,
            took,
            self.description,
        )

    def _acquire(self, window: threading.BoundedSemaphore) -> bool:
        while not window.acquire(timeout=0.2):
            if self._abort.is_set():
                return False
        if self._abort.is_set():
            window.release()
            return False
        return True

    def _execute(
        self, task: _Task, common: TransferOptions, limiter: Any, pause: float = 0.0
    ) -> Fetched:
        if self._abort.is_set() or (pause and self._abort.wait(pause)):
            raise DownloadAborted("job aborted before this object started")
        _raise_if_unusable(task)
        if not self._store:
            self._folders.prepare(task.name, task.path)
        entry = [task.name, 0, task.size]
        with self._lock:
            self._current[task.name] = entry
        progress = _TaskProgress(self, entry)  # its bytes join the job's when it closes
        # The object's own event: the job's abort reaches it, and it times each attempt.
        abort = AbortEvent(self._abort, time_limit=self._opts.timeout)
        held = None
        try:
            budget = getattr(self, "_budget", None)
            held = budget.hold(abort) if budget is not None else None  # this worker's slot
            return fetch(
                task.link,
                task.path,
                common.replace(
                    **_task_extras(task), progress=progress, abort=abort, limiter=limiter
                ),
            )
        finally:
            if held is not None:
                held.close()
            abort.close()
            progress.close()

    def _task_done(
        self,
        task: _Task,
        future: Future,
        window: threading.BoundedSemaphore | None,
        counted_bytes: bool,
    ) -> None:
        if window is not None:
            window.release()
        with self._lock:
            if self._elsewhere.pop(future, None) is not None:
                self._current.pop(task.name, None)
            self._inflight -= 1
            exc = None if future.cancelled() else future.exception()
            if future.cancelled() or (isinstance(exc, DownloadAborted) and self._abort.is_set()):
                self._scheduled -= 1  # dropped by the abort, not failed
            elif exc is not None:
                self._errors += 1
                self._download_errors.append((task.name, _describe(exc, task.link)))
            else:
                fetched: Fetched = future.result()
                self._finished_cnt += 1
                self._skipped += fetched.skipped
                if not counted_bytes:  # run elsewhere: its bytes are known now
                    self._bytes += fetched.received
                    self._bar_bytes(expected=fetched.received, received=fetched.received)
                self._recent.append(TaskInfo(task.name, fetched.size or 0, fetched.size))
            self._idle.notify_all()
            done, errors, total = self._finished_cnt + self._errors, self._errors, self._total
        if self._bar is not None:
            files = f"{done}/{total if total is not None else '?'} files"
            with self._bar_lock:
                self._bar.set_postfix_str(f"{files}, {errors} errors", refresh=False)

    _open_bar = bars._open_bar
    _bar_bytes = bars._bar_bytes
    _close_bar = bars._close_bar

    _submit_elsewhere = elsewhere._submit_elsewhere

    def _record_deletion(self, name: str) -> None:
        with self._lock:
            self._deleted += 1
            self._finished_cnt += 1
            self._total = (self._total or 0) + 1
            self._recent.append(TaskInfo(name, 0, 0))

    # -- control and status ------------------------------------------------------

    def abort(self) -> None:
        """Stop: drop queued objects, stop running transfers (their ``.part`` files stay).

        Aborting a finished job changes nothing.
        """
        with self._lock:
            if self._state in (State.FINISHED, State.ABORTED):
                return
            if self._state is State.PENDING:
                self._state = State.ABORTED
                self._finished = time.time()
                self._abort.set()
                self._done.set()
                return
        self._abort.set()
        with self._lock:
            sent = list(self._elsewhere)
        if sent:  # another process's transfers: only those not started can be stopped
            for future in sent:
                future.cancel()  # its done callback drops it from the counts
            with self._lock:
                running = sum(not future.done() for future in self._elsewhere)
            if running:
                log.warning(
                    "job %s aborted: %d transfers already running on executor %s cannot be "
                    "stopped; they finish, are counted, and the job ends after them",
                    self.id,
                    running,
                    type(self._opts.executor).__name__,
                )

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job is finished or aborted and return its status.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass first (the job goes
        on). A ``KeyboardInterrupt`` (^C, or "interrupt the kernel" in a notebook)
        while waiting aborts the job: its transfers stop within about a second, their
        ``.part`` files kept for a later resume, and the ``KeyboardInterrupt`` is
        raised again. To leave a job running, wait with a ``timeout`` in a loop, or
        not at all.
        """
        if self._state is State.PENDING:
            raise JobStateError(f"job {self.id} was never started: call start() first")
        try:
            finished = self._done.wait(timeout)
        except KeyboardInterrupt:
            self.abort()
            stopped = self._done.wait(_STOP_WAIT)
            log.warning(
                "job %s %s after KeyboardInterrupt",
                self.id,
                "aborted" if stopped else "is being aborted",
            )
            raise
        if not finished:
            raise TimeoutError(f"job {self.id} is still running after {timeout} s")
        return self.status()

    def status(self) -> JobStatus:
        """A consistent snapshot of the job's counters and tasks."""
        with self._lock:
            # Each running task's entry read once (their bytes move without this lock):
            # the total and the tasks shown agree.
            current = [tuple(entry) for entry in self._current.values()]
            return JobStatus(
                id=self.id,
                description=self.description,
                state=self._state,
                total=self._total,
                scheduled=self._scheduled,
                finished=self._finished_cnt,
                skipped=self._skipped,
                errors=self._errors,
                bytes=self._bytes + sum(done for _, done, _ in current),
                started_time=_utc(self._started),
                finished_time=_utc(self._finished),
                all_dispatched=self._all_dispatched,
                current_tasks=tuple(TaskInfo(name, done, total) for name, done, total in current),
                finished_tasks=tuple(self._recent),
                download_errors=tuple(sorted(self._download_errors)),
                deleted=self._deleted,
            )

    @property
    def paths(self) -> list[str]:
        """The local path of every object of the job (derived again from the request)."""
        return [task.path for task in self._tasks() if task.path]

    def __repr__(self) -> str:
        status = self.status()
        return f"<Job {self.id} {status.state.value} {self.description!r}>"


def _lane_suits(opts: Options, common: TransferOptions) -> bool:
    """Whether a job's small http(s) objects may go through a :class:`Lane` (libcurl)."""
    if not _LANE:
        return False
    try:
        return choose(opts.transport, session=common.session) == "curl"
    except InvalidInputError:
        return False


#: Small http(s) objects of a job go through one libcurl multi handle (see dlutils.jobs.lane).
_LANE = True


class _NoManifest:
    """What a job into an object store keeps instead of a manifest: nothing (each object's
    record is kept in the store, see :mod:`dlutils.stores`)."""

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


def _utc(moment: float | None) -> datetime | None:
    return datetime.fromtimestamp(moment, tz=timezone.utc) if moment is not None else None
