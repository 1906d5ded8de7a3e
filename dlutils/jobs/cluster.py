"""A job on a Dask cluster: batches of objects, live reports, abort and limits across it.

Given a ``distributed.Client`` (or its ``get_executor()``) as ``executor``, a
:class:`~dlutils.Job` runs here instead of on its thread pool:

* **batches** of objects, sized to the cluster (several per worker thread), go out as
  tasks named ``dlutils-<job id>-batch-<n>`` (what the dashboard shows: never a link);
  at most two per worker thread are in flight. A batch fetches its objects through
  :func:`dlutils.sources.fetch` with the job's options and ``dest`` as given, over a few
  threads of its own;
* **reports**: each worker process sends, every quarter second, what its batches did
  (bytes so far, objects done) as a Dask event (``log_event``) on the topic
  ``dlutils-<job id>``; the client counts each object once, by its place in its batch,
  whatever runs of a batch report it;
* **control**: the client keeps an entry of the scheduler's metadata,
  ``["dlutils", <job id>]``, with a heartbeat and the abort flag; each worker process
  reads it (4 times a second) and sets the engine's :class:`~dlutils.transfer.AbortEvent`
  on abort, or when the heartbeat has not moved for :data:`STALE_AFTER` seconds (a dead
  client, or an entry gone);
* **limits**: ``connections`` is a Dask ``Semaphore`` of that many leases, one per
  request in flight anywhere (extra ranges of big files included); ``bytes_per_hour`` is
  split fairly: at most one batch per worker thread runs, each with a token bucket of an
  equal share of the rate, so the sum never exceeds it;
* **records** (:mod:`dlutils.jobs.records`): one file per batch under the destination's
  ``.dlutils-records`` folder, which every worker must see: checked before the job starts.

``distributed`` is imported by nothing here until a client is given.

Batches fetch through :func:`dlutils.sources.fetch` with each object's destination as
given, so an object-store destination (``s3://``) goes straight into the store from each
worker. Three things are for local destinations only: :func:`check_shared`, the records
of :mod:`dlutils.jobs.records` (a store keeps its own), and :func:`_absolute`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..budget import ConnectionBudget
from ..destinations import _URL
from ..errors import DownloadAborted, DownloadError, InvalidInputError
from ..limits import TokenBucket
from ..progress import Callback
from ..sources import fetch
from ..transfer import MAX_SEGMENTS, AbortEvent, Fetched, TransferOptions
from ..transfer.ranges import Probe
from .elsewhere import client_environment, environment
from .records import FOLDER, BatchRecords, RecordsView, compact
from .runner import (
    _describe,
    _raise_if_unusable,
    _task_extras,
    _transport_timeout,
)
from .split import SplitObject, probe_task, splittable
from .status import State, TaskInfo
from .tasks import _Task

__all__ = ["run_on_cluster", "check_cluster", "check_shared", "workers_missing"]

log = logging.getLogger("dlutils")

#: Objects of one batch, at most.
BATCH_MAX = 500
#: Objects of one batch when the total is not known yet (a listing).
BATCH_LISTED = 100
#: Batches each worker thread should get, at least, when the total is known.
BATCHES_PER_THREAD = 4
#: Objects a batch fetches at once (each on a thread of its own in the worker).
LANES = 4
#: Seconds between a worker's reports, and between its looks at the job's control entry.
REPORT_EVERY = 0.25
#: Seconds between the client's heartbeats.
BEAT_EVERY = 1.0
#: Seconds without a heartbeat after which workers stop the job's batches (client gone).
STALE_AFTER = 15.0


@dataclass(frozen=True)
class _Spec:
    """What every batch of one job needs: sent with each batch (a few hundred bytes)."""

    job_id: str
    root: str
    # what may hold a header or token: never in a repr (a worker logs a failed task's)
    common: TransferOptions = field(repr=False)
    big_common: TransferOptions = field(repr=False)
    settings: dict[str, str] = field(repr=False)
    time_limit: float | None = None
    lanes: int = 1
    connections: int | None = None
    rate: float | None = None  # bytes/s of each batch (a fair share), None: no limit
    session_factory: Any = field(default=None, repr=False)
    #: An object-store destination (``s3://``): no local records, the store's own checks.
    store: bool = False
    stale_after: float = 15.0
    control: tuple[str, str] = ("dlutils", "")
    semaphore: str = ""
    topic: str = ""


class _Items(list):
    """A batch's objects: shown as a count, never as links (they may be signed)."""

    def __repr__(self) -> str:
        return f"<{len(self)} objects>"


