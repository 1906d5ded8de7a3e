"""HTTP(S) source: ``http_download``, pyvo-compatible, over the shared transfer engine."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from .._version import __version__
from ..checksums import parse_checksum
from ..control import register_socket
from ..destinations import is_store, resolve
from ..errors import (
    IncompleteDownloadError,
    InvalidInputError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from ..freshness import Manifest, attrs_from_headers
from ..limits import parse_timeout
from ..names import (
    check_name,
    forwardable,
    join_inside,
    name_from_content_disposition,
    name_from_url,
    redact,
    redact_text,
)
from ..progress import Callback
from ..redaction import raise_clean, redacted, redacting
from ..transfer import (
    SEGMENT_THRESHOLD,
    Body,
    Fetched,
    call_with_retries,
    download,
    object_headers,
    resume_point,
)
from ..transfer.options import TransferOptions, transfer_options
from ..transports import choose
from ..transports._http import (
    DEFAULT_TIMEOUT,
    MAX_REDIRECTS,
    PORTABLE_HEADERS,
    classify,
    get_headers,
)
from ..transports._http import REDIRECT_STATUSES as _REDIRECTS
from ..transports._http import asked as _asked
from ..transports._http import parse_range as _parse_range
from ..transports._http import validator as _validator
from ._common import (
    VERIFIED,
    cache_mode,
    hit,
    interrupt,
    is_current,
    keeping,
    names_a_folder,
    record,
    trusted,
    verify_cached,
    with_verified,
)

__all__ = [
    "http_download",
    "fetch_http",
    "HttpRemote",
    "InterruptibleAdapter",
    "open_remote",
    "default_session",
    "DEFAULT_TIMEOUT",
]

log = logging.getLogger("dlutils")

_local = threading.local()


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def _needs_environment() -> bool:
    """Whether requests must read the environment on every request (proxies, .netrc).

    requests re-reads proxy variables and ``.netrc`` for each request when
    ``trust_env`` is on, which costs about half a millisecond per small file. When
    neither is present, the pooled session reads the CA bundle variables once.
    """
    if any(name.lower() in _PROXY_VARIABLES for name in os.environ):
        return True
    if os.environ.get("NETRC"):
        return True
    home = os.path.expanduser("~")
    return any(os.path.exists(os.path.join(home, name)) for name in (".netrc", "_netrc"))


def default_session() -> requests.Session:
    """This thread's pooled :class:`requests.Session` (sessions are not thread-safe)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        if not _needs_environment():
            session.trust_env = False
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                session.verify = bundle
        adapter = InterruptibleAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = (
            f"dlutils/{__version__} {requests.utils.default_user_agent()}"
        )
        _local.session = session
    return session


class _Interruptible:
    """A urllib3 connection whose sockets an abort can reach before the response exists.

    requests hands out no socket until the headers have arrived, so an abort (or a time
    limit) could not stop a request still connecting or waiting for its headers. These
    connections show their socket to :func:`dlutils.transfer.register_socket` when they
    connect and before they wait for an answer; outside of the engine it does nothing.
    """

    def _new_conn(self) -> socket.socket:  # as urllib3's, with the socket registered
        host = self._dns_host.strip("[]")  # type: ignore[attr-defined]
        try:
            infos = socket.getaddrinfo(host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        error: OSError = OSError(f"no address found for {host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                register_socket(sock)
                for option in self.socket_options or ():  # type: ignore[attr-defined]
                    sock.setsockopt(*option)
                if isinstance(self.timeout, (int, float)):  # type: ignore[attr-defined]
                    sock.settimeout(self.timeout)  # type: ignore[attr-defined]
                if self.source_address:  # type: ignore[attr-defined]
                    sock.bind(self.source_address)  # type: ignore[attr-defined]
                sock.connect(address)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        if isinstance(error, socket.timeout):
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from error
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        sock = getattr(self, "sock", None)
        if isinstance(sock, socket.socket):
            register_socket(sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _Connection(_Interruptible, urllib3.connection.HTTPConnection):
    pass


class _TLSConnection(_Interruptible, urllib3.connection.HTTPSConnection):
    pass


# Named as urllib3's own, whose names its messages show ("HTTPConnectionPool(host=...").
_Pool = type("HTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": _Connection})
_TLSPool = type("HTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": _TLSConnection})


class InterruptibleAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose requests an :class:`~dlutils.transfer.AbortEvent` can stop.

    Mount it on your own session (``session.mount("https://", InterruptibleAdapter())``)
    to let ``abort()`` and a job's ``timeout`` reach requests still connecting or
    waiting for their headers; the default session already uses it.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}


