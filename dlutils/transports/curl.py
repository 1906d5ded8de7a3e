"""The libcurl transport: :class:`CurlRemote` opens an http(s) link for the engine.

A body is read by pulling: each ``read`` drives a ``pycurl.CurlMulti`` (the GIL
released while libcurl works) until bytes are buffered or the transfer ends. Handles
are reused (a few idle ones per thread), and with them their connections. libcurl
follows no redirect and decodes nothing: redirects are followed one hop at a time
with the same rule as :class:`~dlutils.sources.http.HttpRemote`
(:func:`~dlutils.names.forwardable`), and a ``Content-Encoding`` reaches the engine.

Errors are the ones requests users know, so that ``except`` clauses and the engine's
rules hold on both transports: :class:`requests.HTTPError` with a real
:class:`requests.Response` (status, reason, headers, the first bytes of the body;
its ``url`` without credentials) for an error status, :class:`requests.ConnectionError`,
:class:`requests.ConnectTimeout` and :class:`requests.ReadTimeout` before the body,
:class:`~dlutils.IncompleteDownloadError` when a body breaks off. Every message
names the link with its credentials removed.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import pycurl
import requests
from requests.structures import CaseInsensitiveDict

from .._version import __version__
from ..control import register_socket
from ..errors import IncompleteDownloadError, InvalidInputError
from ..names import forwardable, redact, redact_text
from ..transfer import Body
from ._http import (
    DEFAULT_TIMEOUT,
    MAX_REDIRECTS,
    PORTABLE_HEADERS,
    REDIRECT_STATUSES,
    asked,
    classify,
    get_headers,
    parse_range,
)
from ._http import (
    validator as _validator,
)

__all__ = ["CurlRemote"]

#: Bytes libcurl hands over per write callback at most: fewer Python calls per MiB.
BUFFER_SIZE = 256 * 1024
#: Longest wait in one select: how soon a read notices an interrupt.
POLL = 0.1
#: Idle handles kept per thread.
IDLE_HANDLES = 4
#: Bytes of an error answer kept in its response (``response.text``).
ERROR_BODY = 64 * 1024

_local = threading.local()

#: libcurl errors that mean the connection was never made (host unknown, refused).
_UNRESOLVED = {pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY}
_SSL = {
    pycurl.E_SSL_CONNECT_ERROR,
    pycurl.E_PEER_FAILED_VERIFICATION,
    pycurl.E_SSL_CACERT_BADFILE,
    pycurl.E_SSL_CERTPROBLEM,
}


def _ca_bundle() -> str | None:
    """The CA bundle requests would use: the environment's, else certifi's."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value and os.path.exists(value):
            return value
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None
    return certifi.where()


@functools.lru_cache(maxsize=1)
def _user_agent() -> str:
    return f"dlutils/{__version__} {pycurl.version.split()[1]}"


class _Handles:
    """One libcurl easy handle inside a multi handle of its own: its connection cache."""

    def __init__(self) -> None:
        self.multi = pycurl.CurlMulti()
        self.easy = pycurl.Curl()
        self.attached = False


#: Handles a forked child inherited: never used nor closed there (their connections are
#: the parent's), only kept from being collected.
_inherited: list[_Handles] = []


def _idle() -> list[_Handles]:
    """This thread's idle handles (none in a forked child: those are the parent's)."""
    idle = getattr(_local, "idle", None)
    if idle is None or _local.pid != os.getpid():
        if idle:
            _inherited.extend(idle)
        idle = _local.idle = []
        _local.pid = os.getpid()
    return idle


def _take() -> _Handles:
    idle = _idle()
    return idle.pop() if idle else _Handles()


def _give_back(handles: _Handles) -> None:
    if handles.attached:
        handles.multi.remove_handle(handles.easy)  # ends an unfinished transfer
        handles.attached = False
    handles.easy.reset()
    idle = _idle()
    if len(idle) < IDLE_HANDLES:
        idle.append(handles)
    else:
        handles.easy.close()
        handles.multi.close()


