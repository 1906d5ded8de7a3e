"""A fault-injecting reverse proxy on 127.0.0.1, put between dlutils and a LocalServer.

:class:`FaultProxy` forwards each GET/HEAD (``Range``, ``If-Range`` and conditional
headers included) to an origin :class:`~dlutils.localserver.LocalServer`, reads the
origin's answer whole, and then, with probability ``rate``, answers with one
misbehaviour instead of the honest answer. The choice is drawn from a
``random.Random`` seeded with ``(seed, path, n)``, ``n`` counting the requests for that
path, so a run makes the same choices for every object whatever the thread interleaving.

Every fault the engine is meant to survive is here (see ``KINDS``); each one is
detectable by a careful client from what is on the wire, so a download that places
wrong bytes has a bug (a lie no client could see through, such as a short
``Content-Length`` on a plain 200, is deliberately not injected):

==================  ===============================================================
reset               headers and part of the body, then a TCP reset
truncate            headers (full ``Content-Length``) and part of the body, then FIN
stall               part of the body, a pause of ``stall_seconds``, then the rest
stall_headers       a pause of ``stall_seconds`` before the status line
stall_long          part of the body, then silence for ``long_stall_seconds`` and FIN
status_500          ``500``; ``status_503``/``status_429`` likewise, and the
status_503_ra       ``_ra`` kinds with ``Retry-After`` (``retry_after``, 0 or 1 s)
length_short        a 206 whose ``Content-Length`` is smaller than its
                    ``Content-Range`` (the whole range follows anyway), then FIN
length_long         a ``Content-Length`` larger than the body, then FIN
content_range       a range from another offset than asked (truthfully labelled), or
                    a ``206`` with the first half to a request for the whole object
extra_bytes         junk after the body: past ``Content-Range`` on a 206 (no
                    ``Content-Length``, close-delimited), after ``Content-Length`` on a 200
range_ignored       ``200`` with the whole object to a ``Range`` request
if_range_ignored    part of the body then a reset, and the origin switches to the
                    path's other version (see ``versions``); from then on ``If-Range``
                    is dropped for that path, so a resume gets a range of the new version
gzip                ``Content-Encoding: gzip`` and the gzipped body, despite
                    ``Accept-Encoding: identity`` (200 answers only)
==================  ===============================================================

Range requests (resumes, segments) are rarer than plain ones, so 3 in 4 of their faults
are drawn from the kinds only they can meet (``length_short``, ``range_ignored``,
``content_range``, ``if_range_ignored``), and half the faults of a path with two
``versions`` are ``if_range_ignored``. ``force(path, *kinds)`` queues faults for the next
requests of one path, whatever the rate. ``counts`` tallies the faults injected by kind;
``log`` lists every request.
"""

from __future__ import annotations

import gzip
import http.client
import http.server
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from dlutils.localserver import LocalServer

__all__ = ["FaultProxy", "KINDS", "DEFAULT_KINDS"]

KINDS = (
    "reset",
    "truncate",
    "stall",
    "stall_headers",
    "stall_long",
    "status_500",
    "status_503",
    "status_503_ra",
    "status_429",
    "status_429_ra",
    "length_short",
    "length_long",
    "content_range",
    "extra_bytes",
    "range_ignored",
    "if_range_ignored",
    "gzip",
)
#: What a random fault is drawn from: all but ``stall_long``, which needs a short timeout.
DEFAULT_KINDS = tuple(k for k in KINDS if k != "stall_long")

#: Faults only a range request can meet; half the faults of range requests are of these kinds.
_RANGE_KINDS = ("length_short", "range_ignored", "content_range", "if_range_ignored")
_HOP = {"connection", "keep-alive", "transfer-encoding", "date", "server", "content-length"}
#: Bytes after a body: no object's, and no HTTP either (a client reusing the connection
#: must fail on them, not read them as the next answer).
_JUNK = b"\xa5" * 512


@dataclass
class Entry:
    """One request the proxy answered."""

    method: str
    path: str
    range: str | None
    fault: str | None
    status: int
    bytes_sent: int = 0


def _fits(kind: str, method: str, ranged: bool, versions: bool) -> bool:
    """Whether ``kind`` suits this request (before it is forwarded)."""
    if kind.startswith("status_"):
        return True
    if method != "GET":
        return False
    if kind in ("length_short", "range_ignored"):
        return ranged
    if kind == "gzip":
        return not ranged
    if kind == "if_range_ignored":
        return versions
    return True