def check_http_url(url: Any) -> str:
    """Return ``url`` if it is an http(s) link, else raise a clear error naming it."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(
            f"url {url!r} is not valid: expected a link such as 'https://example.org/data.csv'"
        )
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise UnsupportedSchemeError(
            f"url {redact(url)!r} is not an http(s) link (scheme {scheme or 'missing'!r}); "
            "http_download reads links such as 'https://example.org/data.csv'"
        )
    return url


class HttpRemote:
    """Opens one http(s) link for the transfer engine (see :class:`dlutils.transfer.Remote`)."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        auth: Any = None,
    ):
        self.url = url
        self.display = redact(url)
        self.session = session if session is not None else default_session()
        self.headers = dict(headers or {})
        if not any(k.lower() == "accept-encoding" for k in self.headers):
            # Bytes are stored as served, never decompressed on the way.
            self.headers["Accept-Encoding"] = "identity"
        timeout = parse_timeout(timeout)  # "30s" as a job reads it; a clear error otherwise
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.auth = auth

    def open(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        if_range: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Body:
        request_headers = get_headers(self.headers, start, end, if_range, headers)
        try:
            response = self.request("GET", headers=request_headers)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise name_link(exc, self.url) from exc
        status = response.status_code
        if status == 416:
            _, _, total = _parse_range(response.headers, status)
            response.close()
            return Body(416, start, total, None, True, response.headers, lambda n: b"", _noop)
        if status == 304:
            response.close()
            return Body(
                304,
                0,
                None,
                _validator(response.headers),
                False,
                response.headers,
                lambda n: b"",
                _noop,
            )
        if status >= 400:
            self._raise(response)
        if status not in (200, 206):
            response.close()
            raise requests.HTTPError(
                f"{status} {response.reason} for url: {self.display} (expected 200 or 206)",
                response=response,
            )
        # The raw bytes are read (urllib3 decodes nothing): the engine decides what to do
        # with a Content-Encoding, from the facts reported here.
        first, last, total = _parse_range(response.headers, status)
        accepts = status == 206 or response.headers.get("Accept-Ranges", "").lower() == "bytes"
        length = response.headers.get("Content-Length", "").strip()
        encoding = response.headers.get("Content-Encoding", "").strip().lower() or None
        return Body(
            status=status,
            start=first if status == 206 else 0,
            end=last,
            total=total,
            validator=_validator(response.headers),
            accepts_ranges=accepts,
            headers=response.headers,
            read=self._reader(response),
            close=response.close,
            interrupt=lambda: interrupt(response.raw, response.close),
            length=int(length) if length.isdigit() else None,
            encoding=None if encoding in (None, "identity") else encoding,
            encoding_asked=_asked(request_headers, encoding),
        )

    def request(
        self,
        method: str = "GET",
        *,
        headers: Mapping[str, str] | None = None,
        stream: bool = True,
        json: Any = None,
    ) -> requests.Response:
        """Send ``method`` to the link, following redirects one hop at a time (at most
        :data:`MAX_REDIRECTS`); ``headers`` default to the remote's own.

        At each hop :func:`~dlutils.names.forwardable` decides whether the caller's
        credentials go too: only to the link's own origin (scheme, host, port). Elsewhere,
        and from https down to http, only :data:`PORTABLE_HEADERS` are sent: no custom
        header, ``Authorization``, ``auth=``, ``Cookie`` header or session-level header.
        The session's cookie jar still sends what each host set for itself. Errors of the
        transport leave with their credentials removed (:func:`~dlutils.redaction.redacted`).
        """
        request_headers = self.headers if headers is None else headers
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, request_headers, stream=stream, json=json)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or not location:
                return response
            _discard(response)
            following = urljoin(url, location)
            if response.status_code not in (307, 308):
                json = None  # as browsers and requests do: the body stays with the first host
                method = "HEAD" if method == "HEAD" else "GET"
            if not following.lower().startswith(("http://", "https://")):
                raise requests.HTTPError(
                    f"{response.status_code} redirect of {self.display} to "
                    f"{redact_text(following)!r}, which is not an http(s) link",
                    response=response,
                )
            if url.lower().startswith("https:") and following.lower().startswith("http:"):
                log.debug("%s redirects from https down to http; credentials stay behind",
                         self.display)  # fmt: skip
            url = following
        raise requests.TooManyRedirects(
            f"{self.display} redirected more than {MAX_REDIRECTS} times (last to "
            f"{redact(url)}): a redirect loop?",
            response=response,
        )

    def _send(
        self, method: str, url: str, request_headers: Mapping[str, str], **options: Any
    ) -> requests.Response:
        """One request to ``url``, with the credentials only if :func:`forwardable` allows;
        a failure of the transport is raised with its credentials removed."""
        if url == self.url or forwardable(self.url, url):
            headers: dict[str, str | None] = dict(request_headers)
            auth = self.auth
        else:
            headers = {k: v for k, v in request_headers.items() if k.lower() in PORTABLE_HEADERS}
            for name in getattr(self.session, "headers", None) or ():
                if name.lower() not in PORTABLE_HEADERS and name not in headers:
                    headers[name] = None  # None removes a session-level header
            # no auth= here; a session-level auth is switched off (netrc still applies per host)
            auth = _no_auth if getattr(self.session, "auth", None) is not None else None
        try:
            if method == "GET" and options.get("json") is None:  # all a stand-in session has
                return self.session.get(
                    url,
                    headers=headers,
                    stream=options["stream"],
                    timeout=self.timeout,
                    auth=auth,
                    allow_redirects=False,
                )
            return self.session.request(
                method, url, headers=headers, timeout=self.timeout, auth=auth,
                allow_redirects=False, **options,
            )  # fmt: skip
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            clean = redacted(exc)
            if clean is exc:
                raise
        raise_clean(clean)  # outside the except: the original stays out of its context

    def _raise(self, response: requests.Response) -> None:
        try:
            response.raw.read(4096, decode_content=False)
        except Exception:  # noqa: BLE001 - the status is what matters
            pass
        response.close()
        raise requests.HTTPError(
            f"{response.status_code} {'Client' if response.status_code < 500 else 'Server'} "
            f"Error: {response.reason} for url: {self.display}",
            response=response,
        )

    def _reader(self, response: requests.Response) -> Callable[[int], bytes]:
        raw = response.raw
        display = self.display

        def read(size: int) -> bytes:
            try:
                return raw.read(size, decode_content=False)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise requests.exceptions.ReadTimeout(
                    f"{display} sent nothing for too long: {redact_text(str(exc))}"
                ) from redacted(exc)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                raise IncompleteDownloadError(
                    f"{display}: the connection broke: {redact_text(str(exc))}"
                ) from redacted(exc)

        return read

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        """Whether ``exc`` is worth another attempt (:func:`dlutils.transports._http.classify`)."""
        return classify(exc)


