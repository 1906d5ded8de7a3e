"""What a job needs to run its tasks on an executor of other processes (Dask, a process pool).

Such an executor sends each task to a worker: the task and its options are pickled, and
the worker reads its own environment and its own current folder. Three things make that
safe, all decided on the client before anything starts:

* :func:`check_sendable` pickles the options once and names the one that cannot travel;
* :func:`client_environment` captures the settings the sources read from the environment
  (endpoints, not credentials), and :func:`environment` applies them in the worker for the
  time of one task;
* the job resolves a relative destination against the client's folder (see
  :class:`dlutils.Job`).

:func:`_submit_elsewhere` (a method of :class:`~dlutils.Job`: ``self`` is the job) sends
one task so, to be run there by :func:`_execute_elsewhere`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from ..errors import InvalidInputError
from ..sources import fetch
from ..transfer import AbortEvent, Fetched
from ..transfer.options import TransferOptions
from .shared import _raise_if_unusable, _task_extras
from .tasks import _Task

__all__ = ["WORKER_ENVIRONMENT", "check_sendable", "client_environment", "environment"]

#: Settings the sources read from the environment when they fetch: where to, not who.
#: Credentials (AWS keys, HF_TOKEN...) are not sent: workers use their own, or ``token=``.
WORKER_ENVIRONMENT = (
    "HF_ENDPOINT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "STORAGE_EMULATOR_HOST",
    "AIS_ENDPOINT",
)

#: What to say instead of an option that cannot be sent.
_INSTEAD = {
    "session": "leave session= unset (each worker makes its own; for S3 credentials "
    "give aws_profile= instead)",
    "headers": "give headers as a dict of strings",
    "storage_options": "give storage_options as a dict of plain values (strings, numbers)",
}

_lock = threading.Lock()
#: name -> [value applied, tasks using it, the worker's own value (None: unset)]
_applied: dict[str, list[Any]] = {}


def check_sendable(options: TransferOptions | Mapping[str, Any], executor: Any) -> None:
    """Raise :class:`~dlutils.InvalidInputError` naming an option that does not pickle."""
    values = options if isinstance(options, Mapping) else vars(options)
    for name, value in values.items():
        try:
            pickle.dumps(value)
        except Exception as exc:  # noqa: BLE001 - any failure means it cannot travel
            instead = _INSTEAD.get(name, "give a value that pickles, or use a thread pool")
            raise InvalidInputError(
                f"{name}={_shown(value)} cannot be sent to the workers of executor="
                f"{type(executor).__name__} ({type(exc).__name__}: it does not pickle): "
                f"{instead}"
            ) from None


def _shown(value: Any) -> str:
    kind = type(value)
    return f"<{kind.__module__}.{kind.__qualname__}>"


def client_environment() -> dict[str, str]:
    """The :data:`WORKER_ENVIRONMENT` settings set here, to apply in each worker's task."""
    return {name: os.environ[name] for name in WORKER_ENVIRONMENT if os.environ.get(name)}


@contextlib.contextmanager
def environment(settings: Mapping[str, str]) -> Iterator[None]:
    """Apply the client's ``settings`` in this worker while a task runs, then restore.

    A worker may run several tasks at once in threads: a setting stays while any task
    needs it, and the worker's own value comes back after the last. Two jobs needing
    different values of one setting at once in one worker cannot both be right: the
    second task raises :class:`~dlutils.InvalidInputError` instead of using the wrong one.
    """
    taken: list[str] = []
    try:
        with _lock:
            for name, value in settings.items():
                held = _applied.get(name)
                if held is None:
                    _applied[name] = [value, 1, os.environ.get(name)]
                    os.environ[name] = value
                elif held[0] == value:
                    held[1] += 1
                else:
                    raise InvalidInputError(
                        f"{name} is {held[0]!r} for another job running in this worker, "
                        f"and {value!r} for this one: run the two jobs on separate workers"
                    )
                taken.append(name)
        yield
    finally:
        with _lock:
            for name in taken:
                held = _applied[name]
                held[1] -= 1
                if held[1] == 0:
                    del _applied[name]
                    if held[2] is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = held[2]


def _submit_elsewhere(
    self, executor: Any, task: _Task, common: TransferOptions, settings: dict[str, str]
) -> Future:
    """Send ``task`` to another process: its path absolute, the client's settings with it.

    It shows in ``current_tasks`` (0 bytes: its progress is known when it completes)
    until it is done.
    """
    path = task.path if self._store else os.path.join(self._cwd, task.path)
    sent = dataclasses.replace(task, path=path) if path != task.path else task
    with self._lock:  # before submit: a quick task may be done before it returns
        self._current[task.name] = [task.name, 0, task.size]
    try:
        future = executor.submit(_execute_elsewhere, sent, common, self._opts.timeout, settings)
    except BaseException:
        with self._lock:
            self._current.pop(task.name, None)
        raise
    with self._lock:  # _task_done (its callback, added next) removes both entries
        self._elsewhere[future] = task.name
    return future


def _execute_elsewhere(
    task: _Task,
    common: TransferOptions,
    time_limit: float | None,
    settings: Mapping[str, str] | None = None,
) -> Fetched:
    """The task run by an executor of other processes: no shared progress, abort or limiter.

    ``settings``: the client's environment settings the sources read (endpoints),
    applied while the task runs.
    """
    _raise_if_unusable(task)
    abort = AbortEvent(time_limit=time_limit) if time_limit else None
    try:
        with environment(settings or {}):
            return fetch(task.link, task.path, common.replace(**_task_extras(task), abort=abort))
    finally:
        if abort is not None:
            abort.close()
