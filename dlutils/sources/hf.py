"""HuggingFace source: ``hf://`` datasets and models read through the Hub's HTTP API."""

# What this module relies on, from huggingface_hub and the Hub (re-implemented, not copied):
#
# * Links follow huggingface_hub's HfFileSystem (hf_file_system.py ``resolve_path``):
#   ``[datasets/|models/]<id>[@<revision>][/<path in repo>]``. The revision is
#   percent-decoded; ``refs/convert/<word>`` and ``refs/pr/<n>`` may be written as they
#   are, any other revision with a ``/`` is written encoded (``refs%2Fpr%2F1`` works too).
# * Files: ``{endpoint}/{datasets/}<id>/resolve/<quote(revision, safe="")>/<quote(path)>``
#   (file_download.py ``hf_hub_url``). A HEAD there (``get_hf_file_metadata``) answers a
#   Git file with 200, its ``ETag`` (the git blob id) and ``Content-Length``, and an LFS
#   file with a redirect to the storage host carrying ``X-Linked-Size`` and
#   ``X-Linked-Etag`` (``"<sha256>"``); a GET is redirected the same way. Redirects within
#   the hub (a renamed repository) keep the credentials, as huggingface_hub's "follow
#   relative redirects" does; the storage host's signed link needs none and gets none.
# * Listing: ``GET {endpoint}/api/{datasets|models}/<id>/tree/<revision>[/<folder>]``
#   ``?recursive=true&expand=false`` (hf_api.py ``list_repo_tree``), pages chained by a
#   ``Link: <...>; rel="next"`` header (utils/_pagination.py). Entries: ``type``
#   (``file``/``directory``), ``path``, ``size``, ``oid`` (git blob id) and, for LFS
#   files, ``lfs: {oid: <sha256>, size}``.
# * The parquet export (dataset-viewer docs/source/parquet.md): ``GET {endpoint}/api/
#   datasets/<id>/parquet`` answers ``{config: {split: [url, ...]}}``; the files live on
#   the branch ``refs/convert/parquet`` as ``<config>/<split>/NNNN.parquet`` (a partial
#   conversion as ``<config>/partial-<split>/``). AIStore's downloader (cmd/cli/cli/
#   hf_utils.go, docs/cli/download.md) fetches those urls by their base name, so
#   ``train/0.parquet`` and ``validation/0.parquet`` collide there, and it ignores the
#   revision. Here the export's configs and splits are listed, and the branch's tree gives
#   each file with its folders, its size and its sha256: names never collide.
# * Auth: ``token=``, else ``HF_TOKEN``, else ``HUGGING_FACE_HUB_TOKEN`` (utils/_auth.py,
#   cleaned of whitespace), as ``Authorization: Bearer``; ``HF_ENDPOINT`` names the hub
#   (constants.py). The token file of ``huggingface-cli login`` is not read. The hub
#   answers 401 to an anonymous request for a private or gated repository (and for one
#   that does not exist), 403 to a token without access to a gated one; ``X-Error-Code``
#   (``GatedRepo``, ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) says which.

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests

from ..checksums import parse_checksum
from ..errors import (
    DownloadAborted,
    DownloadError,
    InvalidInputError,
    JobFailedError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from ..freshness import Manifest, ObjectAttrs, attrs_from_headers
from ..names import check_name, join_inside, redact
from ..progress import Callback, TqdmCallback
from ..redaction import redacting
from ..retry import RetryPolicy
from ..transfer import SEGMENT_THRESHOLD, Fetched, call_with_retries, download
from ..transports import choose
from ._common import hit, is_current, names_a_folder, record, verify_cached, with_verified
from .http import DEFAULT_TIMEOUT, HttpRemote, default_session

__all__ = [
    "HfRef",
    "HfAuthError",
    "parse_hf",
    "hf_endpoint",
    "hf_token",
    "resolve_url",
    "stat_hf",
    "list_hf",
    "fetch_hf",
    "hf_download",
    "DEFAULT_ENDPOINT",
    "PARQUET_REVISION",
]

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
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOPS = 10
#: Headers that may follow a redirect off the hub: what the transfer needs, nothing that
#: could identify the user (``headers=`` and session-level headers stay on the hub).
_PORTABLE = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "accept-encoding", "user-agent"}
)
#: A stored link that answers one of these has expired: ask the hub for a fresh one.
_STALE_LINK = frozenset({401, 403, 404, 410})


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


# --------------------------------------------------------------------------- requests


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _no_auth(request: Any) -> Any:
    """An auth that adds nothing: stops ``session.auth`` and ``.netrc`` off the hub."""
    return request


def _discard(response: requests.Response) -> None:
    """Read a small body to its end (the connection goes back to the pool), then close."""
    try:
        response.raw.read(1 << 16, decode_content=False)
    except Exception:  # noqa: BLE001 - only the connection's reuse is at stake
        pass
    response.close()


