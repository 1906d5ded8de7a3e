"""GCS test servers: gcp-storage-emulator in a subprocess, and a small paginating fake of our own.

gcp-storage-emulator ignores ``maxResults``, never returns ``nextPageToken``, ignores
``ifGenerationMatch``, checks no credentials and refuses names such as ``../evil.txt``.
:class:`FakeGcs` implements just what those tests need of the JSON API, for real, over
HTTP: paginated listings, metadata, media with ``Range`` and ``ifGenerationMatch`` (412),
an optional bearer token, and bytes served differently from what the metadata says.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests

from dlutils.checksums import crc32c

# Fixtures are defined under ``*_fixture`` names and registered as ``name=``: a test module
# imports the function names, so its parameters do not shadow an import (ruff F811).
__all__ = ["gcs_emulator_fixture", "gcs_env_fixture", "gcs_bucket_fixture", "fake_gcs_fixture"]
__all__ += ["FakeGcs", "Recorder", "upload"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(name="gcs_emulator", scope="session")
def gcs_emulator_fixture() -> Iterator[str]:
    """``host:port`` of a gcp-storage-emulator started for the session (in memory)."""
    pytest.importorskip("gcp_storage_emulator")
    port = _free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start"]
    command += ["--host=127.0.0.1", f"--port={port}", "--in-memory"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://{host}/storage/v1/b", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gcp-storage-emulator did not start on {host}")
            time.sleep(0.05)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(name="gcs_env")
def gcs_env_fixture(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point ``STORAGE_EMULATOR_HOST`` at the emulator (no scheme, as gcloud writes it)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    return f"http://{gcs_emulator}"


@pytest.fixture(name="gcs_bucket")
def gcs_bucket_fixture(gcs_env: str) -> str:
    """A new, empty bucket in the emulator, with STORAGE_EMULATOR_HOST set."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    response = requests.post(f"{gcs_env}/storage/v1/b", json={"name": name}, timeout=10)
    response.raise_for_status()
    return name


def upload(endpoint: str, bucket: str, name: str, data: bytes) -> dict:
    """Upload ``data`` as ``name`` through the JSON media upload; return the object resource."""
    response = requests.post(
        f"{endpoint}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "media", "name": name},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


class Recorder(requests.Session):
    """A session that keeps every request it sent (method, url, headers)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []
        self.hooks["response"].append(lambda r, *a, **k: self.sent.append(r.request))

    def media(self) -> list[requests.PreparedRequest]:
        return [r for r in self.sent if "alt=media" in r.url]


# ----------------------------------------------------------------------------- fake GCS


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass
class _Object:
    data: bytes
    generation: int
    served: bytes  # what alt=media sends: ``data`` unless the test corrupts it
    md5: bool = True


@dataclass
class FakeGcs:
    """A paginating GCS JSON API for one bucket, on 127.0.0.1, recording what it is asked."""

    bucket: str = "fake"
    page_size: int = 2
    token: str | None = None  # when set, requests need ``Authorization: Bearer <token>``
    churn: bool = False  # when set, each metadata read replaces the object (a new generation)
    objects: dict[str, _Object] = field(default_factory=dict)
    #: (path, query, headers) of every request, in order.
    seen: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    _generation: int = 1000

    def put(self, name: str, data: bytes, *, md5: bool = True, served: bytes | None = None) -> None:
        self._generation += 1
        self.objects[name] = _Object(
            data, self._generation, data if served is None else served, md5
        )

    def resource(self, name: str) -> dict:
        obj = self.objects[name]
        item = {
            "name": name,
            "bucket": self.bucket,
            "size": str(len(obj.data)),
            "generation": str(obj.generation),
            "crc32c": _b64(crc32c(obj.data).to_bytes(4, "big")),
            "etag": f"CL{obj.generation}=",
            "updated": "2024-05-01T12:00:00.123Z",
        }
        if obj.md5:
            item["md5Hash"] = _b64(hashlib.md5(obj.data).digest())
        return item

    def listings(self) -> list[dict[str, list[str]]]:
        """The query of every listing request, in order."""
        return [q for path, q, _ in self.seen if path.endswith("/o")]

    def start(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                fake.seen.append((parts.path, query, dict(self.headers)))
                if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self.reply(401, b'{"error": {"code": 401}}')
                head = f"/storage/v1/b/{fake.bucket}/o"
                if parts.path == head:
                    return self.listing(query)
                if not parts.path.startswith(head + "/"):
                    return self.reply(404, b"{}")
                name = unquote(parts.path[len(head) + 1 :])
                if name not in fake.objects:
                    return self.reply(404, b'{"error": {"code": 404}}')
                if query.get("alt") == ["media"]:
                    return self.media(name, query)
                body = json.dumps(fake.resource(name)).encode()
                if fake.churn:
                    fake.put(name, fake.objects[name].data)
                return self.reply(200, body)

            def listing(self, query: dict[str, list[str]]) -> None:
                prefix = query.get("prefix", [""])[0]
                size = min(fake.page_size, int(query.get("maxResults", [fake.page_size])[0]))
                names = sorted(n for n in fake.objects if n.startswith(prefix))
                start = int(query.get("pageToken", ["0"])[0])
                page = {"kind": "storage#objects", "items": []}
                page["items"] = [fake.resource(n) for n in names[start : start + size]]
                if start + size < len(names):
                    page["nextPageToken"] = str(start + size)
                self.reply(200, json.dumps(page).encode())

            def media(self, name: str, query: dict[str, list[str]]) -> None:
                obj = fake.objects[name]
                match = query.get("ifGenerationMatch")
                if match and match[0] != str(obj.generation):
                    return self.reply(412, b'{"error": {"code": 412}}')
                data, status, headers = obj.served, 200, {}
                wanted = self.headers.get("Range")
                if wanted:
                    first, _, last = wanted.removeprefix("bytes=").partition("-")
                    end = min(int(last) + 1 if last else len(data), len(data))
                    headers["Content-Range"] = f"bytes {first}-{end - 1}/{len(data)}"
                    data, status = data[int(first) : end], 206
                self.reply(status, data, headers)

            def reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def uri(self, name: str = "") -> str:
        return f"gs://{self.bucket}/{name}"

    def url(self, name: str) -> str:
        return f"http://{self.host}/storage/v1/b/{self.bucket}/o/{quote(name, safe='')}"


@pytest.fixture(name="fake_gcs")
def fake_gcs_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcs]:
    """A started :class:`FakeGcs`, with STORAGE_EMULATOR_HOST pointing at it."""
    fake = FakeGcs()
    fake.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{fake.host}")
    try:
        yield fake
    finally:
        fake.stop()
