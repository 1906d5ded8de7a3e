"""A cluster job's worker side: :func:`run_batch`, what each batch runs on a Dask worker.

One :class:`_Context` per job in each worker process reads the job's control entry
(:class:`_Control`: heartbeat and abort), holds the job's ``connections`` across the
cluster (:class:`_SharedBudget`), and sends what the batches did (:class:`_Progress`) to
the client every :data:`REPORT_EVERY` seconds. :class:`_Spec` is what the client sends
with each batch. The client side is :mod:`dlutils.jobs.cluster`.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..budget import ConnectionBudget
from ..errors import DownloadAborted
from ..limits import TokenBucket
from ..progress import Callback
from ..sources import fetch
from ..transfer import AbortEvent, Fetched, TransferOptions
from .elsewhere import environment
from .records import BatchRecords
from .shared import _describe, _raise_if_unusable, _task_extras
from .tasks import _Task

log = logging.getLogger("dlutils")

#: Seconds between a worker's reports, and between its looks at the job's control entry.
REPORT_EVERY = 0.25


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