def _applies(kind: str, status: int, size: int) -> bool:
    """Whether ``kind`` can be injected into the origin's answer (and is detectable there)."""
    if kind.startswith("status_"):
        return True
    if status not in (200, 206) or size < 2:
        return False
    if kind == "length_short":
        return status == 206
    if kind in ("range_ignored", "gzip"):
        return status == 200
    return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        proxy = self.server.proxy
        path = self.path.split("?", 1)[0]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        ranged = any(k.lower() == "range" for k in headers)
        kind, self.number = proxy._draw(path, self.command, ranged)
        if proxy._ignores_if_range(path):
            headers = {k: v for k, v in headers.items() if k.lower() != "if-range"}
        if kind == "range_ignored" or (kind == "content_range" and not ranged):
            headers = {k: v for k, v in headers.items() if k.lower() not in ("range", "if-range")}
        if kind == "content_range" and ranged:
            headers = self._shifted(headers)
        status, reason, out, body = proxy._forward(self.command, self.path, headers)
        if kind is not None and not _applies(kind, status, len(body)):
            kind = None
        entry = Entry(self.command, path, self.headers.get("Range"), kind, status)
        with proxy._lock:
            proxy.log.append(entry)
            if kind is not None:
                proxy.counts[kind] += 1
        try:
            self._answer(proxy, kind, status, reason, out, body, entry)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    do_HEAD = do_GET

    def _shifted(self, headers: dict[str, str]) -> dict[str, str]:
        """Ask the origin for a range starting elsewhere than the client asked."""
        for name, value in headers.items():
            if name.lower() == "range" and value.startswith("bytes=") and "-" in value:
                first, _, last = value[6:].partition("-")
                if first.isdigit():
                    start = int(first)
                    moved = start // 2 if start else 1
                    return {**headers, name: f"bytes={moved}-{last}"}
        return headers

    def _answer(self, proxy, kind, status, reason, out, body, entry) -> None:
        rng = random.Random(f"{proxy.seed}:cut:{entry.path}:{self.number}")
        cut = rng.randrange(1, len(body)) if len(body) >= 2 else 0
        if kind is not None and kind.startswith("status_"):
            code = int(kind.split("_")[1])
            extra = {"Retry-After": proxy.retry_after} if kind.endswith("_ra") else {}
            entry.status = code
            return self._head(code, "Fault", {**extra, "Content-Length": "0"})
        if kind == "stall_headers":
            time.sleep(proxy.stall_seconds)
        if kind == "content_range" and status == 200:  # a part to a request for the whole
            half = max(1, len(body) // 2)
            out = {**out, "Content-Range": f"bytes 0-{half - 1}/{len(body)}"}
            status, reason, body = 206, "Partial Content", body[:half]
        if kind == "gzip":
            body = gzip.compress(body, mtime=0)
            out = {**out, "Content-Encoding": "gzip"}
        length = len(body)
        if kind == "length_short":
            length = max(0, len(body) - max(1, cut // 2))
        elif kind == "length_long":
            length = len(body) + 1 + cut
        framed = not (kind == "extra_bytes" and status == 206)
        if framed:
            out = {**out, "Content-Length": str(length)}
        else:
            out = {**out, "Connection": "close"}
        entry.status = status
        self._head(status, reason, out)
        if self.command == "HEAD":
            return
        if kind in ("reset", "truncate", "if_range_ignored"):
            self._send(body[:cut], entry)
            if kind == "if_range_ignored":
                proxy._switch(entry.path)
            self._close(reset=kind != "truncate")
        elif kind in ("stall", "stall_long"):
            self._send(body[:cut], entry)
            if kind == "stall_long":
                time.sleep(proxy.long_stall_seconds)
                return self._close(reset=False)
            time.sleep(proxy.stall_seconds)
            self._send(body[cut:], entry)
        elif kind == "extra_bytes":
            self._send(body + _JUNK, entry)
            if not framed:
                self._close(reset=False)
        else:
            self._send(body, entry)
            if kind in ("length_short", "length_long"):
                self._close(reset=False)

    def _head(self, code: int, reason: str, headers: dict[str, str]) -> None:
        self.send_response(code, reason)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, data: bytes, entry: Entry) -> None:
        entry.bytes_sent += len(data)
        with self.server.proxy._lock:
            self.server.proxy.bytes_sent += len(data)
        self.wfile.write(data)

    def _close(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:  # let the bytes already written reach the client, then RST
            deadline = time.monotonic() + 2.0
            while _unsent(self.connection) and time.monotonic() < deadline:
                time.sleep(0.002)
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.rfile.close()
        self.connection.close()


def _unsent(sock: socket.socket) -> int:
    try:
        import fcntl
        import termios

        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return struct.unpack("i", out)[0]
    except (ImportError, OSError):
        return 0


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:  # clients hang up: expected
        pass


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``origin`` that misbehaves at ``rate``.

    Parameters
    ----------
    origin : LocalServer
        A started server; the proxy forwards every request to it.
    rate : float
        Probability that a request gets a fault (0 to 1).
    seed : int
        Seeds the choices (per path and request number).
    kinds : sequence of str
        The faults drawn from (default: :data:`DEFAULT_KINDS`).
    versions : dict of str to (bytes, bytes)
        Paths (``"/d/a.bin"``) whose object exists in two versions; ``if_range_ignored``
        swaps the origin between them. Put the first version on the origin yourself.

    Examples
    --------
    >>> import urllib.request
    >>> with LocalServer({"a.bin": b"hello"}) as origin, FaultProxy(origin, rate=0) as proxy:
    ...     proxy.force("/a.bin", "status_503_ra")
    ...     urllib.request.urlopen(proxy.url + "/a.bin").read()
    Traceback (most recent call last):
    ...
    urllib.error.HTTPError: HTTP Error 503: Fault
    >>> with LocalServer({"a.bin": b"hello"}) as origin, FaultProxy(origin, rate=0) as proxy:
    ...     urllib.request.urlopen(proxy.url + "/a.bin").read(), dict(proxy.counts)
    (b'hello', {})
    """

    def __init__(
        self,
        origin: LocalServer,
        *,
        rate: float = 0.2,
        seed: int = 0,
        kinds: tuple[str, ...] = DEFAULT_KINDS,
        versions: dict[str, tuple[bytes, bytes]] | None = None,
        stall_seconds: float = 0.3,
        long_stall_seconds: float = 3.0,
        retry_after: str = "1",
    ):
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        self.origin, self.rate, self.seed, self.kinds = origin, rate, seed, tuple(kinds)
        self.versions = dict(versions or {})
        self.stall_seconds, self.long_stall_seconds = stall_seconds, long_stall_seconds
        self.retry_after = retry_after
        self.counts: Counter[str] = Counter()
        self.log: list[Entry] = []
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._forced: dict[str, deque[str]] = {}
        self._current: dict[str, int] = {}  # path -> index of the version on the origin
        self._no_if_range: set[str] = set()
        self._server: _Server | None = None
        self.url = ""

    def __enter__(self) -> FaultProxy:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def force(self, path: str, *kinds: str) -> None:
        """Inject ``kinds`` into the next requests for ``path`` (``"/d/a.bin"``), in order;
        ``"none"`` lets one request through untouched."""
        if unknown := set(kinds) - set(KINDS) - {"none"}:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        with self._lock:
            self._forced.setdefault(path, deque()).extend(kinds)

    @property
    def faults(self) -> int:
        """How many faults were injected in all."""
        return sum(self.counts.values())

    # -- used by the handler threads --------------------------------------------------

    def _draw(self, path: str, method: str, ranged: bool) -> tuple[str | None, int]:
        """The fault for this request (or None), and the request's number for its path."""
        with self._lock:
            n = self._seen[path]
            self._seen[path] += 1
            if queue := self._forced.get(path):
                kind = queue.popleft()
                return (None if kind == "none" else kind), n
        rng = random.Random(f"{self.seed}:{path}:{n}")
        if rng.random() >= self.rate:
            return None, n
        fitting = [k for k in self.kinds if _fits(k, method, ranged, path in self.versions)]
        special = [k for k in fitting if k in _RANGE_KINDS]
        if path in self.versions and "if_range_ignored" in fitting and rng.random() < 0.5:
            return "if_range_ignored", n  # the reason a path has two versions
        if ranged and special and rng.random() < 0.75:  # resumes are rare: favour their faults
            fitting = special
        return (rng.choice(fitting) if fitting else None), n

    def _ignores_if_range(self, path: str) -> bool:
        with self._lock:
            return path in self._no_if_range

    def _switch(self, path: str) -> None:
        with self._lock:
            now = self._current[path] = 1 - self._current.get(path, 0)
            self._no_if_range.add(path)
        self.origin.put(path, self.versions[path][now])

    def _forward(self, method: str, target: str, headers: dict[str, str]):
        conn = http.client.HTTPConnection("127.0.0.1", self.origin.port, timeout=30)
        try:
            conn.request(method, target, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            return resp.status, resp.reason, out, body
        finally:
            conn.close()