# --------------------------------------------------------------------------- client side


def cluster_threads(client: Any) -> dict[str, int]:
    """Worker address -> threads, of the workers connected now."""
    return dict(client.nthreads())


def workers_missing(client: Any, marker: str, token: str) -> dict[str, str]:
    """The workers that do not see the file ``marker`` holding ``token``: address -> why."""
    answers = client.run(_read_marker, marker)
    return {addr: why for addr, got in answers.items() if (why := _compare(got, token))}


def _compare(got: str, token: str) -> str:
    if got == token:
        return ""
    return got if got.startswith("cannot") else "sees another file there"


def _read_marker(marker: str) -> str:
    try:
        with open(marker, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        return f"cannot read it ({type(exc).__name__})"


def check_shared(client: Any, root: str, job_id: str) -> None:
    """Refuse a destination some worker does not see as the client does, naming them.

    The client writes a marker file of random content in ``root``'s records folder and
    every worker must read it back; a worker on another host without the shared
    filesystem (or with another one mounted there) cannot.
    """
    folder = os.path.join(root, FOLDER)
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, f"{job_id}-probe")
    token = secrets.token_hex(16)
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write(token)
    try:
        missing = workers_missing(client, marker, token)
    finally:
        os.unlink(marker)
    if missing:
        named = "; ".join(f"{addr}: {why}" for addr, why in sorted(missing.items()))
        raise InvalidInputError(
            f"dest {root!r} is not the same folder on every worker of the cluster ({named}): "
            "give a folder on a filesystem every worker mounts at the same path"
        )


def check_cluster(client: Any, dest: str | None, job_id: str) -> None:
    """Before a job starts on ``client``'s cluster: it has workers, and they see ``dest``.

    Raises
    ------
    dlutils.InvalidInputError
        No worker is connected, or some worker does not see ``dest`` as the client does
        (:func:`check_shared`, naming it).
    """
    if not sum(cluster_threads(client).values()):
        raise InvalidInputError(
            "executor: the Dask cluster has no workers; start some, or wait for them with "
            "client.wait_for_workers(n)"
        )
    if dest is not None:  # None: an object store, checked reachable by the job already
        check_shared(client, os.path.abspath(dest), job_id)


def _absolute(task: _Task, cwd: str) -> _Task:
    """``task`` with its local path absolute; a URL destination's path stays as given."""
    if _URL.match(task.path):
        return task
    path = os.path.join(cwd, task.path)
    return dataclasses.replace(task, path=path) if path != task.path else task


def batch_size(total: int | None, threads: int) -> int:
    """Objects per batch: several batches per worker thread, at most :data:`BATCH_MAX`.

    Examples
    --------
    >>> batch_size(500, 4), batch_size(None, 4), batch_size(10**6, 64)
    (32, 100, 500)
    """
    if total is None:
        return BATCH_LISTED
    return max(1, min(BATCH_MAX, math.ceil(total / (threads * BATCHES_PER_THREAD))))


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


