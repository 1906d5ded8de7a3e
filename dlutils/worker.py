"""The process that runs one stored download job: starts it, reports it, and obeys ``stop``.

``dlutils download`` records the job in the :class:`~dlutils.jobstore.JobStore`, then
starts ``python -m dlutils _worker JOB_ID`` in a session of its own and writes the
request to the worker's stdin as one JSON object, secrets included (the link as given,
header values, the object list). Nothing secret goes into the store, onto the command
line (which ``ps`` shows) or into the environment (which children inherit): the request
lives only in the worker's memory. ``--wait`` calls :func:`run` in the foreground instead.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from .errors import InvalidInputError
from .jobs import Job, JobStatus, State
from .jobstore import JobStore

__all__ = ["run", "main", "REPORT_INTERVAL"]

log = logging.getLogger("dlutils")

#: Seconds between two copies of a running job's status into the store.
REPORT_INTERVAL = 0.5


def _aborted_before_start(job_id: str, description: str) -> JobStatus:
    now = datetime.now(timezone.utc)
    return JobStatus(
        id=job_id, description=description, state=State.ABORTED, total=None, scheduled=0,
        finished=0, skipped=0, errors=0, bytes=0, started_time=None, finished_time=now,
        all_dispatched=False,
    )  # fmt: skip


def run(
    store: JobStore,
    job_id: str,
    request: dict[str, Any],
    *,
    stop: threading.Event | None = None,
    on_status: Callable[[JobStatus], object] | None = None,
    interval: float = REPORT_INTERVAL,
) -> JobStatus:
    """Run the stored job ``job_id`` in this process until it is finished or aborted.

    The job's status goes into the store every ``interval`` seconds and at the end;
    an abort requested through the store (``dlutils stop download``) or by setting
    ``stop`` aborts the job cleanly (running transfers keep their ``.part`` files).

    Parameters
    ----------
    store : JobStore
        The store holding the job's row (state pending).
    job_id : str
        The row's id; the status is recorded under it.
    request : dict
        ``{"source": link or dict name -> link, "dest": folder, "options": {...}}``,
        where the options are those of :func:`dlutils.download`.
    stop : threading.Event, optional
        Set it (from a signal handler, say) to abort the job.
    on_status : callable, optional
        Called with each status recorded, for a progress display.
    interval : float
        Seconds between reports.

    Returns
    -------
    JobStatus
        The final status, with the store's id.

    Raises
    ------
    Exception
        Whatever :func:`dlutils.download` raised for a request it refused (an
        :class:`~dlutils.InvalidInputError` for a malformed one), after recording it
        in the store as the job's failure.
    """
    pid = os.getpid()
    options = dict(request.get("options") or {})
    if store.attach(job_id, pid) or (stop is not None and stop.is_set()):
        status = _aborted_before_start(job_id, options.get("description") or "")
        store.save_status(job_id, status, pid)
        return status
    try:
        job = _start(store, job_id, pid, request, options, interval)
    except Exception as exc:
        code = 2 if isinstance(exc, InvalidInputError) else 1
        message = str(exc) if code == 2 else f"{type(exc).__name__}: {exc}"
        store.fail(job_id, message, code)
        raise
    log.debug("stored job %s runs as %s: %s", job_id, job.id, job.description)
    aborting = False
    while True:
        try:
            job.wait(interval)
            done = True
        except TimeoutError:
            done = False
        status = replace(job.status(), id=job_id)
        try:
            abort = store.save_status(job_id, status, pid)
        except sqlite3.OperationalError:  # the store is busy: report at the next tick
            if done:
                raise
            log.warning("job %s: cannot write its status to %s", job_id, store.path, exc_info=True)
            abort = False
        if on_status is not None:
            on_status(status)
        if done:
            return status
        if not aborting and (abort or (stop is not None and stop.is_set())):
            log.info("job %s: aborting on request", job_id)
            job.abort()
            aborting = True


def _start(
    store: JobStore,
    job_id: str,
    pid: int,
    request: dict[str, Any],
    options: dict[str, Any],
    interval: float,
) -> Job:
    """:func:`dlutils.download`, with heartbeats while it expands a long request."""
    from . import download

    outcome: dict[str, Any] = {}

    def build() -> None:
        from .jobs.registry import _given_id

        _given_id.value = job_id  # the job (and its log lines) goes by the store's id
        try:
            outcome["job"] = download(request["source"], request["dest"], **options)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            _given_id.value = None

    thread = threading.Thread(target=build, name=f"dlutils-start-{job_id}", daemon=True)
    thread.start()
    while thread.join(interval) or thread.is_alive():
        store.beat(job_id, pid)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["job"]


def main(job_id: str) -> int:
    """The detached worker: read the request from stdin, run the job, exit.

    Exit code 0 when every object is done, 1 when the job failed, was aborted or had
    errors, 2 when the request was refused.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        return _serve(job_id, stop)
    except Exception:  # its traceback goes to the job's log through the redacting filter
        log.exception("job %s: the worker failed", job_id)
        return 1


def _serve(job_id: str, stop: threading.Event) -> int:
    with JobStore() as store:
        try:
            request = json.loads(sys.stdin.read())
            if not isinstance(request, dict) or "source" not in request:
                raise ValueError("not a request object")
        except ValueError as exc:
            store.fail(job_id, f"the worker got no request on its stdin ({exc})", 1)
            return 1
        try:
            status = run(store, job_id, request, stop=stop)
        except InvalidInputError:
            return 2
        except Exception:
            log.exception("job %s could not start", job_id)
            return 1
    log.info("job %s %s", job_id, status.state.value)
    return 0 if status.state is State.FINISHED and not status.errors else 1
