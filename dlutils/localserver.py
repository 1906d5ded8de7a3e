"""A real threaded HTTP/1.1 file server on 127.0.0.1, with fault injection, for demos and tests."""

from __future__ import annotations

import calendar
import email.utils
import gzip
import hashlib
import http.server
import itertools
import os
import re
import select
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

from .errors import InvalidInputError

__all__ = ["LocalServer", "Fault", "RequestRecord", "Headers"]
__all__ += ["status", "reset_after", "truncate", "stall", "no_range"]
__all__ += ["gzip_body", "ignore_if_range", "wrong_content_range", "extra_bytes", "endless"]

#: Size of the pieces a body is written in; faults and rate limits act between pieces.
CHUNK_SIZE = 256 * 1024

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_ETAG = re.compile(r'(W/)?"([^"]*)"')
_RESERVED = {"content-length", "content-range", "transfer-encoding", "connection"}
_RESERVED |= {"etag", "last-modified"}  # set through put(etag=..., last_modified=...)
_UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True, repr=False)
class Fault:
    """One injected misbehaviour, used by one request; build it with the functions below."""

    kind: str  # the name of the function that built it
    code: int = 0
    retry_after: str | None = None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    methods: frozenset[str] = frozenset({"GET"})
    nbytes: int = 0
    seconds: float = 0.0
    after_bytes: int = 0
    before_headers: bool = False
    content_range: tuple[int | None, int | None, int | None] = (None, None, None)
    length: bool = True

    def __repr__(self) -> str:
        shown = [f for f in fields(self)[1:] if getattr(self, f.name) != f.default]
        return f"{self.kind}({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"


