"""The jobs started in this process: list, get and remove them by id."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

from ..errors import InvalidInputError, JobNotFoundError, JobStateError
from .status import State

if TYPE_CHECKING:
    from .runner import Job

__all__ = ["list_jobs", "get_job", "remove_job", "register"]

_registry: dict[str, Job] = {}
#: The command line's worker runs a stored job under the store's id: it sets ``value`` in
#: the thread that creates the job, so logs and statuses name the id the user was given.
_given_id = threading.local()
_registry_lock = threading.Lock()


def list_jobs(regex: str | None = None, active_only: bool = False) -> list[Job]:
    """Jobs started in this process, running ones first, then by start time.

    See :func:`download` for an example.

    Parameters
    ----------
    regex : str, optional
        Keep jobs whose description contains a match (``re.search``).
    active_only : bool
        Keep only jobs still running.
    """
    pattern = None
    if regex is not None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise InvalidInputError(f"regex {regex!r} is not valid: {exc}") from exc
    with _registry_lock:
        jobs = list(_registry.values())
    if pattern is not None:
        jobs = [job for job in jobs if pattern.search(job.description)]
    if active_only:
        jobs = [job for job in jobs if not job.status().done]
    return sorted(jobs, key=lambda job: (job.status().done, job._started or 0.0))


def get_job(job_id: str) -> Job:
    """The job with this id; :class:`~dlutils.JobNotFoundError` if there is none.

    Examples
    --------
    >>> import dlutils
    >>> try:
    ...     dlutils.get_job("dnl-0000000000")
    ... except dlutils.JobNotFoundError as exc:
    ...     print(exc)
    no download job 'dnl-0000000000'; list_jobs() shows the known ones
    """
    with _registry_lock:
        job = _registry.get(job_id)
    if job is None:
        raise JobNotFoundError(f"no download job {job_id!r}; list_jobs() shows the known ones")
    return job


def remove_job(job_id: str) -> None:
    """Forget a finished or aborted job; a running one cannot be removed.

    See :func:`download` for an example.
    """
    job = get_job(job_id)
    state = job.status().state
    if state in (State.PENDING, State.RUNNING):
        raise JobStateError(
            f"job {job_id} is {state.value}: abort it or wait for it before removing it"
        )
    with _registry_lock:
        _registry.pop(job_id, None)


def register(job: Job) -> None:
    """Make a started job known to :func:`list_jobs` and :func:`get_job`."""
    with _registry_lock:
        _registry[job.id] = job


def given_id() -> str | None:
    """The id the command line's worker chose for the job created in this thread, if any."""
    return getattr(_given_id, "value", None)