class _Hub:
    """Requests to one hub: its address, the token, and the rule of what leaves it.

    Credentials (the Bearer token, ``headers=``, session-level headers) go to the hub's
    own origin (scheme, host, port) only. Every redirect is followed here, one hop at a
    time, so each request's headers are chosen for the host it goes to; requests' own
    redirect handling (which would keep custom headers across hosts) is never used.
    """

    def __init__(
        self,
        endpoint: str | None,
        token: Any,
        headers: Mapping[str, str] | None,
        session: requests.Session | None,
        timeout: Any,
        retry: RetryPolicy | None = None,
        abort: threading.Event | None = None,
        sleep: Callable[[float], Any] | None = None,
    ):
        self.endpoint = _check_endpoint(endpoint, "endpoint") if endpoint else hf_endpoint()
        self.origin = _origin(self.endpoint)
        self.token, self.token_from = _token(token)
        self.headers = dict(headers or {})
        self._session = session
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.retry, self.abort, self.sleep = retry or RetryPolicy(), abort, sleep
        self.classify = HttpRemote(self.endpoint, session=session).classify

    @property
    def session(self) -> requests.Session:
        return self._session if self._session is not None else default_session()

    def on_hub(self, url: str) -> bool:
        return _origin(url) == self.origin

    def headers_for(self, url: str, wanted: Mapping[str, str]) -> dict[str, str | None]:
        if self.on_hub(url):
            chosen: dict[str, str | None] = {**self.headers, **wanted}
            if self.token is not None:
                chosen = {k: v for k, v in chosen.items() if k.lower() != "authorization"}
                chosen["Authorization"] = f"Bearer {self.token}"
            return chosen
        chosen = {k: v for k, v in wanted.items() if k.lower() in _PORTABLE}
        for name in self.session.headers:  # None removes a session-level header
            if name.lower() not in _PORTABLE:
                chosen[name] = None
        return chosen

    def send(
        self, method: str, url: str, wanted: Mapping[str, str], *, stream: bool, offsite: bool
    ) -> tuple[requests.Response, str]:
        """``(response, its url)``, redirects followed; ``offsite=False`` stops at the first
        redirect off the hub and returns it (a HEAD's answer is the hub's redirect)."""
        for _ in range(_MAX_HOPS + 1):
            response = self.session.request(
                method,
                url,
                headers=self.headers_for(url, wanted),
                stream=stream,
                timeout=self.timeout,
                allow_redirects=False,
                auth=None if self.on_hub(url) else _no_auth,
            )
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response, url
            following = urljoin(url, location)
            if not offsite and not self.on_hub(following):
                return response, url
            _discard(response)
            url = following
        raise DownloadError(f"{redact(url)} redirected more than {_MAX_HOPS} times")

    def call(self, func: Callable[[], Any]) -> Any:
        return call_with_retries(
            func, classify=self.classify, retry=self.retry, abort=self.abort, sleep=self.sleep
        )

    def get_json(
        self, url: str, what: str, ref: HfRef | None = None
    ) -> tuple[Any, requests.Response]:
        def once() -> tuple[Any, requests.Response]:
            response, _ = self.send(
                "GET", url, {"Accept": "application/json"}, stream=False, offsite=True
            )
            if response.status_code >= 400:
                raise self.error(response, what, ref)
            try:
                return response.json(), response
            except ValueError as exc:
                raise DownloadError(
                    f"{what}: the hub did not answer with JSON: {response.content[:200]!r}"
                ) from exc

        return self.call(once)

    def error(self, response: requests.Response, what: str, ref: HfRef | None = None):
        """The error for a refused request, naming ``what`` (never the token)."""
        status, reason = response.status_code, response.reason
        code = response.headers.get("X-Error-Code", "")
        # hf_download reads a model by default (it read a dataset before): say so when unsure
        model = ref is not None and ref.repo_type == "model" and code in ("RepoNotFound", "")
        dataset_hint = "; a dataset needs repo_type='dataset' (hf://datasets/... in a link)"
        if status in (401, 403) and self.on_hub(response.url or self.endpoint):
            told = self._auth_message(status, reason, code, what, ref)
            if model and status == 401 and self.token is None:
                told += dataset_hint
            return HfAuthError(told, response=response)
        hint = {
            "RepoNotFound": "the repository does not exist (check the id and repo_type)",
            "RevisionNotFound": "the repository has no such revision",
            "EntryNotFound": "the revision has no such file or folder",
        }.get(code, "")
        if model and status == 404 and code == "RepoNotFound":
            hint = "no such model" + dataset_hint
        kind = "Client" if status < 500 else "Server"
        suffix = f" ({hint})" if hint else ""
        return requests.HTTPError(
            f"{status} {kind} Error: {reason} for {what}{suffix}", response=response
        )

    def _auth_message(
        self, status: int, reason: str, code: str, what: str, ref: HfRef | None
    ) -> str:
        repo = f"the {ref.repo_type} {ref.repo_id}" if ref else "this repository"
        if self.token is None:
            told = (
                f"{what} needs a token with access to {repo}: it is private or gated (or does "
                "not exist), and no token was sent. Pass token='hf_...' or set HF_TOKEN"
            )
        else:
            source = "the token given" if self.token_from == "token=" else self.token_from
            told = (
                f"{what} needs a token with access to {repo}, and {source} was refused: it "
                "is invalid or has no access. Use a token with (read) access to it"
            )
        if code == "GatedRepo" and ref is not None:
            page = f"{self.endpoint}/{_PREFIXES[ref.repo_type]}{ref.repo_id}"
            told += f"; {repo} is gated: accept its conditions at {page} first"
        return f"{status} {reason}: {told}"