class _ClusterRun:
    def __init__(self, job: Any, client: Any):
        self.job = job
        self.client = client
        self.batches: dict[int, _Counting] = {}
        self.inflight = 0
        self.ranges = 0
        self.cond = threading.Condition(job._lock)

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

    # -- the run

    def run(self) -> None:
        job, client, opts = self.job, self.client, self.job._opts
        from distributed import Semaphore

        store = bool(getattr(job, "_store", False))
        root = job.dest if store else os.path.abspath(os.path.join(job._cwd, job.dest or "."))
        nthreads = cluster_threads(client)
        threads = sum(nthreads.values())
        if not threads:
            raise DownloadError(
                f"the Dask cluster of executor={type(opts.executor).__name__} has no workers"
            )
        limited = bool(opts.bytes_per_hour)
        window = threads if limited else 2 * threads
        lanes = min(LANES, opts.connections) if opts.connections else LANES
        spec = dataclasses.replace(self._spec(root, lanes, window), store=store)
        control = _Control(client, spec.control)
        control.set({"beat": 0, "abort": False})
        self.stop_beat = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(control,), name=f"{job.id}-beat", daemon=True
        )
        beat.start()
        view: RecordsView | None = None
        semaphore = None
        subscribed = False
        try:
            view = None if store else RecordsView(root, job.id)
            if opts.connections:
                semaphore = Semaphore(
                    max_leases=opts.connections,
                    name=spec.semaphore,
                    scheduler_rpc=client.scheduler,
                    loop=client.loop,
                )
            client.subscribe_topic(spec.topic, self.on_event)
            subscribed = True
            self._submit(spec, view, root, threads, window, lanes)
        finally:
            self.stop_beat.set()
            beat.join()
            if view is not None:
                view.close()
            if subscribed:
                try:
                    client.unsubscribe_topic(spec.topic)
                except Exception:  # noqa: BLE001 - the cluster may be gone
                    pass
            try:
                control.set(None)  # the entry stays, empty: the scheduler needs no dlutils
            except Exception:  # noqa: BLE001
                pass
            if semaphore is not None:
                try:
                    semaphore.close()
                except Exception:  # noqa: BLE001
                    pass

    def _submit(
        self,
        spec: _Spec,
        view: RecordsView | None,
        root: str,
        threads: int,
        window: int,
        lanes: int,
    ) -> None:
        """Send the batches, at most ``window`` in flight; wait for them; synchronise."""
        job = self.job
        size = batch_size(job._total, threads)
        log.info(
            "job %s on %d Dask worker threads: batches of %d, %d in flight, %d at once each",
            job.id,
            threads,
            size,
            window,
            lanes,
        )
        try:
            for index, (batch, found) in enumerate(self._route(spec, size)):
                with job._lock:
                    while self.inflight >= window and not job._abort.is_set():
                        self.cond.wait(0.2)
                    if job._abort.is_set():
                        break
                    self.inflight += 1
                    job._scheduled += len(batch)
                    self.batches[index] = _Counting(batch)  # current once a worker says so
                if found is not None:  # a big object: its ranges across the workers
                    self.batches[index].split = True
                    threading.Thread(
                        target=self._split,
                        args=(spec, view, root, index, batch[0], found),
                        name=f"{job.id}-split-{index}",
                        daemon=True,
                    ).start()
                    continue
                self._send(spec, view, root, index, batch)
            else:
                with job._lock:
                    job._all_dispatched = True
                    if job._total is None:
                        job._total = job._scheduled
        except Exception as exc:  # a listing that fails, or a cluster that went away
            log.exception("job %s could not list or send its objects", job.id)
            with job._lock:
                job._errors += 1
                job._download_errors.append(("<listing>", _describe(exc, "")))
        with job._lock:
            while self.inflight:
                self.cond.wait(0.5)
        try:
            if not spec.store:
                compact(root, job.id)
        except OSError as exc:  # the batch records stay as they are: as good
            log.warning("job %s: cannot gather its records in %s: %s", job.id, root, exc)
        complete = job._all_dispatched and not job._abort.is_set()
        if complete and job._sync is not None:
            # what the batches wrote (a store keeps its records itself)
            after: Any = None if spec.store else RecordsView(root, job.id)
            try:
                job._sync(job, after)
            except Exception as exc:
                log.exception("job %s could not synchronise", job.id)
                with job._lock:
                    job._errors += 1
                    job._download_errors.append(("<sync>", _describe(exc, "")))
            finally:
                if after is not None:
                    after.close()

    def _send(
        self, spec: _Spec, view: RecordsView | None, root: str, index: int, batch: list[_Task]
    ) -> None:
        """Submit one batch (already counted in flight) as task ``dlutils-<job>-batch-<n>``."""
        job, client = self.job, self.client
        sent = [_absolute(task, job._cwd) for task in batch]  # other processes' folders
        items = _Items((task, *self._known(view, root, task)) for task in sent)
        try:
            future = client.submit(
                run_batch,
                spec,
                index,
                items,
                key=f"dlutils-{job.id}-batch-{index}",
                pure=False,
            )
        except BaseException:
            with job._lock:  # never sent: not in flight, not scheduled
                self.inflight -= 1
                job._scheduled -= len(batch)
                del self.batches[index]
            raise
        future.add_done_callback(lambda f, i=index: self.batch_done(i, f))

    def _route(self, spec: _Spec, size: int) -> Iterator[tuple[list[_Task], Probe | None]]:
        """The job's batches, and its big http(s) objects alone with what the client's one
        request learnt of them (:mod:`dlutils.jobs.split`): ``(batch, probe or None)``.

        An object is a candidate when it is marked big, its size is known to reach the
        threshold (``blob_threshold``, else ``segment_threshold``), or its size is unknown
        and the job was given either threshold: the client asks it, one request each.
        """
        job, opts = self.job, self.job._opts
        threshold = job._blob_threshold
        if threshold is None:
            threshold = spec.big_common.segment_threshold
        ask_unknown = job._blob_threshold is not None or opts.segment_threshold is not None

        def routed() -> Iterator[_Task | tuple[_Task, Probe]]:
            for task in job._tasks():
                size = task.size
                if size is None and task.remote_attrs is not None:
                    size = task.remote_attrs.size
                candidate = task.big or (size >= threshold if size is not None else ask_unknown)
                if candidate and splittable(task, spec.store):
                    placed = _absolute(task, job._cwd)
                    found = probe_task(placed, spec, threshold)
                    if found is not None:
                        yield placed, found
                        continue
                yield task

        batch: list[_Task] = []
        for item in routed():
            if isinstance(item, tuple):
                yield [item[0]], item[1]
                continue
            if item.big:  # alone, with its segments: one worker's connections
                yield [item], None
                continue
            batch.append(item)
            if len(batch) >= size:
                yield batch, None
                batch = []
        if batch:
            yield batch, None

    def next_range(self) -> int:
        """The number of the next range task of this job."""
        with self.job._lock:
            self.ranges += 1
            return self.ranges - 1

    def _split(
        self,
        spec: _Spec,
        view: RecordsView | None,
        root: str,
        index: int,
        task: _Task,
        found: Probe,
    ) -> None:
        """One big object's ranges across the workers (in a thread of the client)."""
        try:
            result = SplitObject(self, spec, root, index, task, found)()
        except Exception as exc:  # noqa: BLE001 - the object's error
            result = ("error", _describe(exc, task.link))
        if result is None:  # its .part is another process's now: the usual way
            try:
                self._send(spec, view, root, index, [task])
            except Exception as exc:  # noqa: BLE001 - the cluster went away
                with self.job._lock:
                    self.inflight += 1
                    self.job._scheduled += 1
                    self.batches[index] = _Counting([task])
                self._settle(index, None, exc)
            return
        with self.job._lock:  # what the ranges reported is what the run "ranges" had so far
            counting = self.batches[index]
            counting.received[(0, "ranges")] = counting.credited.get(0, 0)
        self._settle(index, [result], None)

    def _known(self, view: RecordsView | None, root: str, task: _Task) -> tuple[Any, Any]:
        if view is None:
            return None, None
        try:
            key = os.path.relpath(task.path, root).replace(os.sep, "/")
        except ValueError:
            return None, None
        return view.known(key), view.partials.get(key)

    def _spec(self, root: str, lanes: int, window: int) -> _Spec:
        job, opts = self.job, self.job._opts
        common = opts.transfer(make_session=False).replace(timeout=_transport_timeout(opts.timeout))
        big_common = common.replace(segments=max(2, opts.segments or MAX_SEGMENTS))
        if job._blob_threshold is not None:
            big_common = big_common.replace(segment_threshold=max(1, job._blob_threshold))
        rate = opts.bytes_per_hour / 3600 / window if opts.bytes_per_hour else None
        return _Spec(
            job_id=job.id,
            root=root,
            common=common,
            big_common=big_common,
            settings=client_environment(),
            time_limit=opts.timeout,
            lanes=lanes,
            connections=opts.connections,
            rate=rate,
            session_factory=opts.session_factory,
            stale_after=STALE_AFTER,
            control=("dlutils", job.id),
            semaphore=f"dlutils-{job.id}-connections",
            topic=f"dlutils-{job.id}",
        )

    def _beat(self, control: Any) -> None:
        """The heartbeat, and the abort flag as soon as the job is aborted."""
        count, aborted = 0, False
        next_beat = 0.0
        while not self.stop_beat.is_set():
            now = time.monotonic()
            if self.job._abort.is_set() and not aborted:
                aborted = True
                next_beat = 0.0
            if now >= next_beat:
                count += 1
                try:
                    control.set({"beat": count, "abort": aborted})
                except Exception:  # noqa: BLE001 - the cluster is going: the batches say so
                    log.debug("job %s: cannot reach the scheduler", self.job.id, exc_info=True)
                next_beat = now + BEAT_EVERY
            self.stop_beat.wait(0.05)


