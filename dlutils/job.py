"""Download jobs: the names of :mod:`dlutils.jobs`, kept here so ``from dlutils.job import``
goes on working."""

from __future__ import annotations

from .jobs.api import download, multi_download, range_download
from .jobs.bars import FILE_BAR_THRESHOLD
from .jobs.registry import _given_id, get_job, list_jobs, remove_job
from .jobs.runner import DEFAULT_WORKERS, RECENT_TASKS, Job
from .jobs.status import JobStatus, State, TaskInfo
from .sources.classify import check_template as _check_template
from .sources.classify import names_a_bucket as _names_a_bucket

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
    "DEFAULT_WORKERS",
    "FILE_BAR_THRESHOLD",
    "RECENT_TASKS",
    "_check_template",
    "_given_id",
    "_names_a_bucket",
]