class _Hops:
    """What :class:`~dlutils.sources.http.HttpRemote` takes for a session: sends each GET to
    the hub and follows the redirect to the storage host by :meth:`_Hub.send`, keeping the
    storage link for the next ranges of the same file (asking the hub again once it has
    expired)."""

    def __init__(self, hub: _Hub, location: str | None = None):
        self.hub, self.location = hub, location

    def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, stream: bool = False, **_: Any
    ) -> requests.Response:
        wanted = dict(headers or {})
        location = self.location
        if location is not None:
            response, _ = self.hub.send("GET", location, wanted, stream=stream, offsite=True)
            if response.status_code not in _STALE_LINK:
                return response
            _discard(response)
            self.location = None
            log.debug("the storage link of %s expired; asking the hub again", redact(url))
        response, final = self.hub.send("GET", url, wanted, stream=stream, offsite=True)
        if not self.hub.on_hub(final) and response.status_code < 400:
            self.location = final
        return response


class _CurlHops:
    """A resolve link over libcurl (a :class:`~dlutils.transfer.Remote`), as :class:`_Hops`.

    A request to the hub carries its headers and the token; libcurl follows the redirect,
    sending the storage host only the transfer's own headers. The storage link it lands
    on is kept for the next ranges of the file, and asked of the hub again once expired.
    """

    def __init__(self, hub: _Hub, url: str, location: str | None, headers: Any):
        self.hub, self.url, self.location = hub, url, location
        self.headers = dict(headers or {})
        self.display = redact(url)

    def open(self, start: int = 0, end: int | None = None, *, if_range: str | None = None) -> Any:
        location = self.location
        if location is not None:
            try:
                return self._remote(location).open(start, end, if_range=if_range)
            except requests.HTTPError as exc:
                if exc.response is None or exc.response.status_code not in _STALE_LINK:
                    raise
            self.location = None
            log.debug("the storage link of %s expired; asking the hub again", self.display)
        return self._remote(self.url).open(start, end, if_range=if_range)

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        return self.hub.classify(exc)

    def _remote(self, url: str) -> Any:
        from ..transports.curl import CurlRemote

        wanted = self.hub.headers_for(url, self.headers)
        return CurlRemote(
            url,
            headers={k: v for k, v in wanted.items() if v is not None},
            timeout=self.hub.timeout,
            landed=self._landed,
        )

    def _landed(self, final: str) -> None:
        if not self.hub.on_hub(final):
            self.location = final


def _stat(hub: _Hub, ref: HfRef, url: str) -> tuple[ObjectAttrs, str | None]:
    """A HEAD of the file: its attributes, and the storage link when the hub redirects."""

    def once() -> tuple[requests.Response, str]:
        response, final = hub.send(
            "HEAD", url, {"Accept-Encoding": "identity"}, stream=False, offsite=False
        )
        response.close()
        if response.status_code >= 400:
            raise hub.error(response, ref.link, ref)
        return response, final

    response, final = hub.call(once)
    headers = response.headers
    location = None
    if response.status_code in _REDIRECTS and headers.get("Location"):
        location = urljoin(final, headers["Location"])
        if "X-Linked-Size" not in headers:  # the redirect's own length says nothing
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    attrs = attrs_from_headers(ref.link, headers)
    # A git blob id or a sha256 names the content: strong, even when sent as weak (W/).
    opaque = (attrs.etag or "").removeprefix("W/").strip('"')
    if _BLOB_ID.match(opaque):
        attrs = replace(attrs, etag=f'"{opaque.lower()}"')
    return attrs, location


def stat_hf(
    link: str | HfRef,
    *,
    token: str | bool | None = None,
    session: requests.Session | None = None,
    timeout: Any = None,
    headers: Mapping[str, str] | None = None,
    endpoint: str | None = None,
) -> ObjectAttrs:
    """Ask the Hub (one HEAD) for a file's size and checksum.

    Returns
    -------
    ObjectAttrs
        ``size`` (``X-Linked-Size`` of an LFS file), ``etag`` and, for an LFS file,
        ``sha256``; ``source`` is the ``hf://`` link at its revision.

    Raises
    ------
    HfAuthError
        401/403: the repository needs a token with access.
    requests.HTTPError
        Another refusal, 404 for a missing repository, revision or file.
    """
    ref = link if isinstance(link, HfRef) else parse_hf(link)
    hub = _Hub(endpoint, token, headers, session, timeout)
    return _stat(hub, ref, resolve_url(ref, endpoint=hub.endpoint))[0]