def run_on_cluster(job: Any, client: Any) -> None:
    """Run ``job`` on the cluster of ``client``; counts, ends and reports it as the runner does."""
    where = "<cluster>"
    if job._opts.progress:
        job._open_bar()
    try:
        _ClusterRun(job, client).run()
    except Exception as exc:
        log.exception("job %s could not run on the cluster", job.id)
        with job._lock:
            job._errors += 1
            job._download_errors.append((where, _describe(exc, "")))
    finally:
        with job._lock:
            job._current.clear()
            job._state = State.ABORTED if job._abort.is_set() else State.FINISHED
            job._finished = time.time()
        job._close_bar()
        job._log_end()
        job._done.set()


# --------------------------------------------------------------------------- worker side


class _Control:
    """The job's entry in the scheduler's metadata: a heartbeat and the abort flag.

    (A Dask ``Variable`` would do, but reading one that is gone logs an error in the
    scheduler at every look.)
    """

    def __init__(self, client: Any, key: tuple[str, str]):
        self.client, self.key = client, list(key)

    def set(self, state: dict[str, Any] | None) -> None:
        self.client.set_metadata(self.key, state)

    def get(self) -> dict[str, Any] | None:
        state = self.client.get_metadata(self.key, default=None)
        return state if isinstance(state, dict) else None


