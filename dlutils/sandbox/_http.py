"""The small HTTP server the stand-ins share: one handler class per stand-in, run on
127.0.0.1 in a daemon thread, answering JSON or bytes."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

__all__ = ["Handler", "ThreadedServer"]


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, no log lines, and :meth:`send` for every answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send(self, code: int, body: Any = b"", headers: dict[str, str] | None = None) -> None:
        """Answer ``code``: ``body`` as bytes, or as JSON when it is anything else
        (``None`` is an empty body); a ``Content-Length`` unless ``headers`` give one."""
        headers = dict(headers or {})
        if body is None:
            body = b""
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class ThreadedServer:
    """A :class:`http.server.ThreadingHTTPServer` on 127.0.0.1 and a free port."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()
