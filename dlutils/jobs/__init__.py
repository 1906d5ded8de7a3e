"""Download jobs as the AIStore downloader runs them, one concern per module.

:mod:`~dlutils.jobs.tasks` turns a request into tasks, :mod:`~dlutils.jobs.runner` runs
them (:class:`Job`), :mod:`~dlutils.jobs.status` and :mod:`~dlutils.jobs.registry` say
how jobs are doing, :mod:`~dlutils.jobs.api` holds :func:`download` and the functions
that run a job to its end.

:class:`Job` is made by :mod:`~dlutils.jobs.constructors` (one per request type), shows
its progress through :mod:`~dlutils.jobs.bars`, and sends tasks to other processes
through :mod:`~dlutils.jobs.elsewhere`; what it shares with a cluster's batches is in
:mod:`~dlutils.jobs.shared`. On a Dask cluster, :mod:`~dlutils.jobs.cluster` is the
client's side (with :mod:`~dlutils.jobs.cluster_counts` and
:mod:`~dlutils.jobs.cluster_checks`), :mod:`~dlutils.jobs.cluster_batch` the workers';
:mod:`~dlutils.jobs.split` sends a big object's ranges to many workers.
"""

from __future__ import annotations

from .api import download, multi_download, range_download
from .registry import get_job, list_jobs, remove_job
from .runner import Job
from .status import JobStatus, State, TaskInfo

__all__ = [
    "Job",
    "JobStatus",
    "TaskInfo",
    "State",
    "download",
    "range_download",
    "multi_download",
    "list_jobs",
    "get_job",
    "remove_job",
]