class _SharedBudget(ConnectionBudget):
    """The job's ``connections`` across the cluster: a lease of a Dask ``Semaphore`` each."""

    def __init__(self, semaphore: Any, slots: int):
        super().__init__(slots)
        self._semaphore = semaphore

    def try_acquire(self) -> bool:
        return bool(self._semaphore.acquire(timeout=0))

    def acquire(self, abort: threading.Event | None = None) -> None:
        while not self._semaphore.acquire(timeout=0.2):
            if abort is not None and abort.is_set():
                raise DownloadAborted("aborted while waiting for a free connection")

    def release(self) -> None:
        self._semaphore.release()

    def stop(self) -> None:
        """Stop the semaphore's lease refreshing here (the client closes the semaphore);
        its periodic callback would otherwise keep it alive in this worker."""
        callback = getattr(self._semaphore, "refresh_callback", None)
        if callback is not None:
            self._semaphore.loop.add_callback(callback.stop)


class _Context:
    """One job in one worker process: its abort event, budget, and the reports to send."""

    def __init__(self, spec: _Spec):
        from distributed import Semaphore, get_client, get_worker

        self.spec = spec
        self.worker = get_worker()
        client = get_client()
        self.control = _Control(client, spec.control)
        self.abort = AbortEvent()
        self.budget = (
            _SharedBudget(
                Semaphore(max_leases=spec.connections, name=spec.semaphore),
                spec.connections,
            )
            if spec.connections
            else None
        )
        self.lock = threading.Lock()
        self.current: dict[tuple[int, int, str], list[Any]] = {}
        self.done: list[list[Any]] = []
        self.running = 0
        self.idle_since: float | None = None
        self.why = ""
        self.last: list[Any] = [None, time.monotonic()]  # the beat seen, and when
        self._look(self.last)  # an abort already set: no transfer starts
        self.thread = threading.Thread(target=self._loop, name=f"{spec.job_id}-watch", daemon=True)
        self.thread.start()

    def _look(self, last: list[Any]) -> None:
        """Read the control entry; set the abort when told, or when the client is gone.

        An entry that cannot be read (emptied, or the scheduler unreachable) is a heartbeat
        missed: only :attr:`_Spec.stale_after` seconds of them stop the transfers.
        """
        try:
            state = self.control.get()
        except Exception:  # noqa: BLE001 - the scheduler is unreachable for now
            state = None
        now = time.monotonic()
        if state is not None and state.get("abort"):
            self._stop("aborted")
        if state is not None and state.get("beat") != last[0]:
            last[0], last[1] = state.get("beat"), now
        elif now - last[1] > self.spec.stale_after:
            self._stop(f"no heartbeat from the job's client for {self.spec.stale_after:g} s")

    def _stop(self, why: str) -> None:
        if not self.abort.is_set():
            self.why = why
            log.warning("job %s: %s; stopping its transfers here", self.spec.job_id, why)
            self.abort.set()

    def _loop(self) -> None:
        last = self.last
        while True:
            self.send()
            with _CONTEXTS_LOCK, self.lock:
                if self.running == 0 and (
                    self.abort.is_set() or time.monotonic() - (self.idle_since or 0) > 5.0
                ):
                    if _CONTEXTS.get(self.spec.job_id) is self:
                        del _CONTEXTS[self.spec.job_id]
                    if self.budget is not None:
                        self.budget.stop()
                    return
            self._look(last)
            time.sleep(REPORT_EVERY)

    def send(self) -> None:
        with self.lock:
            current = [[*key, *entry] for key, entry in self.current.items()]
            done, self.done = self.done, []
        if current or done:
            msg = {"current": current, "done": done}
            try:
                self.worker.log_event(self.spec.topic, msg)
            except Exception:  # noqa: BLE001 - the batch's result carries it all anyway
                log.debug("job %s: cannot send a report", self.spec.job_id, exc_info=True)


