"""dlutils: download datasets and models onto a machine, fast and without losing a byte."""

from __future__ import annotations

import logging

from ._version import __version__ as __version__
from .errors import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    DownloadAborted,
    DownloadError,
    DownloadTimeoutError,
    IncompleteDownloadError,
    InvalidInputError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    RemoteChangedError,
    SizeMismatchError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from .job import (
    Job,
    JobStatus,
    State,
    TaskInfo,
    download,
    get_job,
    list_jobs,
    multi_download,
    range_download,
    remove_job,
)
from .sources.ais import ais_download
from .sources.aws import aws_download
from .sources.gcs import gcs_download
from .sources.hf import hf_download
from .sources.http import http_download

logging.getLogger("dlutils").addHandler(logging.NullHandler())

__all__ = [
    "CacheMismatchWarning",
    "ChecksumMismatchError",
    "DownloadAborted",
    "DownloadTimeoutError",
    "DownloadError",
    "IncompleteDownloadError",
    "InvalidInputError",
    "Job",
    "JobFailedError",
    "JobNotFoundError",
    "JobStateError",
    "JobStatus",
    "State",
    "TaskInfo",
    "RemoteChangedError",
    "SizeMismatchError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "ais_download",
    "aws_download",
    "download",
    "gcs_download",
    "hf_download",
    "get_job",
    "http_download",
    "list_jobs",
    "multi_download",
    "range_download",
    "remove_job",
]