def _at_least_0(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise InvalidInputError(f"{name}={value!r} is not valid: it must be 0 or more")


def status(
    code: int,
    *,
    retry_after: str | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    methods: Iterable[str] = ("GET",),
) -> Fault:
    """Answer with status ``code`` (and ``Retry-After``, ``body``, ``headers``) instead.

    It is used by the next request of one of ``methods`` to the path, before any lookup; the
    connection stays open. A 401 also carries ``WWW-Authenticate: Basic``.

    Examples
    --------
    >>> status(429, retry_after="2")
    status(code=429, retry_after='2')
    """
    if not 200 <= code <= 599 or (code in (204, 304) and body):
        raise InvalidInputError(f"status({code!r}) is not valid: use 200-599 (204/304: no body)")
    items, verbs = tuple((headers or {}).items()), frozenset(m.upper() for m in methods)
    return Fault("status", code, retry_after, bytes(body), items, verbs)


def reset_after(nbytes: int) -> Fault:
    """Send the headers and ``nbytes`` of the body, then abort the connection (TCP reset)."""
    _at_least_0(nbytes=nbytes)
    return Fault("reset_after", nbytes=nbytes)


def truncate(nbytes: int) -> Fault:
    """Send the headers (full ``Content-Length``) and ``nbytes`` of the body, then close (FIN)."""
    _at_least_0(nbytes=nbytes)
    return Fault("truncate", nbytes=nbytes)


def stall(seconds: float, after_bytes: int = 0, *, before_headers: bool = False) -> Fault:
    """Send the headers and ``after_bytes`` of the body, wait ``seconds``, then carry on.

    ``before_headers=True`` waits before the status line instead. Stopping the server ends it.
    """
    _at_least_0(seconds=seconds, after_bytes=after_bytes)
    return Fault("stall", seconds=seconds, after_bytes=after_bytes, before_headers=before_headers)


def no_range() -> Fault:
    """Answer like a server without range support: ``200``, the whole body, no Accept-Ranges."""
    return Fault("no_range")


def gzip_body() -> Fault:
    """Compress the body (whole, or the range asked) with gzip and say so in
    ``Content-Encoding``, whatever the request's ``Accept-Encoding`` (``identity`` included).

    ``Content-Length`` counts the compressed bytes; ``Content-Range`` still names the range.

    Examples
    --------
    >>> import gzip as gz, http.client
    >>> with LocalServer({"a.txt": b"hello"}) as server:
    ...     server.add_fault("a.txt", gzip_body())
    ...     conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    ...     conn.request("GET", "/a.txt", headers={"Accept-Encoding": "identity"})
    ...     resp = conn.getresponse()
    ...     print(resp.getheader("Content-Encoding"), gz.decompress(resp.read()))
    ...     conn.close()
    gzip b'hello'
    """
    return Fault("gzip_body")


def ignore_if_range() -> Fault:
    """Honour ``Range`` even when ``If-Range`` names another version (as some CDNs do):
    a range of the current version comes back, with the current validators."""
    return Fault("ignore_if_range")


def wrong_content_range(
    start: int | None = None, end: int | None = None, total: int | None = None
) -> Fault:
    """Send these numbers in ``Content-Range`` (``None`` keeps the true one); the body and
    ``Content-Length`` stay those of the true range. A 200 gets the header too."""
    for name, value in (("start", start), ("end", end), ("total", total)):
        if value is not None:
            _at_least_0(**{name: value})
    return Fault("wrong_content_range", content_range=(start, end, total))


def extra_bytes(nbytes: int, *, length: bool = True) -> Fault:
    """Send ``nbytes`` bytes more than the answer announces, then close the connection.

    With ``length=True``, ``Content-Length`` (and ``Content-Range``) announce the right
    body and the extra bytes follow it, where a client must not take them as the body.
    With ``length=False`` no ``Content-Length`` is sent: the body runs ``nbytes`` past
    what ``Content-Range`` (or the file) says, up to the close.
    """
    _at_least_0(nbytes=nbytes)
    return Fault("extra_bytes", nbytes=nbytes, length=length)


def endless() -> Fault:
    """Answer 200 with no ``Content-Length`` and a body that never ends (until the client
    goes away or the server stops), whatever was asked."""
    return Fault("endless")


class Headers(Mapping[str, str]):
    """A read-only, case-insensitive copy of request headers; repeats are joined by ``", "``."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            if (old := self._items.get(name.lower())) is not None:
                name, value = old[0], f"{old[1]}, {value}"
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass
class RequestRecord:
    """One request, logged as it arrives and filled in before each byte of the answer is sent.

    ``path`` is percent-decoded with a leading ``/``, ``query`` is the raw query string,
    ``range`` the Range header, ``status`` 0 until answered, ``bytes_sent`` counts body
    bytes, ``fault`` is the fault used and ``connection`` numbers the TCP connection.
    """

    method: str
    path: str
    query: str
    headers: Headers
    range: str | None
    connection: int
    status: int = 0
    bytes_sent: int = 0
    fault: Fault | None = None


@dataclass(frozen=True)
class _File:
    data: bytes | None  # None: read from the open file the lookup returned (directory mode)
    size: int
    etag: str
    last_modified: float
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Redirect:
    location: str
    code: int


def _key(path: str) -> str:
    if not isinstance(path, str) or not path.strip("/"):
        raise InvalidInputError(f"path {path!r} is not valid: give one such as 'data/a.bin'")
    return path.lstrip("/")


def _parse_date(value: str | None) -> int | None:
    parsed = email.utils.parsedate_tz(value) if value else None  # the 3 HTTP-date formats
    return None if parsed is None else calendar.timegm(parsed[:6]) - (parsed[9] or 0)


def _etag_match(header: str, etag: str | None, *, weak: bool) -> bool:
    """RFC 9110 comparison of ``*`` or a list of entity tags with an existing file's ``etag``."""
    if header.strip() == "*" or etag is None:
        return header.strip() == "*"
    mine_weak, mine = _ETAG.match(etag).groups() if _ETAG.match(etag) else (None, etag)
    return any(t == mine and (weak or not (w or mine_weak)) for w, t in _ETAG.findall(header))


def _unsent_bytes(sock: socket.socket) -> int:
    try:  # Linux: bytes in the send queue the peer has not acknowledged yet
        import fcntl
        import termios

        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return struct.unpack("i", out)[0]
    except (ImportError, AttributeError, OSError):
        return 0


def _content_disposition(filename: str) -> str:
    plain = filename.encode("ascii", "replace").decode().replace("\\", "_").replace('"', "_")
    extended = f"; filename*=UTF-8''{quote(filename, safe='')}" if plain != filename else ""
    return f'attachment; filename="{plain}"{extended}'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dlutils-localserver"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:  # quiet: LocalServer.requests
        pass

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        # put() may date a file a few seconds ahead of the wall clock: Date keeps up with it.
        now = max(time.time(), self.server.owner._clock) if timestamp is None else timestamp
        return email.utils.formatdate(now, usegmt=True)

    def setup(self) -> None:
        super().setup()
        self.conn_id = self.server.owner._next_conn()

    def do_GET(self) -> None:
        owner = self.server.owner
        raw, _, query = self.path.partition("?")
        if "://" in raw:  # absolute-form request target
            raw, query = urlsplit(self.path).path, urlsplit(self.path).query
        path = "/" + unquote(raw).lstrip("/")
        headers, rng = Headers(self.headers.items()), self.headers.get("Range")
        self.record = RequestRecord(self.command, path, query, headers, rng, self.conn_id)
        owner._enter(self.record)
        try:
            if self.command in ("GET", "HEAD"):
                self._respond(owner, path.lstrip("/"))
            else:
                self._reply(405, {"Allow": "GET, HEAD", "Connection": "close"})  # body unread
        except ConnectionError:
            self.close_connection = True
        finally:
            owner._leave()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _reply(self, code: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self.record.status = code
        self.send_response(code)
        if code != 304 and "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            if value is not None:  # None: leave the header out (Content-Length above too)
                self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.record.bytes_sent = len(body)
            self.wfile.write(body)

    def _respond(self, owner: LocalServer, key: str) -> None:
        fault = owner._pop_fault(key, lambda f: f.kind == "status" and self.command in f.methods)
        if fault is not None:
            self.record.fault = fault
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.code == 401:
                extra["WWW-Authenticate"] = 'Basic realm="dlutils"'
            if fault.body:
                extra["Content-Type"] = "text/plain; charset=utf-8"
            return self._reply(fault.code, {**extra, **dict(fault.headers)}, fault.body)
        route = owner._lookup(key)
        if isinstance(route, _Redirect):
            return self._reply(route.code, {"Location": route.location})
        if route is None:
            return self._reply(404, {"Content-Type": "text/plain"}, b"Not Found\n")
        file, fh = route
        try:
            self._send_file(owner, key, file, fh)
        finally:
            if fh is not None:
                fh.close()

    def _send_file(self, owner: LocalServer, key: str, file: _File, fh: BinaryIO | None) -> None:
        etag = file.etag if owner.send_etag else None
        lm = int(file.last_modified) if owner.send_last_modified else None
        validators = {"ETag": etag} if etag else {}
        if lm is not None:
            validators["Last-Modified"] = email.utils.formatdate(lm, usegmt=True)
        if code := self._preconditions(etag, lm):
            return self._reply(code, validators)
        ranged = owner.support_ranges and self.command == "GET"  # Range means nothing to HEAD
        rng = self._range(file.size, etag, lm) if ranged else None
        fault = self.record.fault = owner._pop_fault(
            key,
            lambda f: f.kind != "status" and self.command == "GET"
            and (f.kind in ("no_range", "endless") or rng != _UNSATISFIABLE),
        )  # fmt: skip
        kind = fault.kind if fault is not None else None
        if kind == "ignore_if_range" and ranged:
            rng = self._range(file.size, etag, lm, if_range=False)
        plain = not owner.support_ranges or kind in ("no_range", "endless")
        rng = None if plain else rng
        accept = {} if plain else {"Accept-Ranges": "bytes"}
        if rng == _UNSATISFIABLE:
            return self._reply(416, {**accept, "Content-Range": f"bytes */{file.size}"})
        start, end = rng if rng else (0, file.size - 1)
        headers = {"Content-Type": "application/octet-stream", **accept, **validators}
        headers["Content-Length"] = str(end - start + 1)
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
        names = owner.content_disposition
        if filename := names.get(key) or names.get("/" + key):
            headers["Content-Disposition"] = _content_disposition(filename)
        for name, value in file.headers:  # the file's own headers replace the defaults
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            headers[name] = value
        if fault is not None and fault.kind == "stall" and fault.before_headers:
            owner._stopping.wait(fault.seconds)
        view = memoryview(file.data) if file.data is not None else None

        def read(offset: int, n: int) -> bytes | memoryview:
            if view is not None:
                return view[offset : offset + n]
            fh.seek(offset)
            return fh.read(n)

        code, length = 206 if rng else 200, end - start + 1
        if kind == "wrong_content_range":
            given = zip(fault.content_range, (start, end, file.size), strict=True)
            headers["Content-Range"] = "bytes {}-{}/{}".format(
                *(g if g is not None else t for g, t in given)
            )
        elif kind == "gzip_body" and self.command == "GET":
            packed = gzip.compress(bytes(read(start, length)), mtime=0)
            headers["Content-Encoding"] = "gzip"
            headers["Content-Length"] = str(len(packed))
            return self._reply(code, headers, packed)
        elif kind == "endless":
            headers = {k: v for k, v in headers.items() if k != "Content-Range"}
            headers.update({"Content-Length": None, "Connection": "close"})
            self._reply(200, headers)
            return self._send_endless(owner)
        elif kind == "extra_bytes":
            if not fault.length:
                headers.update({"Content-Length": None, "Connection": "close"})
            size = file.size

            def read(offset: int, n: int, plain=read) -> bytes | memoryview:  # noqa: F811
                if offset < size:
                    return plain(offset, min(n, size - offset))
                return b"\xee" * n  # past the end of the file

            length += fault.nbytes
        self._reply(code, headers)
        if self.command == "GET":
            self._send_body(owner, read, start, length, fault)
            if kind == "extra_bytes":
                self.close_connection = True

    def _send_endless(self, owner: LocalServer) -> None:
        piece = bytes(range(256)) * (CHUNK_SIZE // 256)
        self.close_connection = True
        while not owner._stopping.is_set():
            self.wfile.write(piece)
            self.record.bytes_sent += len(piece)

    def _preconditions(self, etag: str | None, lm: int | None) -> int:
        """RFC 9110 section 13.2.2, in its order; returns 412, 304 or 0 (go on)."""
        h = self.headers
        if (if_match := h.get("If-Match")) is not None:
            if not _etag_match(if_match, etag, weak=False):
                return 412
        elif (since := _parse_date(h.get("If-Unmodified-Since"))) is not None:
            if lm is not None and lm > since:
                return 412
        if (if_none_match := h.get("If-None-Match")) is not None:
            return 304 if _etag_match(if_none_match, etag, weak=True) else 0
        since = _parse_date(h.get("If-Modified-Since"))
        return 304 if since is not None and lm is not None and lm <= since else 0

    def _range(
        self, size: int, etag: str | None, lm: int | None, *, if_range: bool = True
    ) -> tuple[int, int] | str | None:
        """The one byte range to send, ``_UNSATISFIABLE``, or None for the whole body."""
        match = _RANGE.match(self.headers.get("Range") or "")
        if match is None:  # absent, another unit, several ranges or bad syntax: ignored
            return None
        if (cond := (self.headers.get("If-Range") or "").strip() if if_range else "") and (
            not _etag_match(cond, etag, weak=False)
            if cond.startswith(('"', "W/"))  # an entity tag, else an HTTP-date
            else lm is None or _parse_date(cond) != lm
        ):
            return None  # the client's copy is not the current one: send it all
        first, last = match.groups()
        if not first:  # bytes=-N, the last N bytes
            if not last or not size:
                return None
            return (max(0, size - int(last)), size - 1) if int(last) else _UNSATISFIABLE
        start, end = int(first), int(last) if last else size - 1
        if last and end < start:
            return None
        return _UNSATISFIABLE if start >= size else (start, min(end, size - 1))

    def _send_body(self, owner: LocalServer, read, start: int, length: int, fault) -> None:
        kind = fault.kind if fault is not None else None
        limit = min(length, fault.nbytes) if kind in ("reset_after", "truncate") else length
        stalls = kind == "stall" and not fault.before_headers
        stall_at = min(fault.after_bytes, length) if stalls else -1
        rate = owner.rate_limit
        piece = max(1, min(CHUNK_SIZE, rate // 20)) if rate else CHUNK_SIZE
        began, sent = time.monotonic(), 0
        while True:
            if sent == stall_at:
                stall_at = -1
                if owner._stopping.wait(fault.seconds):
                    break
            if sent >= limit:
                break
            n = min(piece, limit - sent)
            if stall_at > sent:
                n = min(n, stall_at - sent)
            chunk = read(start + sent, n)
            if not chunk:  # the file shrank under us
                break
            sent += len(chunk)
            self.record.bytes_sent = sent  # counted first: the log is never behind the client
            self.wfile.write(chunk)
            # No pause after the last piece: the answer is complete, and a request still
            # counted in progress then would inflate max_concurrent.
            delay = began + sent / rate - time.monotonic() if rate and sent < limit else 0
            if delay > 0 and self._pace(owner, delay):
                break
        if sent < length:
            self.close_connection = True
        if kind == "reset_after":  # once the bytes sent have reached the client, RST
            deadline = time.monotonic() + 5.0
            while _unsent_bytes(self.connection) and time.monotonic() < deadline:
                if owner._stopping.wait(0.005):
                    break
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.rfile.close()  # drop the makefile reference so that close() really closes
            self.connection.close()

    def _pace(self, owner: LocalServer, delay: float) -> bool:
        """Wait ``delay`` s between pieces; True when the server stops or the client hung up.

        A client that closed its connection ends the answer at once, so the request
        stops counting as in progress (``max_concurrent``) when the client left it.
        """
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if owner._stopping.is_set():
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    gone = not self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    gone = True
                if gone:
                    return True
                return owner._stopping.wait(max(0.0, deadline - time.monotonic()))
        return owner._stopping.is_set()


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, owner: LocalServer, port: int):
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:  # without HTTPServer's reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        args = (request, client_address)
        thread = threading.Thread(target=self.process_request_thread, args=args, daemon=True)
        with self.owner._lock:
            self.owner._connections[request] = thread
        thread.start()

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.owner._lock:
                self.owner._connections.pop(request, None)

    def handle_error(self, request, client_address) -> None:  # quiet, but keep real bugs
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError) and not (
            isinstance(error, OSError) and self.owner._stopping.is_set()
        ):
            self.owner.errors.append(error)


class LocalServer:
    """A threaded HTTP/1.1 file server on 127.0.0.1 that can misbehave on request.

    Parameters
    ----------
    files : mapping of str to bytes, optional
        Files to serve by path (``"data/a.bin"``); :meth:`put` adds more.
    directory : str or os.PathLike, optional
        A folder whose files are served too, read at request time (``put`` files win).
    host : str
        ``"127.0.0.1"`` (or ``"localhost"``) only: the server never listens elsewhere.
    port : int
        ``0`` picks a free port.

    Attributes
    ----------
    rate_limit : int or None
        Bytes per second each response is paced to (``None``: no limit).
    support_ranges, send_etag, send_last_modified : bool
        Turn off to imitate simpler servers.
    content_disposition : dict
        Path -> file name to send in ``Content-Disposition: attachment``.
    max_concurrent, active : int
        The most requests in progress at one moment so far, and those in progress now.
    errors : list
        Unexpected exceptions raised by request handlers (client disconnects are expected).

    Examples
    --------
    >>> import http.client
    >>> with LocalServer({"data/a.bin": b"hello world"}) as server:
    ...     conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    ...     conn.request("GET", "/data/a.bin", headers={"Range": "bytes=6-"})
    ...     resp = conn.getresponse()
    ...     print(resp.status, resp.getheader("Content-Range"), resp.read())
    ...     conn.close()
    206 bytes 6-10/11 b'world'
    """

    def __init__(
        self,
        files: Mapping[str, bytes] | None = None,
        *,
        directory: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        if host not in ("127.0.0.1", "localhost"):
            raise InvalidInputError(f"host {host!r} is refused: LocalServer binds 127.0.0.1 only")
        if directory is not None and not os.path.isdir(directory):
            raise InvalidInputError(f"directory {os.fspath(directory)!r} is not an existing folder")
        self.host, self.port = "127.0.0.1", port
        self.directory = os.fspath(directory) if directory is not None else None
        self.rate_limit: int | None = None
        self.support_ranges = self.send_etag = self.send_last_modified = True
        self.content_disposition: dict[str, str] = {}
        self.errors: list[BaseException] = []
        self.max_concurrent = self.active = 0
        self._lock = threading.Lock()
        self._routes: dict[str, _File | _Redirect] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._log: list[RequestRecord] = []
        self._clock = 0  # the last Last-Modified second put() handed out
        self._conn_ids = itertools.count(1)
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        for path, data in (files or {}).items():
            self.put(path, data)

    def __repr__(self) -> str:
        state = "running" if self._httpd else "stopped"
        return f"<LocalServer {self._url or '(never started)'} files={len(self._routes)} {state}>"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"``, without a trailing slash (known once started)."""
        if self._url is None:
            raise RuntimeError("LocalServer has no URL yet: call start() or use it in a `with`")
        return self._url

    def url_for(self, path: str) -> str:
        """The full URL of ``path``, percent-encoded.

        Examples
        --------
        >>> with LocalServer() as server:
        ...     server.url_for("my data/é.bin").removeprefix(server.url)
        '/my%20data/%C3%A9.bin'
        """
        return f"{self.url}/{quote(_key(path), safe='/')}"

    def start(self) -> LocalServer:
        """Listen on 127.0.0.1 and serve from background threads; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError(f"LocalServer is already running at {self._url}")
        self._stopping.clear()
        self._httpd = httpd = _HTTPServer(self, self.port)
        self.port = httpd.server_address[1]
        self._url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop serving: wake stalled handlers, close every socket and join the threads."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        thread.join()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes handlers blocked on the socket
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for sock, handler in connections:
            handler.join(max(0.0, deadline - time.monotonic()))
            if handler.is_alive():
                sock.close()
        self._httpd = self._thread = None

    def __enter__(self) -> LocalServer:
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def put(
        self,
        path: str,
        data: bytes,
        *,
        etag: str | None = None,
        last_modified: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Add or replace the file at ``path`` (``"data/a.bin"``, leading ``/`` optional).

        Parameters
        ----------
        etag : str, optional
            Defaults to the quoted md5 hex of ``data``; quotes are added when missing.
        last_modified : float, optional
            A POSIX time. Defaults to now, but always a later second than the previous
            default, so that every ``put`` changes ``Last-Modified``.
        headers : mapping, optional
            More response headers (or a new ``Content-Type``); not validators or framing.

        Examples
        --------
        >>> server = LocalServer()
        >>> server.put("a.bin", b"abc", etag="v1", headers={"Content-Type": "text/plain"})
        >>> server.put("b.bin", b"abc", headers={"Content-Length": "9"})
        Traceback (most recent call last):
        ...
        dlutils.errors.InvalidInputError: header 'Content-Length' is set by the server; \
use put(..., etag=..., last_modified=...) for validators
        """
        key = _key(path)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInputError(f"data for {path!r} must be bytes, not {type(data).__name__}")
        if bad := [name for name in headers or {} if name.lower() in _RESERVED]:
            raise InvalidInputError(
                f"header {bad[0]!r} is set by the server; use put(..., etag=..., "
                "last_modified=...) for validators"
            )
        data = bytes(data)
        if etag is None:
            etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        elif not etag.startswith(('"', 'W/"')):
            etag = f'"{etag}"'
        with self._lock:
            if last_modified is None:
                last_modified = self._clock = max(int(time.time()), self._clock + 1)
            extra = tuple((headers or {}).items())
            self._routes[key] = _File(data, len(data), etag, last_modified, extra)

    def delete(self, path: str) -> None:
        """Remove the file or redirect at ``path`` (``KeyError`` when there is none)."""
        with self._lock:
            if self._routes.pop(_key(path), None) is None:
                raise KeyError(f"no file or redirect was put at {path!r}")

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer requests for ``path`` with a redirect to ``location``.

        ``location`` is sent as given when it is a URL or starts with ``/``; otherwise it is
        a path on this server, such as ``"data/b.bin"``, and is percent-encoded.
        """
        if status not in (301, 302, 303, 307, 308):
            raise InvalidInputError(f"redirect status {status!r} is not 301, 302, 303, 307 or 308")
        if "://" not in location and not location.startswith("/"):
            location = "/" + quote(location, safe="/")
        with self._lock:
            self._routes[_key(path)] = _Redirect(location, status)

    def add_fault(self, path: str, fault: Fault) -> None:
        """Queue ``fault`` for ``path``: queued faults are used in order, one per request.

        A :func:`status` fault is used by the next request of its methods. The other kinds
        wait for a GET answered with a body (200 or 206): a 304, 404 or 416 leaves them queued.

        Examples
        --------
        >>> import http.client
        >>> with LocalServer({"a.bin": b"abc"}) as server:
        ...     server.add_fault("a.bin", status(503, retry_after="1"))
        ...     conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        ...     for _ in range(2):
        ...         conn.request("GET", "/a.bin")
        ...         resp = conn.getresponse()
        ...         print(resp.status, resp.getheader("Retry-After"), resp.read())
        ...     conn.close()
        503 1 b''
        200 None b'abc'
        """
        if not isinstance(fault, Fault):
            raise InvalidInputError(f"{fault!r} is not a Fault: make one with status(), stall()...")
        with self._lock:
            self._faults.setdefault(_key(path), deque()).append(fault)

    def pending_faults(self, path: str) -> list[Fault]:
        """The faults still queued for ``path``, next first."""
        with self._lock:
            return list(self._faults.get(_key(path), ()))

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, in the order the requests arrived."""
        with self._lock:
            return list(self._log)

    def requests_for(self, path: str) -> list[RequestRecord]:
        """The logged requests for ``path`` (leading ``/`` optional)."""
        return [r for r in self.requests if r.path == "/" + path.lstrip("/")]

    def clear_log(self) -> None:
        """Empty the request log and restart ``max_concurrent`` from ``active``."""
        with self._lock:
            self._log.clear()
            self.max_concurrent = self.active

    # -- called from the handler threads -----------------------------------------------------

    def _next_conn(self) -> int:
        with self._lock:
            return next(self._conn_ids)

    def _enter(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self.active += 1
            self.max_concurrent = max(self.max_concurrent, self.active)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def _pop_fault(self, key: str, applies: Callable[[Fault], bool]) -> Fault | None:
        with self._lock:
            queue = self._faults.get(key)
            return queue.popleft() if queue and applies(queue[0]) else None

    def _lookup(self, key: str) -> _Redirect | tuple[_File, BinaryIO | None] | None:
        with self._lock:
            route = self._routes.get(key)
        if route is not None:
            return route if isinstance(route, _Redirect) else (route, None)
        parts = key.split("/")
        if self.directory is None or "\\" in key or "\x00" in key or {"", ".", ".."} & set(parts):
            return None
        root = os.path.realpath(self.directory)
        full = os.path.realpath(os.path.join(root, *parts))  # symlinks may not lead out
        try:
            if os.path.commonpath([root, full]) != root or not stat.S_ISREG(os.stat(full).st_mode):
                return None
            fh = open(full, "rb")  # the handler closes it
        except (OSError, ValueError):
            return None
        st = os.fstat(fh.fileno())
        return _File(None, st.st_size, f'"{st.st_size:x}-{st.st_mtime_ns:x}"', st.st_mtime), fh
