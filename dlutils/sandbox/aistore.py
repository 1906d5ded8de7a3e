"""A local AIStore stand-in: a gateway that lists and redirects, and a target holding objects.

It implements what ``dlutils.sources.ais`` calls, as AIStore does it (NVIDIA/aistore
docs/http_api.md, api/apc, cmn/objlist.go, cmn/objattrs.go):

* ``GET``/``HEAD /v1/objects/<bucket>/<object>?provider=ais`` on the gateway answer
  ``307`` to the same path on the target, a :class:`~dlutils.localserver.LocalServer`
  (Range, If-Range, ETag, Last-Modified, faults), which sends ``ais-checksum-type``,
  ``ais-checksum-value``, ``ais-version`` and ``ais-atime`` with every object.
* ``GET /v1/buckets/<bucket>?provider=ais`` with ``{"action": "list", "value": LsoMsg}``
  pages through the bucket in name order, ``page_size`` entries a page; the continuation
  token is the last name sent, ``flags`` must be a string, as Go's ``json:",string"``
  demands. Entries carry ``name``, ``size`` (a string), and, when asked for in ``props``,
  ``checksum`` (the bare value) and ``version``.
* ETags follow AIStore 4.x: the md5 when the checksum is md5, else ``v1-<checksum>-<mtime>``.

xxhash values are stand-ins (a 64-bit blake2b): dlutils never computes xxhash.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dlutils.checksums import crc32c
from dlutils.localserver import LocalServer
from dlutils.sandbox._http import Handler, ThreadedServer


@dataclass(frozen=True)
class GatewayRequest:
    """One request the gateway received: its JSON body is decoded (``None`` when absent)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class _Object:
    size: int
    kind: str
    value: str
    version: str
    atime: int


def checksum_of(data: bytes, kind: str) -> str:
    """The hex value AIStore keeps for ``data`` with checksum type ``kind``."""
    if kind in ("md5", "sha256", "sha512"):
        return hashlib.new(kind, data).hexdigest()
    if kind == "crc32c":
        return f"{crc32c(data):08x}"
    if kind in ("xxhash", "xxhash2"):
        return hashlib.blake2b(data, digest_size=8).hexdigest()
    return ""  # "none"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