def open_remote(
    url: str,
    *,
    transport: str = "requests",
    session: requests.Session | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: Any = None,
    auth: Any = None,
) -> Any:
    """The :class:`~dlutils.transfer.Remote` of ``url`` over the transport asked for.

    :class:`HttpRemote` (requests) or :class:`~dlutils.transports.curl.CurlRemote`
    (libcurl), as :func:`dlutils.transports.choose` decides from ``transport``,
    ``session`` and ``auth``.
    """
    if choose(transport, session=session, auth=auth) == "curl":
        from ..transports.curl import CurlRemote

        return CurlRemote(url, headers=headers, timeout=timeout, auth=auth)
    return HttpRemote(url, session=session, headers=headers, timeout=timeout, auth=auth)


def _noop() -> None:
    pass


def _no_auth(request: Any) -> Any:
    """An auth that adds nothing: stops a session's own ``auth`` on another host."""
    return request


def _discard(response: requests.Response) -> None:
    """Read a little of a redirect's body (so its connection can be reused) and close it."""
    try:
        response.raw.read(1 << 16, decode_content=False)
    except Exception:  # noqa: BLE001 - only the connection's reuse is at stake
        pass
    response.close()


def name_link(exc: requests.RequestException, url: str) -> requests.RequestException:
    """A copy of ``exc`` of the same type whose message starts with the link, redacted.

    requests says ``('Connection aborted.', RemoteDisconnected(...))`` without saying
    which link; pyvo users' ``except requests.ConnectionError`` still catch the copy.
    """
    shown = redact(url)
    text = str(exc)
    split, shown_split = urlsplit(url), urlsplit(shown)
    raw_path = split.path + (f"?{split.query}" if split.query else "")
    if raw_path and raw_path != "/":  # urllib3 quotes the path and query it asked for
        text = text.replace(
            raw_path, shown_split.path + (f"?{shown_split.query}" if shown_split.query else "")
        )
    text = text.replace(url, shown)
    try:
        named = type(exc)(f"{shown}: {text}", request=exc.request, response=exc.response)
    except Exception:  # noqa: BLE001 - a subclass with another signature: keep it as it is
        return exc
    return named


