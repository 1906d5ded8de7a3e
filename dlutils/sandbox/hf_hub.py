"""A local HuggingFace Hub stand-in: the hub's API and resolve endpoints, and a storage host.

It implements what ``dlutils.sources.hf`` calls, as the Hub does it (huggingface_hub
``hf_api.py`` ``list_repo_tree``, ``utils/_pagination.py``, ``file_download.py``
``hf_hub_url`` / ``get_hf_file_metadata``; dataset-viewer ``docs/source/parquet.md``):

* ``GET /api/{datasets|models}/<id>/tree/<revision>[/<folder>]?recursive=&expand=``: the
  entries (``type``, ``oid``, ``size``, ``path``, and ``lfs: {oid, size, pointerSize}`` for
  LFS files), in path order, ``page_size`` a page; the next page is named by a
  ``Link: <...&cursor=...>; rel="next"`` header. The revision (a branch or tag name, or a
  commit id) is percent-encoded in the path, the folder too.
* ``GET|HEAD /[datasets/]<id>/resolve/<revision>/<path>``: a Git file is served here (ETag
  = its git blob id, ranges honoured); an LFS file answers ``302`` to the storage host,
  another :class:`~dlutils.localserver.LocalServer` on its own port, with ``X-Linked-Size``
  and ``X-Linked-Etag`` (``"<sha256>"``). Every answer carries ``X-Repo-Commit``.
* ``GET /api/datasets/<id>/parquet`` (``[/<config>/<split>[/<n>.parquet]]``): the export
  read from the files of the repository's ``refs/convert/parquet`` revision, laid out as
  ``<config>/<split>/NNNN.parquet``.
* Access: a private repository answers ``401`` (``X-Error-Code: RepoNotFound``) to any
  request without its token; a gated one ``401`` without a token and ``403`` with another
  (``GatedRepo``). Missing things answer ``404`` with ``RepoNotFound``,
  ``RevisionNotFound`` or ``EntryNotFound``. A renamed repository answers ``307`` with a
  relative ``Location`` on the hub itself.

Both hosts keep a request log with the request headers, so tests see where a token went.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from dlutils.localserver import Headers, LocalServer
from dlutils.sandbox._http import Handler, ThreadedServer

PARQUET_REVISION = "refs/convert/parquet"


def git_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub calls ``oid`` and sends as a Git file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class HubRequest:
    """One request the hub received; ``path`` is as sent (percent-encoded)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    gated: bool = False
    token: str | None = None
    revisions: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)  # sha256 of the blobs stored as LFS

    def files_at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """``(commit, files)`` of a branch or tag name, or of a commit id."""
        if revision in self.revisions:
            return self.commits[revision], self.revisions[revision]
        for name, commit in self.commits.items():
            if commit == revision:
                return commit, self.revisions[name]
        return None


class HubStandIn:
    """A hub and its storage host on 127.0.0.1; use it in a ``with`` block.

    Parameters
    ----------
    page_size : int
        Tree entries per page.
    lfs_threshold : int
        Files of at least this many bytes are stored as LFS (on the storage host); smaller
        ones are Git files, served by the hub itself.

    Attributes
    ----------
    storage : LocalServer
        Holds LFS blobs at ``lfs/<sha256>``; its log and faults are the storage host's.
    """

    def __init__(self, page_size: int = 3, lfs_threshold: int = 64):
        self.page_size, self.lfs_threshold = page_size, lfs_threshold
        self.storage = LocalServer()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._moved: dict[tuple[str, str], str] = {}
        self._log: list[HubRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadedServer | None = None

    def __enter__(self) -> HubStandIn:
        self.storage.start()
        self._server = ThreadedServer(type("Handler", (_Handler,), {"hub": self}))
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.stop()
        self.storage.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "use HubStandIn in a with block"
        return self._server.url

    # -- content

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "dataset",
        revision: str = "main",
        private: bool = False,
        gated: bool = False,
        token: str | None = None,
    ) -> str:
        """Set the files of one revision (a branch, tag or ``refs/...`` name) of a repository,
        creating it; returns the revision's commit id. ``private``/``gated``/``token`` apply
        when the repository is created."""
        with self._lock:
            repo = self._repos.setdefault(
                (repo_type, repo_id), _Repo(repo_type, repo_id, private, gated, token)
            )
            repo.revisions[revision] = dict(files)
            digest = hashlib.sha1(f"{repo_type}/{repo_id}@{revision}".encode())
            for path in sorted(files):
                digest.update(f"{path}:{git_oid(files[path])}".encode())
            repo.commits[revision] = digest.hexdigest()
            blobs = {sha256(d): d for d in files.values() if len(d) >= self.lfs_threshold}
            repo.lfs |= set(blobs)
        for digest_hex, data in blobs.items():
            self.storage.put(f"lfs/{digest_hex}", data)
        return repo.commits[revision]

    def corrupt(self, data: bytes) -> None:
        """Make the storage host serve other bytes of the same size for LFS blob ``data``."""
        bad = bytes(b ^ 0x5A for b in data)
        self.storage.put(f"lfs/{sha256(data)}", bad)

    def rename(self, repo_id: str, new_id: str, *, repo_type: str = "dataset") -> None:
        """Move a repository: its old id answers 307 to the new one, as the Hub does."""
        with self._lock:
            repo = self._repos.pop((repo_type, repo_id))
            repo.repo_id = new_id
            self._repos[(repo_type, new_id)] = repo
            self._moved[(repo_type, repo_id)] = new_id

    # -- logs

    @property
    def requests(self) -> list[HubRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, word: str) -> list[HubRequest]:
        """The hub's requests whose path has ``/<word>/`` (``tree``, ``resolve``, ``parquet``)."""
        return [r for r in self.requests if f"/{word}/" in r.path or r.path.endswith(f"/{word}")]

    def clear_logs(self) -> None:
        with self._lock:
            self._log.clear()
        self.storage.clear_log()

    # -- called by the handler

    def _find(self, kind: str, segments: list[str], keyword: str) -> tuple[Any, int] | None:
        """``(repo or moved id, n)`` for the repository named by the first n segments."""
        with self._lock:
            for n in (2, 1):
                if len(segments) > n and segments[n] == keyword:
                    key = (kind, "/".join(segments[:n]))
                    if key in self._repos:
                        return self._repos[key], n
                    if key in self._moved:
                        return self._moved[key], n
        return None