_CONTEXTS: dict[str, _Context] = {}
_CONTEXTS_LOCK = threading.Lock()


def _context(spec: _Spec) -> _Context:
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(spec.job_id)
        if ctx is None:
            ctx = _CONTEXTS[spec.job_id] = _Context(spec)
        with ctx.lock:
            ctx.running += 1
        return ctx


class _Progress(Callback):
    """One object's bytes, into its worker's next report."""

    def __init__(self, ctx: _Context, key: tuple[int, int, str], name: str, size: Any):
        self.ctx, self.key = ctx, key
        self.entry = [name, 0, size]
        with ctx.lock:
            ctx.current[key] = self.entry

    def set_size(self, size: int | None) -> None:
        self.entry[2] = size

    def update(self, nbytes: int) -> None:
        self.entry[1] += nbytes


def run_batch(spec: _Spec, index: int, items: list[tuple[_Task, Any, Any]]) -> list[tuple]:
    """A batch on a worker: fetch each object, record it, report it; never raises.

    Returns one tuple per object, in order: ``("done", skipped, size, received, run)``,
    ``("error", message)`` or ``("aborted",)``. What fails the whole batch (its records
    cannot be written, say) is every object's error: a task that raised would have its
    arguments logged by the worker.
    """
    try:
        return _run_batch(spec, index, items)
    except Exception as exc:  # noqa: BLE001 - reported per object, redacted
        log.warning("job %s: batch %d failed: %s", spec.job_id, index, _describe(exc, ""))
        return [("error", _describe(exc, ""))] * len(items)