@redacting  # no credential in what it raises, whichever library raised it
def http_download(
    url: str,
    local_filepath: str | os.PathLike | None = None,
    cache: bool | str = True,
    timeout: Any = None,
    session: requests.Session | None = None,
    auth: Any = None,
    verbose: bool = False,
    *,
    headers: Mapping[str, str] | None = None,
    checksum: str | None = None,
    expected_size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Callback | Callable[[int], Any] | None = None,
    limiter: Any = None,
    abort: threading.Event | None = None,
    manifest: Manifest | bool | None = None,
    segments: int = 32,
    segment_threshold: int = SEGMENT_THRESHOLD,
    fsync: bool = False,
    sleep: Callable[[float], Any] | None = None,
    transport: str = "requests",
) -> str:
    """Download an http(s) link to a local file and return the file's path.

    A drop-in for ``pyvo.utils.download.http_download``, but the bytes go to
    ``NAME.part`` and are verified before they are placed, an interrupted download
    resumes where it stopped, and failures are retried with backoff.

    Parameters
    ----------
    url : str
        The link, ``http://`` or ``https://``.
    local_filepath : str or PathLike, optional
        Where to write. ``None`` derives a name in the current folder (returned
        relative, as pyvo does); an existing folder derives the name inside it.
        Names come from a safe ``Content-Disposition`` filename, else the last
        element of the link's path, else a query value with a ``.`` in it
        (``?file=/location/myfile.pdf`` gives ``myfile.pdf``).
    cache : bool or "verified"
        Reuse a file already there when it is current. With a record of an
        earlier download (the folder's manifest), a conditional GET asks the
        server; without one, the sizes are compared as pyvo does, and a file of
        the wrong size is replaced with a :class:`~dlutils.CacheMismatchWarning`.
        ``False`` always downloads. ``"verified"`` keeps a file known good with no
        request at all: it has the ``checksum`` given, or its record holds a checksum
        dlutils verified when it placed it and it is unchanged since (size, mtime);
        other files are checked with the server as with ``True``. See
        :doc:`/freshness`.
    timeout : float, str or (connect, read), optional
        Seconds (or a duration such as ``"30s"``) a connection may stay silent, as in
        pyvo and requests (a silent
        connection is dropped and retried); ``None`` means ``DEFAULT_TIMEOUT``. For a
        limit on the whole of each attempt, a trickling server included, pass
        ``abort=AbortEvent(time_limit=seconds)`` (a job's ``timeout`` does that).
    session : requests.Session, optional
        Session to use; by default a pooled one per thread.
    auth : optional
        Passed to requests (``("user", "password")`` or any requests auth).
    verbose : bool
        Show a progress bar and say when a cached file is used.
    headers : mapping, optional
        Extra request headers. Bytes are asked for as stored (``Accept-Encoding:
        identity``); a body a server compresses anyway is stored decoded, as requests
        gives it (gzip, deflate; br and zstd when their modules are installed), and one
        that cannot be decoded raises :class:`~dlutils.ContentEncodingError`. An
        ``Accept-Encoding`` given here keeps the bytes as served.
    checksum : str, optional
        Expected ``"sha256:<hex>"``, ``"md5:<hex>"`` or ``"crc32c:<hex>"``. It holds for
        the file returned, a file already there included (it is hashed, and fetched
        again on a mismatch).
    expected_size : int, optional
        Size the file must have; a body that runs past it is stopped there.
    retries, backoff : int, float
        Retry policy (see :class:`dlutils.retry.RetryPolicy`).
    progress : Callback or callable, optional
        Receives byte counts.
    limiter, abort, segments, segment_threshold, fsync
        Passed to :func:`dlutils.transfer.download`. Setting an
        :class:`~dlutils.transfer.AbortEvent` stops the download within a second in
        any phase, waiting for the headers included (with the default session, or one
        with :class:`InterruptibleAdapter` mounted).
    manifest : Manifest, bool or None
        The record of downloads used for caching and resume. ``None`` keeps one
        (``.dlutils-manifest.sqlite``) in the file's folder; ``False`` keeps none,
        and then an interrupted download restarts from zero.
    transport : {"requests", "curl", "auto"}
        What moves the bytes (see :ref:`transports`). ``"requests"`` (the default here,
        so that tests mocking requests keep working) or libcurl (``"curl"``, faster on
        many small files). ``"auto"`` takes libcurl when ``pycurl`` imports and no
        ``session`` or requests auth object is given. Both apply the same checks.

    Returns
    -------
    str
        The path of the local file.

    Raises
    ------
    requests.HTTPError
        The server answered with an error status (404, 403, ...).
    dlutils.DownloadError
        A failure of dlutils' own: incomplete after all retries, checksum mismatch,
        an unsafe name (:class:`~dlutils.UnsafePathError`), an unsupported scheme.

    Examples
    --------
    >>> import os, tempfile
    >>> from dlutils import http_download
    >>> from dlutils.localserver import LocalServer
    >>> with LocalServer({"data/table.csv": b"a,b\\n1,2\\n"}) as server, \\
    ...         tempfile.TemporaryDirectory() as folder:
    ...     path = http_download(server.url_for("data/table.csv"), folder)
    ...     print(os.path.basename(path), open(path).read().splitlines())
    table.csv ['a,b', '1,2']
    """
    return fetch_http(url, local_filepath, transfer_options(locals())).path


