"""HuggingFace links: ``hf://`` parsed into a repository, revision and path; endpoint, token."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from ...errors import (
    DownloadError,
    InvalidInputError,
    UnsupportedSchemeError,
)
from ...names import redact

log = logging.getLogger("dlutils")

DEFAULT_ENDPOINT = "https://huggingface.co"
#: The branch the Hub's parquet export lives on.
PARQUET_REVISION = "refs/convert/parquet"

_FORM = "'hf://datasets/<org>/<name>[@revision][/path/in/repo]' (a model: 'hf://<org>/<name>')"
_EXAMPLE = "'hf://datasets/rajpurkar/squad@main/plain_text/train-00000-of-00001.parquet'"
_SPECIAL_REF = re.compile(r"refs/convert/\w+|refs/pr/\d+")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_BLOB_ID = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_PREFIXES = {"dataset": "datasets/", "model": ""}


class HfAuthError(DownloadError, requests.HTTPError):
    """The Hub refused (401/403): the repository is private or gated and needs a token with
    access. Both a :class:`~dlutils.DownloadError` (a failure with a fix to tell) and the
    :class:`requests.HTTPError` that callers of every other source already catch for 401
    and 403, with its ``response``. Its message never contains the token."""


# --------------------------------------------------------------------------- links


@dataclass(frozen=True)
class HfRef:
    """One repository at one revision, and optionally a path in it.

    Attributes
    ----------
    repo_type : str
        ``"dataset"`` or ``"model"``.
    repo_id : str
        ``"<org>/<name>"``, or a bare ``"<name>"`` (the Hub redirects old ids).
    revision : str
        A branch, tag or commit; ``"main"`` by default.
    path : str or None
        A path in the repository (a file, or a folder when it ends in ``/``).

    Examples
    --------
    >>> from dlutils.sources.hf import HfRef
    >>> HfRef("dataset", "org/name", "refs/pr/1", "data/train.csv").link
    'hf://datasets/org/name@refs/pr/1/data/train.csv'
    >>> HfRef("model", "org/bert", "v1/beta").link
    'hf://org/bert@v1%2Fbeta'
    """

    repo_type: str
    repo_id: str
    revision: str = "main"
    path: str | None = None

    def __post_init__(self) -> None:
        if self.repo_type not in _PREFIXES:
            raise InvalidInputError(
                f"repo_type {self.repo_type!r} is not valid: use 'dataset' or 'model'"
            )
        _check_repo_id(self.repo_id, f"repository id {self.repo_id!r}")
        if not isinstance(self.revision, str) or not self.revision.strip():
            raise InvalidInputError(
                f"revision {self.revision!r} is not valid: give a branch, tag or commit, "
                "such as 'main', 'v1.0' or 'refs/pr/1'"
            )
        if any(ord(c) < 32 for c in self.revision):
            raise InvalidInputError(f"revision {self.revision!r} has a control character")
        if self.path is not None and (not isinstance(self.path, str) or not self.path.strip("/")):
            raise InvalidInputError(f"path {self.path!r} is not valid: give 'folder/file.ext'")

    @property
    def link(self) -> str:
        """The ``hf://`` link, always with its revision, as HfFileSystem writes it."""
        revision = self.revision
        if not _SPECIAL_REF.fullmatch(revision):
            revision = quote(revision, safe="")
        tail = f"/{self.path}" if self.path else ""
        return f"hf://{_PREFIXES[self.repo_type]}{self.repo_id}@{revision}{tail}"


def _check_repo_id(repo_id: Any, what: str) -> None:
    parts = repo_id.split("/") if isinstance(repo_id, str) else [None]
    bad = len(parts) > 2 or any(
        not isinstance(p, str)
        or not _NAME.match(p)
        or "--" in p
        or ".." in p
        or p[0] in "-."
        or p[-1] in "-."
        for p in parts
    )
    if bad:
        raise InvalidInputError(
            f"{what} is not valid: an id is '<org>/<name>' (letters, digits, '-', '_', '.'; no "
            f"'--' or '..'), written in a link as {_FORM}, for instance {_EXAMPLE}"
        )