def _timeouts(timeout: Any) -> tuple[float, float]:
    if isinstance(timeout, (tuple, list)):
        connect, read = timeout
    else:
        connect = read = timeout
    return float(connect), float(read)


class _Exchange:
    """One request in flight: its status, headers, buffered body bytes and outcome."""

    def __init__(self, handles: _Handles, url: str, display: str, timeouts: tuple[float, float]):
        self.handles = handles
        self.url = url
        self.display = display
        self.connect_timeout, self.read_timeout = timeouts
        self.buffer = bytearray()
        self.status = 0
        self.reason = ""
        self.lines: list[tuple[str, str]] = []
        self.headers_done = False
        self.done = False
        self.failure: tuple[int, str] | None = None
        self.interrupted = False
        self.closed = False
        self.lock = threading.Lock()
        self.began = self.last_activity = time.monotonic()

    # libcurl's callbacks, in the thread that performs
    def on_header(self, line: bytes) -> None:
        self.last_activity = time.monotonic()
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            parts = text.split(None, 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.reason = parts[2] if len(parts) > 2 else ""
            self.lines = []
            self.headers_done = False
        elif not text:
            if not 100 <= self.status < 200:
                self.headers_done = True
        elif text[0] in " \t" and self.lines:  # an obsolete folded line
            name, value = self.lines[-1]
            self.lines[-1] = (name, f"{value} {text.strip()}")
        elif ":" in text:
            name, _, value = text.partition(":")
            self.lines.append((name.strip(), value.strip()))

    def on_write(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.headers_done = True
        self.buffer += data

    def headers(self) -> CaseInsensitiveDict:
        headers: CaseInsensitiveDict = CaseInsensitiveDict()
        for name, value in self.lines:
            if name in headers:
                headers[name] = f"{headers[name]}, {value}"
            else:
                headers[name] = value
        return headers

    def pump(self, want_headers: bool) -> None:
        """Let libcurl work until headers (or body bytes) are here, or the transfer ends."""
        multi = self.handles.multi
        started = time.monotonic()
        while True:
            with self.lock:  # a close from another thread waits for this step (<= POLL s)
                if self.interrupted or self.closed:
                    raise IncompleteDownloadError(f"{self.display}: the transfer was interrupted")
                while True:
                    code, running = multi.perform()
                    if code != pycurl.E_CALL_MULTI_PERFORM:
                        break
                if not running:
                    self._finish()
                if self.done or (self.headers_done if want_headers else self.buffer):
                    return
                silent = self._silence(started)
                if silent > self.read_timeout:
                    raise requests.exceptions.ReadTimeout(
                        f"{self.display} sent nothing for {self.read_timeout:g} s "
                        f"({'no headers' if not self.headers_done else 'in its body'})"
                    )
                multi.select(min(POLL, max(0.001, self.read_timeout - silent)))

    def close(self) -> None:
        """End the transfer and hand its handles back; from any thread, at most once."""
        self.interrupted = True
        with self.lock:
            if not self.closed:
                self.closed = True
                _give_back(self.handles)

    def _silence(self, started: float) -> float:
        """Seconds the server has kept silent (the time to connect is not counted: libcurl
        bounds it with the connect timeout, as requests does)."""
        now = time.monotonic()
        silent = now - max(self.last_activity, started)
        if silent <= self.read_timeout or self.headers_done:
            return silent
        sent = self.handles.easy.getinfo(pycurl.PRETRANSFER_TIME)  # 0 until connected
        if not sent:
            waited = now - self.began
            return 0.0 if waited < self.connect_timeout + self.read_timeout else waited
        return now - max(self.last_activity, started, self.began + sent)

    def _finish(self) -> None:
        _, ok, failed = self.handles.multi.info_read()
        for _handle, code, message in failed:
            self.failure = (code, message)
        self.done = True


class _Canceller:
    """Stands for the sockets of one request in :func:`dlutils.control.register_socket`:
    libcurl owns them, so the abort that would shut a socket down interrupts the
    request instead (its read loop notices within :data:`POLL` seconds)."""

    def __init__(self, exchange: _Exchange):
        self.exchange = exchange

    def shutdown(self, how: int) -> None:
        self.exchange.interrupted = True


class CurlRemote:
    """Opens one http(s) link over libcurl (see :class:`dlutils.transfer.Remote`).

    Parameters
    ----------
    url : str
        The link.
    headers : mapping, optional
        Request headers; ``Accept-Encoding: identity`` is added unless one is given.
    timeout : float or (connect, read), optional
        Seconds to connect, and seconds a server may stay silent; ``None`` means
        :data:`dlutils.sources.http.DEFAULT_TIMEOUT`.
    auth : (str, str), optional
        User and password, sent (HTTP basic) to the link's own origin only.
    landed : callable, optional
        Called with the link each answer (not an error) finally came from, redirects
        followed: a source that keeps a redirect's target for its next requests.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        auth: tuple[str, str] | None = None,
        landed: Callable[[str], Any] | None = None,
    ):
        if auth is not None and not (
            isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(a, str) for a in auth)
        ):
            raise InvalidInputError(
                f"auth of type {type(auth).__name__} is not valid for transport='curl': "
                "give ('user', 'password'), or use transport='requests' for a requests auth"
            )
        self.url = url
        self.display = redact(url)
        self.headers = dict(headers or {})
        if not any(k.lower() == "accept-encoding" for k in self.headers):
            self.headers["Accept-Encoding"] = "identity"
        self.connect_timeout, self.read_timeout = _timeouts(
            DEFAULT_TIMEOUT if timeout is None else timeout
        )
        self.auth = auth
        self.landed = landed

    def open(
        self,
        start: int = 0,
        end: int | None = None,
        *,
        if_range: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Body:
        request_headers = get_headers(self.headers, start, end, if_range, headers)
        exchange = self._request(request_headers)
        status = exchange.status
        response_headers = exchange.headers()

        if status in (416, 304):
            exchange.close()
            total = parse_range(response_headers, status)[2] if status == 416 else None
            validator = _validator(response_headers) if status == 304 else None
            return Body(
                status, 0 if status == 304 else start, total, validator, status == 416,
                response_headers, lambda n: b"", _noop,
            )  # fmt: skip
        if status >= 400 or status not in (200, 206):
            self._raise(exchange, response_headers)
        first, last, total = parse_range(response_headers, status)
        length = response_headers.get("Content-Length", "").strip()
        encoding = response_headers.get("Content-Encoding", "").strip().lower() or None
        return Body(
            status=status,
            start=first if status == 206 else 0,
            end=last,
            total=total,
            validator=_validator(response_headers),
            accepts_ranges=status == 206
            or response_headers.get("Accept-Ranges", "").lower() == "bytes",
            headers=response_headers,
            read=lambda size: self._read(exchange, size),
            close=exchange.close,
            interrupt=lambda: setattr(exchange, "interrupted", True),
            length=int(length) if length.isdigit() else None,
            encoding=None if encoding in (None, "identity") else encoding,
            encoding_asked=asked(request_headers, encoding),
        )

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        # The same errors as requests raises, so the same rule as HttpRemote's.
        return classify(exc)

    # -- requests, one hop at a time ---------------------------------------------------

    def _request(self, request_headers: Mapping[str, str]) -> _Exchange:
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            if url == self.url or forwardable(self.url, url):
                headers, auth = dict(request_headers), self.auth
            else:
                headers = {
                    k: v for k, v in request_headers.items() if k.lower() in PORTABLE_HEADERS
                }
                auth = None
            exchange = self._send(url, headers, auth)
            location = exchange.headers().get("Location")
            if exchange.status not in REDIRECT_STATUSES or not location:
                if self.landed is not None and exchange.status < 400:
                    self.landed(url)
                return exchange
            exchange.close()
            following = urljoin(url, location)
            if not following.lower().startswith(("http://", "https://")):
                raise requests.HTTPError(
                    f"{exchange.status} redirect of {self.display} to "
                    f"{redact_text(following)!r}, which is not an http(s) link",
                    response=_response(exchange, exchange.headers(), b""),
                )
            url = following
        raise requests.TooManyRedirects(
            f"{self.display} redirected more than {MAX_REDIRECTS} times (last to "
            f"{redact(url)}): a redirect loop?",
            response=_response(exchange, exchange.headers(), b""),
        )

    def _send(
        self, url: str, headers: Mapping[str, str], auth: tuple[str, str] | None
    ) -> _Exchange:
        """Start a GET of ``url`` and wait for its headers."""
        handles = _take()
        easy = handles.easy
        url = _wire_url(url)
        exchange = _Exchange(handles, url, redact(url), (self.connect_timeout, self.read_timeout))
        try:
            configure(
                easy,
                url,
                headers,
                auth,
                self.connect_timeout,
                exchange.on_header,
                exchange.on_write,
            )
            register_socket(_Canceller(exchange))  # type: ignore[arg-type]
            handles.multi.add_handle(easy)
            handles.attached = True
            exchange.began = exchange.last_activity = time.monotonic()
            exchange.pump(want_headers=True)
            if exchange.failure is not None and (not exchange.headers_done or not exchange.status):
                raise _connection_error(exchange, self.connect_timeout)
            if not exchange.status:
                raise requests.ConnectionError(f"{exchange.display} sent no HTTP answer")
        except BaseException:
            exchange.close()
            raise
        return exchange

    def _read(self, exchange: _Exchange, size: int) -> bytes:
        buffer = exchange.buffer
        if not buffer and not exchange.done:
            exchange.pump(want_headers=False)
        if buffer:
            if len(buffer) <= size:
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[:size])
                del buffer[:size]
            return data
        if exchange.failure is not None:
            code, message = exchange.failure
            raise IncompleteDownloadError(
                f"{exchange.display}: the connection broke: {redact_text(message)} "
                f"(libcurl error {code})"
            )
        return b""

    def _raise(self, exchange: _Exchange, headers: CaseInsensitiveDict) -> None:
        content = b""
        try:
            while len(exchange.buffer) < ERROR_BODY and not exchange.done:
                exchange.pump(want_headers=False)
            content = bytes(exchange.buffer[:ERROR_BODY])
        except Exception:  # noqa: BLE001 - the status is what matters
            pass
        exchange.close()
        status = exchange.status
        kind = "Client" if status < 500 else "Server"
        if 400 <= status:
            message = f"{status} {kind} Error: {exchange.reason} for url: {self.display}"
        else:
            message = f"{status} {exchange.reason} for url: {self.display} (expected 200 or 206)"
        raise requests.HTTPError(message, response=_response(exchange, headers, content))


def configure(
    easy: Any,
    url: str,
    headers: Mapping[str, Any],
    auth: tuple[str, str] | None,
    connect_timeout: float,
    on_header: Callable[[bytes], Any],
    on_write: Callable[[bytes], Any],
) -> None:
    """Set a fresh (or reset) easy handle up for one GET of ``url`` (a wire link, see
    :func:`_wire_url`), as every libcurl request of dlutils is made: no redirect
    followed, nothing decoded, requests' headers, user agent and CA bundle; ``auth``
    (basic) or else ``~/.netrc``."""
    easy.setopt(pycurl.URL, url)
    easy.setopt(pycurl.NOSIGNAL, 1)
    easy.setopt(pycurl.FOLLOWLOCATION, 0)
    easy.setopt(pycurl.BUFFERSIZE, BUFFER_SIZE)
    easy.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000)))
    easy.setopt(pycurl.HEADERFUNCTION, on_header)
    easy.setopt(pycurl.WRITEFUNCTION, on_write)
    bundle = _ca_bundle() if url[:6].lower() == "https:" else None
    if bundle:  # a folder of hashed certificates works too, as with requests
        easy.setopt(pycurl.CAPATH if os.path.isdir(bundle) else pycurl.CAINFO, bundle)
    if not any(k.lower() == "user-agent" for k in headers):
        easy.setopt(pycurl.USERAGENT, _user_agent())
    _check_headers(headers)
    # None leaves a header out (as in requests); an empty one is sent as "Name;".
    sent = [f"{k}: {v}" if str(v) else f"{k};" for k, v in headers.items() if v is not None]
    if not any(k.lower() == "accept" for k in headers):
        sent.append("Accept: */*")
    easy.setopt(pycurl.HTTPHEADER, [_latin1(line, "header") for line in sent])
    if auth is not None:
        easy.setopt(pycurl.HTTPAUTH, pycurl.HTTPAUTH_BASIC)
        # Apart, so that a ':' in either stays theirs; latin-1, as requests sends them.
        easy.setopt(pycurl.USERNAME, _latin1(auth[0], "auth user"))
        easy.setopt(pycurl.PASSWORD, _latin1(auth[1], "auth password"))
    else:
        easy.setopt(pycurl.NETRC, pycurl.NETRC_OPTIONAL)


def _noop() -> None:
    pass


def _check_headers(headers: Mapping[str, Any]) -> None:
    """Refuse what requests refuses: a line break in a header would start another header."""
    for name, value in headers.items():
        if value is None:
            continue
        text = str(value)
        if any(c in str(name) for c in "\r\n:") or "\r" in text or "\n" in text:
            raise requests.exceptions.InvalidHeader(
                f"header {name!r} is not valid: names and values may not hold a line break "
                "(nor a name a ':')"
            )


def _latin1(text: str, what: str) -> bytes:
    """``text`` as requests and http.client send it (latin-1), or a clear error."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        shown = text.split(":", 1)[0] if what == "header" else what
        raise requests.exceptions.InvalidHeader(
            f"{what} {shown!r} holds characters that HTTP cannot carry (only latin-1); "
            "percent-encode or transliterate them"
        ) from None


def _wire_url(url: str) -> str:
    """``url`` as requests sends it: an IDNA host, non-ASCII and spaces percent-encoded."""
    if url.isascii() and " " not in url:
        return url
    prepared = requests.models.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except requests.RequestException as exc:
        raise requests.exceptions.InvalidURL(
            f"{redact(url)!r} is not a valid link: {exc}"
        ) from None
    return prepared.url or url


def _response(exchange: _Exchange, headers: CaseInsensitiveDict, content: bytes) -> Any:
    """A :class:`requests.Response` for an answer libcurl received (for ``HTTPError``)."""
    response = requests.Response()
    response.status_code = exchange.status
    response.reason = exchange.reason
    response.headers = headers
    response.url = exchange.display
    response._content = content
    response.encoding = requests.utils.get_encoding_from_headers(headers)
    return response


def _connection_error(exchange: _Exchange, connect_timeout: float) -> Exception:
    """The requests error for a transfer that failed before its answer came."""
    code, message = exchange.failure  # type: ignore[misc]
    text = f"{exchange.display}: {redact_text(message)} (libcurl error {code})"
    connected = exchange.handles.easy.getinfo(pycurl.CONNECT_TIME) > 0
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if connected:
            return requests.exceptions.ReadTimeout(text)
        return requests.exceptions.ConnectTimeout(
            f"{text}: no connection within {connect_timeout:g} s"
        )
    if code in _UNRESOLVED:
        error: Exception = requests.ConnectionError(text)
        error.__cause__ = socket.gaierror(socket.EAI_NONAME, message)
        return error
    if code == pycurl.E_COULDNT_CONNECT:
        # Name the reason as the requests transport does ("Connection refused", "No route
        # to host"): libcurl keeps the errno of the failed connect.
        number = exchange.handles.easy.getinfo(pycurl.OS_ERRNO) or errno.ECONNREFUSED
        reason = os.strerror(number)
        error = requests.ConnectionError(f"{text}: {reason}")
        cause = ConnectionRefusedError if number == errno.ECONNREFUSED else OSError
        error.__cause__ = cause(number, reason)
        return error
    if code in _SSL:
        return requests.exceptions.SSLError(text)
    if code in (pycurl.E_UNSUPPORTED_PROTOCOL, pycurl.E_URL_MALFORMAT):
        return requests.exceptions.InvalidURL(text)
    return requests.ConnectionError(text)