class AisStandIn:
    """Gateway + target on 127.0.0.1; use it in a ``with`` block.

    Attributes
    ----------
    target : LocalServer
        Holds the objects at ``v1/objects/<bucket>/<name>``; its request log counts object
        GETs and HEADs, and faults can be added to it.
    page_size : int
        Entries per listing page (a client's smaller ``pagesize`` wins).
    """

    def __init__(self, page_size: int = 3):
        self.page_size = page_size
        self.target = LocalServer()
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._log: list[GatewayRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadedServer | None = None

    def __enter__(self) -> AisStandIn:
        self.target.start()
        self._server = ThreadedServer(type("Handler", (_Gateway,), {"cluster": self}))
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.stop()
        self.target.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "use AisStandIn in a with block"
        return self._server.port

    def link(self, bucket: str, name: str = "") -> str:
        """``ais://127.0.0.1:PORT/bucket/name``."""
        return f"ais://127.0.0.1:{self.port}/{bucket}/{name}"

    def create_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.setdefault(bucket, {})

    def put(
        self, bucket: str, name: str, data: bytes, *, checksum: str = "xxhash", value: str = ""
    ) -> None:
        """Store ``data``; each put of a name bumps its version. ``value`` overrides the
        checksum value served (to serve a wrong one)."""
        value = value or checksum_of(data, checksum)
        with self._lock:
            objects = self._buckets.setdefault(bucket, {})
            old = objects.get(name)
            version = str(int(old.version) + 1) if old else "1"
            objects[name] = _Object(len(data), checksum, value, version, time.time_ns())
        headers = {"ais-version": version, "ais-atime": str(objects[name].atime)}
        if checksum != "none":
            headers |= {"ais-checksum-type": checksum, "ais-checksum-value": value}
        etag = None
        if checksum == "md5":
            etag = value
        elif checksum != "none":
            etag = f"v1-{value}-{_base36(time.time_ns())}"
        self.target.put(f"v1/objects/{bucket}/{name}", data, etag=etag, headers=headers)

    def delete(self, bucket: str, name: str) -> None:
        """Remove an object, as if deleted from the cluster."""
        with self._lock:
            del self._buckets[bucket][name]
        self.target.delete(f"v1/objects/{bucket}/{name}")

    @property
    def requests(self) -> list[GatewayRequest]:
        """The gateway's request log, oldest first."""
        with self._lock:
            return list(self._log)

    def list_requests(self) -> list[GatewayRequest]:
        return [r for r in self.requests if r.path.startswith("/v1/buckets/")]

    def object_requests(self, method: str | None = None) -> list:
        """The target's log of object requests (``GET``/``HEAD``), optionally of one method."""
        return [r for r in self.target.requests if method in (None, r.method)]

    def clear_logs(self) -> None:
        with self._lock:
            self._log.clear()
        self.target.clear_log()

    # -- called by the gateway handler

    def _page(self, bucket: str, msg: dict[str, Any]) -> dict[str, Any]:
        props = set(str(msg.get("props") or "name,size").replace(" ", "").split(","))
        wanted = int(msg.get("pagesize") or 0)
        size = wanted if 0 < wanted < self.page_size else self.page_size
        token, prefix = str(msg.get("continuation_token") or ""), str(msg.get("prefix") or "")
        with self._lock:
            objects = self._buckets[bucket]
            names = sorted(n for n in objects if n.startswith(prefix) and n > token)
            entries = []
            for name in names[:size]:
                obj = objects[name]
                entry: dict[str, Any] = {"name": name, "size": str(obj.size), "flags": 64}
                if "checksum" in props and obj.value:
                    entry["checksum"] = obj.value
                if "version" in props:
                    entry["version"] = obj.version
                entries.append(entry)
        more = len(names) > size
        return {
            "uuid": msg.get("uuid") or uuid.uuid4().hex[:10],
            "continuation_token": entries[-1]["name"] if more else "",
            "entries": entries,
            "flags": 0,
        }


class _Gateway(Handler):
    cluster: AisStandIn

    def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.send(code, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: int, message: str) -> None:
        self._send(code, {"message": message, "method": self.command, "status": code})

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        query = parse_qs(parts.query)
        path = unquote(parts.path)
        cluster = self.cluster
        with cluster._lock:
            cluster._log.append(GatewayRequest(self.command, path, query, body))
        words = path.split("/", 4)  # "", "v1", "objects"|"buckets", bucket, object
        if len(words) < 4 or words[1] != "v1" or words[2] not in ("objects", "buckets"):
            return self._error(404, f"unknown path {path!r}")
        if query.get("provider", ["ais"]) != ["ais"]:
            return self._error(400, "the stand-in serves provider=ais buckets only")
        bucket = words[3]
        with cluster._lock:
            known = bucket in cluster._buckets
        if not known:
            return self._error(404, f"bucket ais://{bucket} does not exist")
        if words[2] == "objects":
            location = f"{cluster.target.url}{parts.path}?{parts.query}&pid=gw1"
            return self._send(307, None, {"Location": location})
        if self.command != "GET":
            return self._error(405, f"{self.command} is not a listing")
        if not isinstance(body, dict) or body.get("action") != "list":
            return self._error(400, 'expected the JSON body {"action": "list", "value": {...}}')
        msg = body.get("value") or {}
        if not isinstance(msg, dict) or not isinstance(msg.get("flags", "0"), str):
            return self._error(400, "json: invalid use of ,string struct tag (flags)")
        self._send(200, cluster._page(bucket, msg))

    do_HEAD = do_GET