def parse_hf(link: str) -> HfRef:
    """Split an ``hf://`` link into repository type, id, revision and path.

    Parameters
    ----------
    link : str
        ``hf://datasets/<org>/<name>[@revision][/path]`` for a dataset;
        ``hf://[models/]<org>/<name>[@revision][/path]`` for a model. A bare id without an
        org (``hf://gpt2``) is read as such when nothing follows it but ``@revision``. The
        revision is percent-decoded (``@refs%2Fpr%2F1``); ``refs/convert/<word>`` and
        ``refs/pr/<n>`` may also be written plainly. The path is taken literally.

    Returns
    -------
    HfRef
        With ``revision="main"`` when the link names none, and ``path=None`` when it names
        no path.

    Raises
    ------
    dlutils.InvalidInputError
        For a malformed link (:class:`~dlutils.UnsupportedSchemeError` for another scheme).

    Examples
    --------
    >>> from dlutils.sources.hf import parse_hf
    >>> parse_hf("hf://datasets/org/name@v1.0/data/train.csv")
    HfRef(repo_type='dataset', repo_id='org/name', revision='v1.0', path='data/train.csv')
    >>> parse_hf("hf://gpt2@refs%2Fpr%2F1")
    HfRef(repo_type='model', repo_id='gpt2', revision='refs/pr/1', path=None)
    >>> parse_hf("hf://datasets/org/na..me")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: hf link 'hf://datasets/org/na..me': repository id \
'org/na..me' is not valid: an id is '<org>/<name>' (letters, digits, '-', '_', '.'; no '--' \
or '..'), written in a link as 'hf://datasets/<org>/<name>[@revision][/path/in/repo]' (a \
model: 'hf://<org>/<name>'), for instance \
'hf://datasets/rajpurkar/squad@main/plain_text/train-00000-of-00001.parquet'
    """
    if not isinstance(link, str) or not link.strip():
        raise InvalidInputError(
            f"hf link {link!r} is not valid: write it as {_FORM}, for instance {_EXAMPLE}"
        )
    scheme, sep, rest = link.partition("://")
    if not sep or scheme.lower() != "hf":
        raise UnsupportedSchemeError(
            f"link {redact(link)!r} is not an hf:// link; write it as {_FORM}, "
            f"for instance {_EXAMPLE}"
        )
    repo_type = "model"
    head, slash, tail = rest.partition("/")
    if head == "spaces":
        raise InvalidInputError(
            f"hf link {link!r} names a Space; dlutils reads datasets and models: {_FORM}"
        )
    if head in ("datasets", "models"):
        if not slash:
            raise InvalidInputError(
                f"hf link {link!r} names no repository: write it as {_FORM}, "
                f"for instance {_EXAMPLE}"
            )
        repo_type, rest = head[:-1], tail
    at = rest.find("@")
    revision = "main"
    path: str | None
    if at >= 0 and rest[:at].count("/") <= 1:
        repo_id, after = rest[:at], rest[at + 1 :]
        special = _SPECIAL_REF.match(after)
        if special and after[special.end() : special.end() + 1] in ("", "/"):
            raw, path = special.group(), after[special.end() + 1 :]
        else:
            raw, _, path = after.partition("/")
        revision = unquote(raw)
        if not revision:
            raise InvalidInputError(
                f"hf link {link!r} has an empty revision after '@': write one such as "
                f"'@main', '@v1.0' or '@refs%2Fpr%2F1', for instance {_EXAMPLE}"
            )
    else:
        parts = rest.split("/", 2)
        if len(parts) == 2 and not parts[1]:
            parts = parts[:1]
        repo_id = "/".join(parts[:2])
        path = parts[2] if len(parts) == 3 else None
    what = f"hf link {link!r}: repository id {repo_id!r}"
    _check_repo_id(repo_id, what)
    try:
        return HfRef(repo_type, repo_id, revision, path or None)
    except InvalidInputError as exc:
        raise InvalidInputError(f"hf link {link!r}: {exc}; for instance {_EXAMPLE}") from exc


def hf_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The Hub's address: ``HF_ENDPOINT`` when set (a mirror), else ``https://huggingface.co``.

    Examples
    --------
    >>> from dlutils.sources.hf import hf_endpoint
    >>> hf_endpoint({})
    'https://huggingface.co'
    >>> hf_endpoint({"HF_ENDPOINT": "https://hf-mirror.com/"})
    'https://hf-mirror.com'
    """
    environ = os.environ if environ is None else environ
    value = (environ.get("HF_ENDPOINT") or "").strip().rstrip("/")
    if not value:
        return DEFAULT_ENDPOINT
    return _check_endpoint(value, "HF_ENDPOINT")


def _check_endpoint(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"{what} {redact(value)!r} is not an http(s) address such as 'https://huggingface.co'"
        )
    return value.rstrip("/")


def _token(token: Any, environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """``(token, where it came from)``; the token itself never goes into a message."""
    if token is False:
        return None, "none"
    if token is not None and token is not True:
        if not isinstance(token, str):
            raise InvalidInputError(
                f"token of type {type(token).__name__} is not valid: give a string 'hf_...', "
                "False for anonymous access, or None to read HF_TOKEN"
            )
        cleaned = token.replace("\r", "").replace("\n", "").strip()
        return (cleaned or None), "token="
    environ = os.environ if environ is None else environ
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        cleaned = (environ.get(name) or "").replace("\r", "").replace("\n", "").strip()
        if cleaned:
            return cleaned, name
    return None, "none"


def hf_token(
    token: str | bool | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The token to send: ``token`` if given, else ``HF_TOKEN``, else ``HUGGING_FACE_HUB_TOKEN``.

    Whitespace and line breaks are removed, as huggingface_hub does; an empty value is no
    token. ``token=False`` means anonymous access whatever the environment says.

    Examples
    --------
    >>> from dlutils.sources.hf import hf_token
    >>> hf_token(None, {"HUGGING_FACE_HUB_TOKEN": " hf_abc\\n"})
    'hf_abc'
    >>> hf_token(False, {"HF_TOKEN": "hf_abc"}) is None
    True
    """
    return _token(token, environ)[0]


def resolve_url(ref: HfRef | str, *, endpoint: str | None = None) -> str:
    """The Hub's download URL of one file: ``{endpoint}/{datasets/}<id>/resolve/<rev>/<path>``.

    Examples
    --------
    >>> from dlutils.sources.hf import resolve_url
    >>> resolve_url("hf://datasets/o/n@refs/convert/parquet/c/train/0000.parquet",
    ...             endpoint="https://huggingface.co")
    'https://huggingface.co/datasets/o/n/resolve/refs%2Fconvert%2Fparquet/c/train/0000.parquet'
    """
    ref = ref if isinstance(ref, HfRef) else parse_hf(ref)
    if not ref.path or ref.path.endswith("/"):
        raise InvalidInputError(
            f"hf link {ref.link!r} names no file; write it as {_FORM}, for instance {_EXAMPLE}"
        )
    base = _check_endpoint(endpoint, "endpoint") if endpoint else hf_endpoint()
    revision = quote(ref.revision, safe="")
    return f"{base}/{_PREFIXES[ref.repo_type]}{ref.repo_id}/resolve/{revision}/{quote(ref.path)}"