# --------------------------------------------------------------------------- listing


def _patterns(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else value
    try:
        values = tuple(values)
    except TypeError:
        values = (value,)
    if not all(isinstance(p, str) and p for p in values):
        raise InvalidInputError(
            f"{what}={value!r} is not valid: give a glob pattern or a list of them, "
            "such as '*.parquet' or ['data/*', '*.json']"
        )
    # As huggingface_hub's filter_repo_objects: a pattern ending in '/' means its folder.
    return tuple(p + "*" if p.endswith("/") else p for p in values)


def _selected(path: str, include: tuple[str, ...] | None, exclude: tuple[str, ...] | None) -> bool:
    """``fnmatch`` rules, case-sensitive everywhere: ``*`` also matches ``/``."""
    if include is not None and not any(fnmatch.fnmatchcase(path, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatchcase(path, p) for p in exclude))


def _entry_attrs(ref: HfRef, path: str, item: Mapping[str, Any]) -> ObjectAttrs:
    size = item.get("size")
    lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else {}
    sha = lfs.get("oid") or lfs.get("sha256")
    sha = sha.lower() if isinstance(sha, str) and _SHA256.match(sha) else None
    if isinstance(lfs.get("size"), int):
        size = lfs["size"]
    oid = item.get("oid") if isinstance(item.get("oid"), str) else None
    etag = sha or oid  # as the hub's (X-Linked-)ETag: the sha256 of LFS, else the blob id
    return ObjectAttrs(
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        sha256=sha,
        etag=f'"{etag}"' if etag else None,
        source=replace(ref, path=path).link,
    )


def _tree(hub: _Hub, ref: HfRef, folder: str) -> Iterator[Any]:
    revision = quote(ref.revision, safe="")
    url = f"{hub.endpoint}/api/{ref.repo_type}s/{ref.repo_id}/tree/{revision}"
    if folder:
        url += "/" + quote(folder, safe="")
    url += "?recursive=true&expand=false"
    what = f"listing {replace(ref, path=(folder + '/') if folder else None).link}"
    seen = {url}
    while True:
        page, response = hub.get_json(url, what, ref)
        if not isinstance(page, list):
            raise DownloadError(f"{what}: expected a JSON list of entries, got {page!r:.80}")
        yield from page
        following = response.links.get("next", {}).get("url")
        if not following:
            return
        url = urljoin(url, following)
        if url in seen:
            raise DownloadError(f"{what}: the hub sent page {redact(url)} twice")
        seen.add(url)


def _parquet_ref(ref: HfRef) -> HfRef:
    if ref.repo_type != "dataset":
        raise InvalidInputError(
            f"parquet=True reads a dataset's parquet export; {ref.link!r} is a model"
        )
    revision = ref.revision
    if revision == "main":
        return replace(ref, revision=PARQUET_REVISION)
    if revision == PARQUET_REVISION or _COMMIT.match(revision):
        return replace(ref, revision=revision)
    raise InvalidInputError(
        f"parquet=True with revision {revision!r}: the Hub exports the default branch only, "
        f"on revision {PARQUET_REVISION!r}; leave the revision as 'main' (or give "
        f"{PARQUET_REVISION!r} or one of its commits), or pass parquet=False to download "
        f"revision {revision!r} itself"
    )


def _parquet_splits(hub: _Hub, ref: HfRef) -> dict[tuple[str, str], int]:
    """``{(config, folder): files the export lists}``; folder is the split, or
    ``partial-<split>`` where a partial conversion puts it."""
    url = f"{hub.endpoint}/api/datasets/{ref.repo_id}/parquet"
    what = f"the parquet export of {replace(ref, path=None).link}"
    export, _ = hub.get_json(url, what, ref)
    if not isinstance(export, dict):
        raise DownloadError(f"{what}: expected {{config: {{split: [urls]}}}}, got {export!r:.80}")
    splits: dict[tuple[str, str], int] = {}
    for config, by_split in export.items():
        if not isinstance(by_split, dict):
            raise DownloadError(f"{what}: config {config!r} maps to {by_split!r:.80}")
        for split, urls in by_split.items():
            count = len(urls) if isinstance(urls, list) else 0
            splits[(str(config), str(split))] = count
            splits[(str(config), f"partial-{split}")] = count
    return splits


def list_hf(
    uri_or_ref: str | HfRef,
    prefix: str = "",
    suffix: str = "",
    *,
    token: str | bool | None = None,
    session: requests.Session | None = None,
    timeout: Any = None,
    parquet: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    revision: str | None = None,
    headers: Mapping[str, str] | None = None,
    endpoint: str | None = None,
) -> Iterator[tuple[str, ObjectAttrs]]:
    """List a repository's files, recursively, page by page, as ``(path, ObjectAttrs)``.

    Parameters
    ----------
    uri_or_ref : str or HfRef
        ``hf://datasets/<org>/<name>[@revision][/folder]`` or a model's link; a path in it
        is a folder to list.
    prefix, suffix : str
        Keep paths that start with the folder plus ``prefix`` and end with ``suffix``.
    token, session, timeout, headers, endpoint
        As for :func:`fetch_hf`.
    parquet : bool
        List the dataset's parquet export instead (see Notes).
    include, exclude : str or list of str, optional
        Glob patterns (``fnmatch``, case-sensitive; ``*`` matches ``/`` too; a pattern
        ending in ``/`` means everything in that folder) on the path in the repository:
        a path is kept when it matches an ``include`` pattern (any path, without
        ``include``) and no ``exclude`` pattern.
    revision : str, optional
        Replaces the link's revision.

    Returns
    -------
    Iterator[tuple[str, ObjectAttrs]]
        Paths in the repository, folders kept, with ``size``, ``sha256`` (LFS files),
        ``etag`` (the sha256 of an LFS file, the git blob id of another, as the Hub's
        ``ETag``) and ``source``: the file's ``hf://`` link at the revision, which
        :func:`fetch_hf` reads. A page is asked for when the previous one is used up.

    Raises
    ------
    HfAuthError
        401/403: the repository needs a token with access.
    requests.HTTPError
        404 for a missing repository, revision or folder.
    dlutils.InvalidInputError
        At once, for malformed arguments.

    Notes
    -----
    With ``parquet=True``, ``/api/datasets/<id>/parquet`` names the export's configs and
    splits, as AIStore's downloader reads it, and the branch ``refs/convert/parquet``
    (where the export lives) is listed for them: paths are ``<config>/<split>/0000.parquet``
    (``<config>/partial-<split>/...`` for a partial export), so the ``0000.parquet`` of
    every split keeps its own folder, each with its size and sha256. The export follows
    the default branch: ``revision`` may be ``"main"`` (read as ``refs/convert/parquet``),
    ``refs/convert/parquet`` or one of its commits.

    Examples
    --------
    >>> from dlutils.sources.hf import list_hf
    >>> for path, attrs in list_hf("hf://datasets/org/name", include="data/*"):  # doctest: +SKIP
    ...     print(path, attrs.size, attrs.sha256)
    data/train/0.parquet 1048576 6f3c...
    """
    ref = uri_or_ref if isinstance(uri_or_ref, HfRef) else parse_hf(uri_or_ref)
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidInputError(f"prefix={prefix!r} and suffix={suffix!r} must be strings")
    if revision is not None:
        ref = replace(ref, revision=revision)
    if parquet:
        ref = _parquet_ref(ref)
    wanted, unwanted = _patterns(include, "include"), _patterns(exclude, "exclude")
    hub = _Hub(endpoint, token, headers, session, timeout)
    folder = (ref.path or "").strip("/")
    start = f"{folder}/{prefix}" if folder else prefix

    def entries() -> Iterator[tuple[str, ObjectAttrs]]:
        splits = _parquet_splits(hub, ref) if parquet else {}
        found: dict[tuple[str, str], int] = {}
        for item in _tree(hub, ref, folder):
            if not isinstance(item, dict) or item.get("type") != "file":
                continue  # directories (recursive listings name them too)
            path = item.get("path")
            if not isinstance(path, str) or not path.startswith(start) or not path.endswith(suffix):
                continue
            if parquet:
                config, _, rest = path.partition("/")
                split, _, name = rest.partition("/")
                if (config, split) not in splits or not name or "/" in name:
                    continue
                found[(config, split)] = found.get((config, split), 0) + 1
            if _selected(path, wanted, unwanted):
                yield path, _entry_attrs(ref, path, item)
        for key, count in found.items():
            if count != splits[key]:
                log.warning(
                    "the parquet export lists %d file(s) for %s, its branch has %d",
                    splits[key],
                    "/".join(key),
                    count,
                )

    return entries()


# --------------------------------------------------------------------------- downloads


def _refused(exc: requests.HTTPError, hub: _Hub, ref: HfRef) -> Exception:
    response = exc.response
    if response is not None and response.status_code in (401, 403) and hub.on_hub(response.url):
        return hub.error(response, ref.link, ref)
    return exc


def fetch_hf(
    link: str | HfRef,
    local_filepath: str | os.PathLike | None = None,
    cache: bool = True,
    timeout: Any = None,
    session: requests.Session | None = None,
    verbose: bool = False,
    *,
    remote_attrs: ObjectAttrs | None = None,
    token: str | bool | None = None,
    headers: Mapping[str, str] | None = None,
    checksum: str | None = None,
    expected_size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Callback | Callable[[int], Any] | None = None,
    limiter: Any = None,
    abort: threading.Event | None = None,
    manifest: Manifest | bool | None = None,
    segments: int = 8,
    segment_threshold: int = SEGMENT_THRESHOLD,
    fsync: bool = False,
    sleep: Callable[[float], Any] | None = None,
    endpoint: str | None = None,
    transport: str = "requests",
) -> Fetched:
    """Download one file of a Hub repository and say whether it was downloaded or current.

    Parameters
    ----------
    link : str or HfRef
        ``hf://datasets/<org>/<name>[@revision]/path/in/repo`` (a model without
        ``datasets/``); see :func:`parse_hf`.
    local_filepath : str or PathLike, optional
        A file path; or a folder (existing, or written with a trailing separator), or
        ``None`` for the current folder, in which the file keeps its folders
        (``folder/data/train.csv``). A path with ``..`` is refused before any request.
    cache : bool
        Keep a file already there when it is the Hub's: by its manifest record (whose
        ``source`` is the ``hf://`` link; a matching sha256 decides alone), else by size
        as pyvo does. ``False`` always downloads.
    remote_attrs : ObjectAttrs, optional
        The file's attributes from :func:`list_hf`. With its size and sha256 (or ETag),
        no HEAD is sent: the expected size and checksum come from it. Without it, one
        HEAD asks the Hub (``X-Linked-Size``, ``X-Linked-Etag``).
    token : str or bool, optional
        Sent as ``Authorization: Bearer`` to the hub only; ``None`` reads ``HF_TOKEN``
        (then ``HUGGING_FACE_HUB_TOKEN``), ``False`` sends none.
    headers : mapping, optional
        Extra headers, for the hub only; the storage host an LFS file is redirected to
        gets only ``Range``, conditional headers, ``Accept-Encoding`` and ``User-Agent``.
    checksum : str, optional
        Expected ``"algorithm:hex"``; replaces the sha256 the Hub gives.
    endpoint : str, optional
        The hub's address; ``HF_ENDPOINT`` (else https://huggingface.co) by default.
    transport : {"requests", "curl", "auto"}
        What fetches the file's bytes (the resolve link and its redirect), as for
        :func:`~dlutils.sources.http.http_download`; a job's default is ``"auto"``.
        Over libcurl, each request starts at the hub (the token goes there only) and
        follows its redirect to the storage host with the transfer's headers alone.
    timeout, session, verbose, expected_size, retries, backoff, progress, limiter
        As for :func:`~dlutils.sources.http.http_download`.
    abort, manifest, segments, segment_threshold, fsync, sleep
        As for :func:`~dlutils.sources.http.http_download`.

    Returns
    -------
    dlutils.transfer.Fetched

    Raises
    ------
    HfAuthError
        401/403 from the hub: a token with access to the repository is needed.
    requests.HTTPError
        Another refusal: 404 for a missing repository, revision or file.
    dlutils.DownloadError
        Bad input, an unsafe path, a checksum or size mismatch (nothing placed).

    Notes
    -----
    Only LFS files have a sha256 on the Hub; a Git file is checked by its size.

    Examples
    --------
    >>> from dlutils.sources.hf import fetch_hf
    >>> fetch_hf("hf://datasets/org/name@main/../escape.txt", "data/")
    Traceback (most recent call last):
    ...
    dlutils.errors.UnsafePathError: path in the repository '../escape.txt' is not safe: it \
has a '..' segment; a name must be a relative path inside the destination, such as \
'train/shard-0001.tar'
    """
    ref = link if isinstance(link, HfRef) else parse_hf(link)
    if not ref.path or ref.path.endswith("/"):
        raise InvalidInputError(
            f"hf link {ref.link!r} names no file (list a folder with list_hf); write it as "
            f"{_FORM}, for instance {_EXAMPLE}"
        )
    check_name(ref.path, what="path in the repository", local=False)  # the local name: below
    user_checksum = parse_checksum(checksum)  # bad input fails before any request
    if remote_attrs is not None and not isinstance(remote_attrs, ObjectAttrs):
        raise InvalidInputError(f"remote_attrs {remote_attrs!r} is not an ObjectAttrs")
    source = ref.link
    if local_filepath is not None and not names_a_folder(local_filepath):
        target = os.fspath(local_filepath)
        folder = os.path.dirname(target)
    else:
        folder = os.fspath(local_filepath) if local_filepath is not None else ""
        target = join_inside(folder, ref.path, what="path in the repository")
    policy = RetryPolicy(retries=retries, backoff=backoff)
    hub = _Hub(endpoint, token, headers, session, timeout, policy, abort, sleep)
    url = resolve_url(ref, endpoint=hub.endpoint)
    own = manifest is None
    keeper = Manifest(folder or ".") if own else manifest
    keeper = keeper if isinstance(keeper, Manifest) else None
    bar = progress if progress is not None else (TqdmCallback(source) if verbose else None)
    try:
        known = None if remote_attrs is None else replace(remote_attrs, source=source)
        location = None
        if known is None or known.size is None or (known.sha256 is None and known.etag is None):
            asked, location = _stat(hub, ref, url)
            known = asked if known is None else known.merged(asked)
        if (
            cache
            and os.path.isfile(target)
            and is_current(target, known, keeper, source)
            and verify_cached(target, user_checksum)
        ):
            return hit(target, verbose, target)
        remote = _file_remote(hub, url, location, headers, session, transport)
        try:
            result = download(
                remote,
                target,
                checksum=user_checksum or (f"sha256:{known.sha256}" if known.sha256 else None),
                expected_size=known.size if expected_size is None else expected_size,
                progress=bar,
                limiter=limiter,
                abort=abort,
                journal=keeper,
                retry=policy,
                segments=segments,
                segment_threshold=segment_threshold,
                fsync=fsync,
                **({"sleep": sleep} if sleep is not None else {}),
            )
        except requests.HTTPError as exc:
            refused = _refused(exc, hub, ref)
            if refused is exc:
                raise
            raise refused from None  # the hub's own message adds nothing, and no token
        if result.outcome != "downloaded":
            return hit(target, False, target)
        if keeper is not None:
            record(keeper, target, with_verified(known, result))
        return Fetched(target, False, result.size, result.received)
    finally:
        if bar is not None and progress is None:
            bar.close()
        if own and keeper is not None:
            keeper.close()


def _file_remote(
    hub: _Hub,
    url: str,
    location: str | None,
    headers: Mapping[str, str] | None,
    session: requests.Session | None,
    transport: str,
) -> Any:
    """The :class:`~dlutils.transfer.Remote` of a file's resolve link: over requests,
    :class:`_Hops` follows the hub's redirects; over libcurl, :class:`_CurlHops`."""
    if choose(transport, session=session) == "curl":
        return _CurlHops(hub, url, location, headers)
    hops: Any = _Hops(hub, location)  # HttpRemote calls only its get()
    return HttpRemote(url, session=hops, headers=headers, timeout=hub.timeout)


@redacting  # no credential in what it raises, whichever library raised it
def hf_download(
    repo_id: str,
    filename: str | None = None,
    local_dir: str | os.PathLike | None = None,
    *,
    subfolder: str | None = None,
    repo_type: str | None = "model",
    revision: str | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    cache: bool = True,
    timeout: Any = None,
    session: requests.Session | None = None,
    verbose: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    parquet: bool = False,
    workers: int = 8,
    endpoint: str | None = None,
    **options: Any,
) -> str | list[str]:
    """Download one file of a Hub model or dataset, or the whole repository.

    The keywords and defaults are ``huggingface_hub.hf_hub_download``'s: a repository is
    a model unless ``repo_type="dataset"`` says otherwise, ``revision`` is ``"main"``,
    ``local_dir`` is the folder to write into, ``token`` the token. The files go into
    ``local_dir`` as they are in the repository (no cache folder of the hub's, no links).

    Parameters
    ----------
    repo_id : str
        ``"<org>/<name>"``.
    filename : str, optional
        A path in the repository: that file only. ``None``: every file (recursively).
    local_dir : str or PathLike, optional
        The folder to write into (the current folder by default); every file keeps its
        folders under it (``local_dir/data/train.csv``). A manifest
        (``.dlutils-manifest.sqlite``) directly in it records what came from where.
        ``local_dirpath=`` (the old name) still works, with a :class:`DeprecationWarning`.
    subfolder : str, optional
        A folder in the repository that ``filename`` is in (as huggingface_hub's).
    repo_type : str
        ``"model"`` (the default, as huggingface_hub; ``None`` too) or ``"dataset"``.
    revision : str, optional
        A branch, tag or commit (``"main"`` when ``None``), honoured by the listing and
        every file.
    token : str or bool, optional
        See :func:`fetch_hf`; ``None`` reads ``HF_TOKEN``, ``False`` sends none.
    force_download : bool
        Download even the files already here and current (as ``cache=False``).
    include, exclude, parquet
        See :func:`list_hf` (a whole repository only).
    workers : int
        Files downloaded at once (a whole repository).
    endpoint : str, optional
        The hub's address; ``HF_ENDPOINT`` (else https://huggingface.co) by default.
    cache, timeout, session, verbose, **options
        As for :func:`fetch_hf` (``headers``, ``retries``, ``backoff``, ``progress``,
        ``limiter``, ``abort``, ``manifest``, ``segments``, ``segment_threshold``,
        ``fsync``, ``sleep``; ``checksum`` and ``expected_size`` for one file).

    Returns
    -------
    str or list of str
        The file's path; or every file's path, in listing order. Relative when
        ``local_dir`` is.

    Raises
    ------
    HfAuthError
        401/403: a token with access to the repository is needed.
    dlutils.JobFailedError
        Some files failed (the others finished): ``errors`` lists each with its error,
        ``paths`` the files that are in place. A path with ``..`` fails alone.
    requests.HTTPError, dlutils.DownloadError
        The listing failed, or the one file did.

    Examples
    --------
    >>> import json, os, tempfile
    >>> from dlutils.localserver import LocalServer
    >>> from dlutils.sources.hf import hf_download
    >>> tree = [{"type": "directory", "oid": "1" * 40, "size": 0, "path": "data"},
    ...         {"type": "file", "oid": "2" * 40, "size": 8, "path": "data/train.csv"}]
    >>> files = {"api/models/org/tiny/tree/main": json.dumps(tree).encode(),
    ...          "org/tiny/resolve/main/data/train.csv": b"a,b\\n1,2\\n"}
    >>> with LocalServer(files) as hub, tempfile.TemporaryDirectory() as folder:
    ...     paths = hf_download("org/tiny", local_dir=folder, endpoint=hub.url)
    ...     print([os.path.relpath(p, folder) for p in paths], open(paths[0]).read().split())
    ['data/train.csv'] ['a,b', '1,2']
    """
    if "local_dirpath" in options:
        old = options.pop("local_dirpath")
        warnings.warn(
            "hf_download(local_dirpath=...) is deprecated: use local_dir=, as "
            "huggingface_hub.hf_hub_download names it",
            DeprecationWarning,
            stacklevel=3,  # through @redacting
        )
        if local_dir is not None and old is not None:
            raise InvalidInputError(
                "local_dir= and local_dirpath= (its old name) are both given: keep local_dir="
            )
        local_dir = old if local_dir is None else local_dir
    repo_type = "model" if repo_type is None else repo_type
    if subfolder is not None:
        if filename is None:
            raise InvalidInputError(
                f"subfolder={subfolder!r} is the folder of filename=: give filename= with it, "
                "or include=[subfolder + '/'] for the whole folder"
            )
        filename = f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename
    if force_download:
        cache = False
    ref = HfRef(repo_type, repo_id, revision if revision is not None else "main")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidInputError(f"workers={workers!r} is not valid: use an int >= 1")
    single = {"checksum", "expected_size", "remote_attrs"} & set(options)
    if filename is None and single:
        raise InvalidInputError(
            f"{', '.join(sorted(single))} describe one file: give filename= with them"
        )
    folder = os.fspath(local_dir) if local_dir is not None else ""
    given = options.pop("manifest", None)
    keeper = Manifest(folder or ".") if given is None else given
    common = dict(
        cache=cache,
        timeout=timeout,
        session=session,
        verbose=verbose,
        token=token,
        endpoint=endpoint,
        manifest=keeper,
        **options,
    )
    try:
        if filename is not None:
            if include is not None or exclude is not None or parquet:
                raise InvalidInputError(
                    "include=, exclude= and parquet= select files of a whole repository; "
                    f"with filename={filename!r} leave them out"
                )
            check_name(filename, what="filename")
            target = join_inside(folder, filename, what="filename")
            return fetch_hf(replace(ref, path=filename), target, **common).path
        listing = list_hf(
            ref,
            token=token,
            session=session,
            timeout=timeout,
            parquet=parquet,
            include=include,
            exclude=exclude,
            headers=options.get("headers"),
            endpoint=endpoint,
        )
        return _download_all(listing, folder, workers, common, options.get("abort"))
    finally:
        if given is None and isinstance(keeper, Manifest):
            keeper.close()


def _download_all(
    listing: Iterator[tuple[str, ObjectAttrs]],
    folder: str,
    workers: int,
    common: dict[str, Any],
    abort: threading.Event | None,
) -> list[str]:
    """Every listed file through a pool; at most ``2 * workers`` submitted at once."""
    failures: list[tuple[str, str]] = []
    done: list[tuple[str, Future[Fetched]]] = []
    pending: set[Future[Fetched]] = set()
    with ThreadPoolExecutor(workers, thread_name_prefix="dlutils-hf") as pool:
        try:
            for path, attrs in listing:
                if abort is not None and abort.is_set():
                    break
                try:
                    target = join_inside(folder, path, what="path in the repository")
                except UnsafePathError as exc:
                    failures.append((path, f"{type(exc).__name__}: {exc}"))
                    continue
                future = pool.submit(fetch_hf, attrs.source, target, remote_attrs=attrs, **common)
                done.append((path, future))
                pending.add(future)
                if len(pending) >= 2 * workers:
                    pending = wait(pending, return_when=FIRST_COMPLETED).not_done
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if abort is not None and abort.is_set():
        raise DownloadAborted("the download of the repository was aborted; .part files are kept")
    paths = []
    for path, future in done:
        exc = future.exception()
        if exc is None:
            paths.append(future.result().path)
        else:
            failures.append((path, f"{type(exc).__name__}: {exc}"))
    if failures:
        raise JobFailedError(failures, paths)
    return paths
