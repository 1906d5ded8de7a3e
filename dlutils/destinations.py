"""Where dlutils may write: local paths only, checked once for every entry point.

A destination that looks like a URL (``s3://bucket/prefix/``, ``gs://...``,
``memory://...``, ``file://...``) would otherwise become a local folder named
``s3:/bucket/prefix/`` and the download would report success with the bucket empty.
Object-store destinations are planned (issue 14); until then they are refused, before
any request, with an error naming the value given. ``file://`` URLs are refused too,
with the local path they name shown in the message: one spelling of a destination,
the path itself, keeps what a job shows and returns the same everywhere.

A Windows drive letter (``C:\\data``, ``C:/data``) is a path, not a URL.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import InvalidInputError

__all__ = ["check_local"]

#: ``scheme://``: a scheme of two characters or more (one letter is a drive, ``C://x``).
_URL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]+)://")


def check_local(dest: Any, what: str = "dest") -> None:
    """Raise :class:`~dlutils.InvalidInputError` when ``dest`` is a URL, not a local path.

    ``what`` is the name of the argument, as the message shows it.

    Examples
    --------
    >>> check_local("data/")
    >>> check_local("C:/data")
    >>> check_local("s3://bucket/prefix/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: dest 's3://bucket/prefix/' is not a local folder: ...
    """
    if dest is None or not isinstance(dest, (str, os.PathLike)):
        return
    text = os.fspath(dest)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    match = _URL.match(text)
    if match is None:
        return
    if match.group(1).lower() == "file":
        path = unquote(urlsplit(text.strip()).path) or "/"
        raise InvalidInputError(
            f"{what} {text!r} is a file:// URL, not a path: give the local path itself, "
            f"such as {what}={path!r}"
        )
    raise InvalidInputError(
        f"{what} {text!r} is not a local folder: dlutils writes to local paths only for now "
        "(object-store destinations are planned); download to a local folder, then upload"
    )
