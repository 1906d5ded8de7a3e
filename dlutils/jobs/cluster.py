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

This module is the client's side; :mod:`dlutils.jobs.cluster_batch` is the workers' (what
a batch runs), :mod:`dlutils.jobs.cluster_checks` the checks before a job starts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..destinations import _URL
from ..errors import DownloadError
from ..transfer import MAX_SEGMENTS
from ..transfer.ranges import Probe
from .cluster_batch import _Control, _Spec, run_batch
from .cluster_checks import check_cluster, check_shared, cluster_threads, workers_missing
from .cluster_counts import _Counting, _Counts
from .elsewhere import client_environment
from .records import RecordsView, compact
from .shared import _describe, _transport_timeout
from .split import SplitObject, probe_task, splittable
from .status import State
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
#: Seconds between the client's heartbeats.
BEAT_EVERY = 1.0
#: Seconds without a heartbeat after which workers stop the job's batches (client gone).
STALE_AFTER = 15.0


class _Items(list):
    """A batch's objects: shown as a count, never as links (they may be signed)."""

    def __repr__(self) -> str:
        return f"<{len(self)} objects>"


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


class _ClusterRun(_Counts):
    def __init__(self, job: Any, client: Any):
        self.job = job
        self.client = client
        self.batches: dict[int, _Counting] = {}
        self.inflight = 0
        self.ranges = 0
        self.cond = threading.Condition(job._lock)

    # -- the run (the counting of reports and results: see dlutils.jobs.cluster_counts)

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
