"""dlutils: download datasets and models onto a machine, fast and without losing a byte."""

from __future__ import annotations

import logging

from ._version import __version__ as __version__
from .errors import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    ContentEncodingError,
    DownloadAborted,
    DownloadError,
    DownloadTimeoutError,
    IncompleteDownloadError,
    InvalidInputError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    OverlongBodyError,
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
from .options import Options
from .redaction import install_filter
from .sources.ais import ais_download
from .sources.aws import aws_download
from .sources.gcs import gcs_download
from .sources.hf import hf_download
from .sources.http import http_download

logging.getLogger("dlutils").addHandler(logging.NullHandler())
# No credential in any record of dlutils, nor in urllib3's DEBUG lines, which quote the
# path and query of every request (the signed links dlutils fetches among them), nor in
# botocore's, which quote the headers of every request and what it signs (a session token).
for _name in (
    "dlutils",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "botocore.endpoint",
    "botocore.auth",
    "botocore.parsers",
):
    install_filter(logging.getLogger(_name))
del _name

__all__ = [
    "CacheMismatchWarning",
    "ChecksumMismatchError",
    "ContentEncodingError",
    "DownloadAborted",
    "DownloadTimeoutError",
    "DownloadError",
    "IncompleteDownloadError",
    "InvalidInputError",
    "Job",
    "JobFailedError",
    "JobNotFoundError",
    "JobStateError",
    "OverlongBodyError",
    "Options",
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