class _Handler(Handler):
    hub: HubStandIn

    # -- answers

    _send = Handler.send

    def _error(self, code: int, error_code: str, message: str, commit: str = "") -> None:
        extra = {"X-Error-Code": error_code, "X-Error-Message": message}
        if commit:
            extra["X-Repo-Commit"] = commit
        self._send(code, {"error": message}, extra)

    # -- routing

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        hub = self.hub
        with hub._lock:
            hub._log.append(
                HubRequest(self.command, parts.path, query, Headers(self.headers.items()))
            )
        segments = parts.path.lstrip("/").split("/")
        if segments[0] == "api" and len(segments) > 2 and segments[1] in ("datasets", "models"):
            kind = segments[1][:-1]
            for keyword in ("tree", "parquet"):
                found = hub._find(kind, segments[2:], keyword)
                if found is not None:
                    return self._api(kind, found, segments[2:], keyword, query)
            return self._error(404, "RepoNotFound", "Repository not found")
        kind, rest = ("dataset", segments[1:]) if segments[0] == "datasets" else ("model", segments)
        found = hub._find(kind, rest, "resolve")
        if found is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        return self._resolve(kind, found, rest)

    do_HEAD = do_GET

    def _moved(self, kind: str, found: tuple[Any, int], segments: list[str]) -> bool:
        target, n = found
        if isinstance(target, _Repo):
            return False
        path = urlsplit(self.path)
        new = path.path.replace("/" + "/".join(segments[:n]) + "/", f"/{target}/", 1)
        self._send(307, b"", {"Location": new + (f"?{path.query}" if path.query else "")})
        return True

    def _denied(self, repo: _Repo) -> bool:
        auth = self.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if repo.private and token != repo.token:
            self._error(401, "RepoNotFound", "Repository not found")
            return True
        if repo.gated and token != repo.token:
            code = 401 if token is None else 403
            self._error(code, "GatedRepo", f"Access to {repo.repo_id} is restricted.")
            return True
        return False

    def _revision(self, repo: _Repo, raw: str) -> tuple[str, dict[str, bytes]] | None:
        found = repo.files_at(unquote(raw))
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(raw)}")
        return found

    # -- tree and parquet listings

    def _api(self, kind, found, segments, keyword, query) -> None:
        if self._moved(kind, found, segments):
            return None
        repo, n = found
        if self._denied(repo):
            return None
        rest = segments[n + 1 :]
        if keyword == "parquet":
            return self._parquet(repo, rest)
        if not rest or not rest[0]:
            return self._error(400, "", "a tree needs a revision")
        at = self._revision(repo, rest[0])
        if at is None:
            return None
        commit, files = at
        folder = unquote("/".join(rest[1:])).strip("/")
        recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
        entries = self._entries(repo, files, folder, recursive)
        if entries is None:
            return self._error(404, "EntryNotFound", f"{folder} does not exist", commit)
        start = 0
        if query.get("cursor"):
            start = int(base64.urlsafe_b64decode(query["cursor"][0].encode()).decode())
        page = entries[start : start + self.hub.page_size]
        headers = {"X-Repo-Commit": commit}
        if start + self.hub.page_size < len(entries):
            following = {k: v[0] for k, v in query.items()}
            cursor = base64.urlsafe_b64encode(str(start + self.hub.page_size).encode()).decode()
            following["cursor"] = cursor
            link = f"{self.hub.url}{urlsplit(self.path).path}?{urlencode(following)}"
            headers["Link"] = f'<{link}>; rel="next"'
        self._send(200, page, headers)

    def _entries(self, repo, files, folder, recursive) -> list[dict[str, Any]] | None:
        start = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(start) for p in files):
            return None
        paths: dict[str, dict[str, Any]] = {}
        for path, data in files.items():
            if not path.startswith(start):
                continue
            parts = path[len(start) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                name = start + "/".join(parts[:i])
                oid = hashlib.sha1(name.encode()).hexdigest()
                paths[name] = {"type": "directory", "oid": oid, "size": 0, "path": name}
            if len(parts) <= depth:
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": git_oid(data),
                    "size": len(data),
                    "path": path,
                }
                if len(data) >= self.hub.lfs_threshold:
                    entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
                paths[path] = entry
        return [paths[p] for p in sorted(paths)]

    def _parquet(self, repo: _Repo, rest: list[str]) -> None:
        if repo.repo_type != "dataset" or PARQUET_REVISION not in repo.revisions:
            return self._error(404, "", "Not found: the dataset has no parquet export")
        export: dict[str, dict[str, list[str]]] = {}
        names: dict[tuple[str, str], list[str]] = {}
        for path in sorted(repo.revisions[PARQUET_REVISION]):
            parts = path.split("/")
            if len(parts) == 3 and parts[2].endswith(".parquet"):
                split = parts[1].removeprefix("partial-")
                urls = export.setdefault(parts[0], {}).setdefault(split, [])
                base = f"{self.hub.url}/api/datasets/{repo.repo_id}/parquet/{parts[0]}/{split}"
                urls.append(f"{base}/{len(urls)}.parquet")
                names.setdefault((parts[0], split), []).append(path)
        if not rest:
            return self._send(200, export)
        config, split = unquote(rest[0]), unquote(rest[1]) if len(rest) > 1 else ""
        if (config, split) not in names:
            return self._error(404, "", f"no parquet files for {config}/{split}")
        if len(rest) == 2:
            return self._send(200, export[config][split])
        index = int(rest[2].removesuffix(".parquet"))
        path = names[(config, split)][index]
        revision = quote(PARQUET_REVISION, safe="")
        location = f"{self.hub.url}/datasets/{repo.repo_id}/resolve/{revision}/{quote(path)}"
        self._send(302, b"", {"Location": location})

    # -- files

    def _resolve(self, kind: str, found: tuple[Any, int], segments: list[str]) -> None:
        if self._moved(kind, found, segments):
            return None
        repo, n = found
        if self._denied(repo):
            return None
        rest = segments[n + 1 :]
        if not rest:
            return self._error(400, "", "a resolve URL needs a revision and a path")
        at = self._revision(repo, rest[0])
        if at is None:
            return None
        commit, files = at
        path = unquote("/".join(rest[1:]))
        if path not in files:
            return self._error(404, "EntryNotFound", f"{path} does not exist", commit)
        data = files[path]
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if len(data) >= self.hub.lfs_threshold:
            digest = sha256(data)
            location = self.hub.storage.url_for(f"lfs/{digest}")
            location += "?" + urlencode({"X-Amz-Expires": "3600", "X-Amz-Signature": digest[:16]})
            body = f"Found. Redirecting to {location}".encode()
            headers |= {"Location": location, "X-Linked-Size": str(len(data))}
            headers["X-Linked-Etag"] = f'"{digest}"'
            return self._send(302, body, headers)
        headers["ETag"] = etag = f'"{git_oid(data)}"'
        first, last = self._range(len(data), etag)
        if first is None:
            return self._send(200, data, headers)
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        self._send(206, data[first : last + 1], headers)

    def _range(self, size: int, etag: str) -> tuple[int | None, int | None]:
        """One ``bytes=a-[b]`` range, honoured only when ``If-Range`` (if any) still holds."""
        value = (self.headers.get("Range") or "").replace(" ", "")
        if not value.startswith("bytes=") or "," in value or self.command != "GET":
            return None, None
        if self.headers.get("If-Range") not in (None, etag):
            return None, None
        first, _, last = value[len("bytes=") :].partition("-")
        if not first.isdigit() or int(first) >= size:
            return None, None
        return int(first), min(int(last), size - 1) if last.isdigit() else size - 1
