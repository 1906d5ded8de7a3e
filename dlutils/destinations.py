"""Where dlutils may write: a local path or a supported fsspec URL, checked once per entry point.

A destination is a local path, a ``file://`` URL (the local path it names: the normal
engine), or an object store dlutils streams into (:mod:`dlutils.stores`): ``s3://``
(needs ``s3fs``, the ``dlutils-download[s3fs]`` extra) and ``memory://`` (fsspec's
in-process store). Anything else that looks like a URL (``gs://``, ``ftp://``,
``hdfs://``, ...) is refused before any request, with an error naming the value and
what is supported, instead of becoming a local folder named ``ftp:``.

A Windows drive letter (``C:\\data``, ``C:/data``) is a path, not a URL.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import InvalidInputError
from .names import redact

__all__ = ["check_local", "local_path", "resolve", "is_store", "STORE_SCHEMES"]

#: ``scheme://``: a scheme of two characters or more (one letter is a drive, ``C://x``).
_URL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]+)://")

#: Object stores dlutils streams into: scheme -> (module it needs, pip extra or None).
STORE_SCHEMES: dict[str, tuple[str, str | None]] = {
    "s3": ("s3fs", "s3fs"),
    "memory": ("fsspec", None),
}

_SUPPORTED = "a local path, a file:// URL, or " + ", ".join(f"{s}://" for s in STORE_SCHEMES)
#: Why a known scheme is not a destination yet (said in the error).
_NOT_YET = {
    "gs": "gcsfs is not among the stores dlutils is tested with yet; download to a local "
    "folder, then upload",
}


def _text(dest: Any) -> str | None:
    if dest is None or not isinstance(dest, (str, os.PathLike)):
        return None
    text = os.fspath(dest)
    return os.fsdecode(text) if isinstance(text, bytes) else text


def _scheme(text: str) -> str | None:
    match = _URL.match(text)
    return match.group(1).lower() if match else None


def is_store(dest: Any) -> bool:
    """Whether ``dest`` is an object-store URL dlutils streams into (``s3://``, ``memory://``).

    Examples
    --------
    >>> is_store("memory://bucket/data/"), is_store("data/"), is_store("file:///tmp/x")
    (True, False, False)
    """
    text = _text(dest)
    return text is not None and _scheme(text) in STORE_SCHEMES


def resolve(dest: Any, what: str = "dest") -> Any:
    """``dest`` as dlutils uses it: the local path, or the store URL; refuse anything else.

    A ``file://`` URL becomes the local path it names; a supported store URL is returned
    as given once the package it needs imports (else an :class:`~dlutils.InvalidInputError`
    naming the pip extra, before anything starts); another URL raises
    :class:`~dlutils.InvalidInputError` naming it and listing what is supported. Anything
    that is not a string or path is returned unchanged (the caller checks it).

    Examples
    --------
    >>> resolve("data/")
    'data/'
    >>> resolve("file:///tmp/data/")
    '/tmp/data/'
    >>> resolve("memory://bucket/data/")
    'memory://bucket/data/'
    >>> resolve("ftp://example.org/pub/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: dest 'ftp://example.org/pub/' is not a destination ...
    """
    text = _text(dest)
    if text is None:
        return dest
    scheme = _scheme(text)
    if scheme is None:
        return dest
    if scheme == "file":
        parts = urlsplit(text.strip())
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"{what} {redact(text)!r} names host {parts.netloc!r}: a file:// destination is "
                "a local path (file:///data/ or file://localhost/data/)"
            )
        return unquote(parts.path) or "/"
    if scheme in STORE_SCHEMES:
        module, extra = STORE_SCHEMES[scheme]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            hint = f'pip install "dlutils-download[{extra}]"' if extra else f"pip install {module}"
            raise InvalidInputError(
                f"{what} {redact(text)!r} needs the {module} package, which cannot be imported "
                f"({exc}): {hint}"
            ) from exc
        return text.strip()
    reason = _NOT_YET.get(scheme, "")
    raise InvalidInputError(
        f"{what} {redact(text)!r} is not a destination dlutils writes to ({scheme}:// is not "
        f"supported{': ' + reason if reason else ''}); use {_SUPPORTED}"
    )


def check_local(dest: Any, what: str = "dest") -> None:
    """Raise :class:`~dlutils.InvalidInputError` when ``dest`` is a URL, not a local path.

    For the places that write local files only (the sources below :func:`resolve`, and
    sources that do not stream into stores yet). ``what`` is the name of the argument,
    as the message shows it.

    Examples
    --------
    >>> check_local("data/")
    >>> check_local("C:/data")
    >>> check_local("s3://bucket/prefix/")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: dest 's3://bucket/prefix/' is not a local folder: ...
    """
    text = _text(dest)
    if text is None:
        return
    scheme = _scheme(text)
    if scheme is None:
        return
    if scheme == "file":
        path = resolve(text, what)
        raise InvalidInputError(
            f"{what} {redact(text)!r} is a file:// URL, not a path: give the local path itself, "
            f"such as {what}={path!r}"
        )
    if scheme in STORE_SCHEMES:
        raise InvalidInputError(
            f"{what} {redact(text)!r} is not a local folder: here dlutils writes to local paths "
            "only (every pure function and every job streams into a store when given one "
            "as its destination: http_download(link, 's3://bucket/prefix/'))"
        )
    resolve(text, what)  # raises, naming what is supported


def local_path(dest: Any, what: str = "dest") -> Any:
    """``dest`` as a local path (a ``file://`` URL becomes its path); refuse any other URL.

    For code that writes local files only.

    Examples
    --------
    >>> local_path("file:///tmp/data/"), local_path("data/")
    ('/tmp/data/', 'data/')
    """
    resolved = resolve(dest, what)
    if is_store(resolved):
        check_local(resolved, what)  # raises, saying where stores are taken
    return resolved
