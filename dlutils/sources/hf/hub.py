"""Requests to the Hub: what leaves it (credentials stay), redirects, file metadata."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urljoin

import requests

from ...errors import (
    DownloadError,
)
from ...freshness import ObjectAttrs, attrs_from_headers
from ...limits import parse_timeout
from ...names import forwardable, redact
from ...retry import RetryPolicy
from ...transfer import call_with_retries
from ...transports._http import REDIRECT_STATUSES as _REDIRECTS
from ..http import DEFAULT_TIMEOUT, HttpRemote, _discard, _no_auth, default_session
from .links import (
    _BLOB_ID,
    _PREFIXES,
    HfAuthError,
    HfRef,
    _check_endpoint,
    _token,
    hf_endpoint,
    parse_hf,
    resolve_url,
)

log = logging.getLogger("dlutils")

_MAX_HOPS = 10
#: Headers that may follow a redirect off the hub: what the transfer needs, nothing that
#: could identify the user (``headers=`` and session-level headers stay on the hub).
_PORTABLE = frozenset(
    {"range", "if-range", "if-none-match", "if-modified-since", "accept-encoding", "user-agent"}
)
#: A stored link that answers one of these has expired: ask the hub for a fresh one.
_STALE_LINK = frozenset({401, 403, 404, 410})


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
        self.token, self.token_from = _token(token)
        self.headers = dict(headers or {})
        self._session = session
        timeout = parse_timeout(timeout)  # "30s" as everywhere; a clear error otherwise
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.retry, self.abort, self.sleep = retry or RetryPolicy(), abort, sleep
        self.classify = HttpRemote(self.endpoint, session=session).classify

    @property
    def session(self) -> requests.Session:
        return self._session if self._session is not None else default_session()

    def on_hub(self, url: str) -> bool:
        return forwardable(self.endpoint, url)  # the one origin rule of every transport

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
        from ...transports.curl import CurlRemote

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
