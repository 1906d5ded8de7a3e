"""dlutils: download datasets and models onto a machine, fast and without losing a byte."""

from __future__ import annotations

import logging

from ._version import __version__ as __version__
from .errors import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    DownloadAborted,
    DownloadError,
    IncompleteDownloadError,
    InvalidInputError,
    RemoteChangedError,
    SizeMismatchError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from .sources.http import http_download

logging.getLogger("dlutils").addHandler(logging.NullHandler())

__all__ = [
    "CacheMismatchWarning",
    "ChecksumMismatchError",
    "DownloadAborted",
    "DownloadError",
    "IncompleteDownloadError",
    "InvalidInputError",
    "RemoteChangedError",
    "SizeMismatchError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "http_download",
]