def fetch_http(
    url: str,
    local_filepath: str | os.PathLike | None = None,
    options: TransferOptions | None = None,
) -> Fetched:
    """Like :func:`http_download`, but say whether the file was downloaded or was current.

    ``options`` holds :func:`http_download`'s keywords (default: its defaults).
    ``options.source`` is what the manifest records as the file's origin and messages
    show (default: the link, credentials removed); a source that reads through HTTP,
    such as ``ais://``, names its own link there.
    """
    o = options if options is not None else TransferOptions()
    verbose, abort, sleep = o.verbose, o.abort, o.sleep
    check_http_url(url)
    local_filepath = resolve(local_filepath, "local_filepath")  # file:// is its path
    if is_store(local_filepath):  # streamed into an object store instead
        from ..stores import fetch_to_store

        return fetch_to_store(url, local_filepath, o)
    cache = o.cache
    cache_mode(cache)  # bad input fails before any request
    checksum = parse_checksum(o.checksum)
    timeout = parse_timeout(o.timeout)  # "30s" as a job reads it, on either transport
    policy = o.retry_policy()
    transport = o.transport or "requests"
    remote = open_remote(
        url, transport=transport, session=o.session, headers=o.headers, timeout=timeout, auth=o.auth
    )
    source = o.source or redact(url)
    explicit = local_filepath is not None and not names_a_folder(local_filepath)
    if explicit:
        target: str | None = os.fspath(local_filepath)  # type: ignore[arg-type]
        folder = os.path.dirname(target) or ""
        candidate: str | None = target
    else:
        target = None
        folder = os.fspath(local_filepath) if local_filepath is not None else ""
        url_name = name_from_url(url)
        # An unsafe name fails here, before any request: nothing is fetched for nothing.
        candidate = (
            join_inside(folder, url_name, what="name derived from the url") if url_name else None
        )

    def returned(path: str) -> str:
        """The path as the caller wrote it (pyvo returns ``local_filepath`` itself)."""
        return os.fspath(local_filepath) if explicit else path  # type: ignore[arg-type]

    with keeping(o, folder, source) as (record_keeper, bar):
        if candidate is not None and trusted(cache, candidate, checksum, record_keeper):
            return hit(candidate, verbose, returned(candidate), how="is known good")
        cached_record = None
        if cache and candidate and os.path.isfile(candidate) and record_keeper is not None:
            cached_record = record_keeper.get(os.path.abspath(candidate))
            if cached_record is not None and cached_record.source not in ("", source):
                cached_record = None  # another link's file: its validators mean nothing here
        first = None
        if not (explicit and not (cache and os.path.exists(target))):
            conditional = cached_record.conditional_headers() if cached_record else {}
            offset, validator = (resume_point(candidate, record_keeper) if candidate else None) or (
                0,
                None,
            )
            first = call_with_retries(
                lambda: remote.open(offset, if_range=validator, headers=conditional),
                classify=remote.classify,
                retry=policy,
                abort=abort,
                sleep=sleep,
            )
            if first.status == 304 and candidate is not None:
                if verify_cached(candidate, checksum):
                    return hit(candidate, verbose, returned(candidate))
                first, target = None, candidate  # current by its record, but not the bytes asked
            if verbose and first is not None and first.status == 200 and first.total == 0:
                _warn_empty(source)
            if target is None:
                target = _derive_target(url, folder, first, candidate)
                if target != candidate and first.status != 200:
                    first.close()  # it resumed the link's name; the server named it otherwise
                    first = None
            if first is not None and cache and os.path.isfile(target):
                remote_attrs = attrs_from_headers(source, object_headers(first))
                if is_current(target, remote_attrs, record_keeper, source) and verify_cached(
                    target, checksum
                ):
                    first.close()
                    return hit(target, verbose, returned(target))
        assert target is not None
        result = download(
            remote,
            target,
            first=first,
            checksum=checksum,
            expected_size=o.expected_size,
            progress=bar,
            journal=record_keeper,
            **o.engine(policy),
        )
        if result.outcome == "downloaded" and record_keeper is not None:
            attrs = attrs_from_headers(source, result.headers)
            attrs = with_verified(attrs, result, path=target, confirm=cache_mode(cache) == VERIFIED)
            record(record_keeper, target, attrs)
        if result.outcome != "downloaded":
            return hit(target, False, returned(target))
        if verbose and first is None and result.size == 0:
            _warn_empty(source)
        return Fetched(returned(target), False, result.size, result.received)


def _warn_empty(source: str) -> None:
    """pyvo's warning, in pyvo's words, when ``verbose`` and the body is empty."""
    warnings.warn(f"URL {source} has length=0", UserWarning, stacklevel=4)


def _derive_target(url: str, folder: str, first: Body, candidate: str | None) -> str:
    proposed = name_from_content_disposition(first.headers.get("Content-Disposition"))
    if proposed:
        try:
            if "/" in proposed or "\\" in proposed:
                raise UnsafePathError(f"Content-Disposition filename {proposed!r} has a separator")
            return join_inside(folder, check_name(proposed, what="Content-Disposition filename"))
        except UnsafePathError as exc:
            log.warning("ignoring unsafe Content-Disposition of %s: %s", redact(url), exc)
    if candidate is None:
        first.close()
        raise InvalidInputError(
            f"cannot derive a file name from {redact(url)!r}: its path ends with '/' and the "
            "server sent no Content-Disposition; pass local_filepath='name.ext'"
        )
    return candidate
