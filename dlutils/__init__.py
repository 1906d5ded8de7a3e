"""dlutils: download datasets and models onto a machine, fast and without losing a byte."""

from __future__ import annotations

import logging

from .errors import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    DownloadAborted,
    DownloadError,
    IncompleteDownloadError,
    InvalidInputError,
    RemoteChangedError,
    UnsafePathError,
    UnsupportedSchemeError,
)

__version__ = "0.1.0"

logging.getLogger("dlutils").addHandler(logging.NullHandler())

__all__ = [
    "CacheMismatchWarning",
    "ChecksumMismatchError",
    "DownloadAborted",
    "DownloadError",
    "IncompleteDownloadError",
    "InvalidInputError",
    "RemoteChangedError",
    "UnsafePathError",
    "UnsupportedSchemeError",
]