def _run_batch(spec: _Spec, index: int, items: list[tuple[_Task, Any, Any]]) -> list[tuple]:
    from concurrent.futures import ThreadPoolExecutor

    ctx = _context(spec)
    run = secrets.token_hex(4)
    known: dict[Any, Any] = {}
    for task, record, partial in items:
        key = os.path.relpath(task.path, spec.root).replace(os.sep, "/")
        if record is not None:
            known[key] = record
        if partial is not None:
            known[("partial", key)] = partial
    records = None if spec.store else BatchRecords(spec.root, f"{spec.job_id}-b{index:06d}", known)
    # starts empty; an idle spell saves at most one second of the share (the burst)
    limiter = TokenBucket(spec.rate, burst=spec.rate) if spec.rate else None
    session_local = threading.local()

    def one(place: int) -> tuple:
        task = items[place][0]
        path = task.path  # absolute: made so on the client
        if ctx.abort.is_set():
            return ("aborted",)
        earlier = records.placed_earlier(path) if records is not None else None
        if earlier is not None:  # placed by a run of this batch that died: no request
            got = earlier.get("received")
            if got is None:  # placed, and killed before it said how many bytes came: all
                got = earlier["size"]
            result = (
                (True, earlier["size"], 0)
                if earlier.get("skipped")
                else (False, earlier["size"], int(got))
            )
            records.commit(path, result[0], result[2])
            with ctx.lock:
                ctx.done.append([index, place, run, task.name, *result])
            return ("done", *result, run)
        progress = _Progress(ctx, (index, place, run), task.name, task.size)
        abort = AbortEvent(ctx.abort, time_limit=spec.time_limit)
        held = None
        try:
            _raise_if_unusable(task)
            held = ctx.budget.hold(abort) if ctx.budget is not None else None
            options = spec.big_common if task.big else spec.common
            if spec.session_factory is not None:
                if getattr(session_local, "session", None) is None:
                    session_local.session = spec.session_factory()
                options = options.replace(session=session_local.session)
            fetched: Fetched = fetch(
                task.link,
                path,
                options.replace(
                    **_task_extras(task),
                    manifest=records,
                    progress=progress,
                    abort=abort,
                    limiter=limiter,
                ),
            )
        except DownloadAborted:
            if ctx.abort.is_set():
                return ("aborted",)
            return ("error", _describe(DownloadAborted(ctx.why or "aborted"), task.link))
        except Exception as exc:  # noqa: BLE001 - the object's error, reported with it
            return ("error", _describe(exc, task.link))
        finally:
            if held is not None:
                held.close()
            abort.close()
            with ctx.lock:
                ctx.current.pop((index, place, run), None)
        if records is not None:
            records.commit(path, fetched.skipped, fetched.received)
        result = (fetched.skipped, fetched.size, fetched.received)
        with ctx.lock:
            ctx.done.append([index, place, run, task.name, *result])
        return ("done", *result, run)

    results: list[tuple] = []
    try:
        with environment(spec.settings):
            lanes = min(spec.lanes, len(items))
            if lanes <= 1:
                results = [one(place) for place in range(len(items))]
            else:
                with ThreadPoolExecutor(
                    lanes, thread_name_prefix=f"{spec.job_id}-b{index}"
                ) as pool:
                    results = list(pool.map(one, range(len(items))))
        return results
    finally:
        if records is not None and results and not any(r[0] == "aborted" for r in results):
            records.finish()
        elif records is not None:
            records.abandon()  # stopped: the log stays for a run to come
        ctx.send()
        with _CONTEXTS_LOCK, ctx.lock:
            ctx.running -= 1
            if ctx.running == 0:
                ctx.idle_since = time.monotonic()
