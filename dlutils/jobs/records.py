"""Records of a cluster job, one small file per batch, beside the data: no SQLite, no locks.

The SQLite manifest (:class:`dlutils.freshness.Manifest`) is written by one process at a
time and wants WAL, which network filesystems do not give. A job on a Dask cluster keeps
its records under :data:`FOLDER` in the destination instead:

* each run of a batch appends one JSON line per object it placed (its attributes, the
  file's size and mtime in ns, the bytes received) to a log of its own,
  ``<job>-b<batch>-<run>.jsonl`` (runs numbered from 1): one writer per file, one
  ``write`` per line, so a worker killed mid-line leaves at most a line cut short,
  which readers skip;
* when the batch ends the worker writes its record, ``<job>-b<batch>.json``, whole
  (temporary file, then rename) and deletes its logs;
* when the job ends the client gathers its batches' records into one, ``<job>.json``
  (:func:`compact`).

A batch run again by Dask (its worker died) reads what an earlier run placed and does
not fetch it again; a new job reads every record (:func:`read_records`) and judges the
files as the manifest would: a record holds while the file keeps the size and mtime it
had when recorded. :class:`BatchRecords` is what the engine writes to on a worker, and
:class:`RecordsView` what a synchronising job reads and deletes through on the client.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import Any

from ..errors import UnsafePathError
from ..freshness import Manifest, ObjectAttrs
from ..workfiles import open_working_file

__all__ = [
    "FOLDER",
    "BatchRecords",
    "ManifestWithRecords",
    "RecordsView",
    "compact",
    "open_manifest",
    "read_records",
]

log = logging.getLogger("dlutils")

#: The hidden folder of records, directly in the destination.
FOLDER = ".dlutils-records"


def _relative(root: str, path: str | os.PathLike) -> str:
    full = os.path.normpath(os.path.join(root, os.fspath(path)))
    rel = os.path.relpath(full, root)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise UnsafePathError(f"path {os.fspath(path)!r} is not a file under {root!r}")
    return PurePath(rel).as_posix()


def _valid(root: str, key: str, entry: Mapping[str, Any]) -> bool:
    try:
        st = os.stat(os.path.join(root, key))
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == entry.get("size")
        and st.st_mtime_ns == entry.get("mtime_ns")
    )


def _lines(path: str) -> Iterator[dict[str, Any]]:
    """The whole JSON lines of a log; a line cut short by a killed writer is skipped."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.endswith("\n"):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
    except OSError:
        return


def _apply(state: dict[str, dict[str, Any]], partials: dict[str, Any], line: Mapping) -> None:
    kind = line.get("kind")
    key = line.get("key")
    if not isinstance(key, str):
        return
    if kind == "object":
        state[key] = line
        partials.pop(key, None)
    elif kind == "forget":
        state.pop(key, None)
        partials.pop(key, None)
    elif kind == "partial":
        partials[key] = line.get("info")
    elif kind == "drop-partial":
        partials.pop(key, None)


def _read_file(path: str) -> list[dict[str, Any]]:
    if path.endswith(".jsonl"):
        return list(_lines(path))
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    return list(data.get("lines", ())) if isinstance(data, dict) else []


def read_records(root: str | os.PathLike) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every object record and partial-download state under ``root``'s :data:`FOLDER`.

    Returns ``(objects, partials)``, each keyed by the path relative to ``root`` (``/``
    separators). Files are read oldest first, so a later record of a path wins. An
    object record is a dict with ``attrs``, ``size``, ``mtime_ns``, ``received``,
    ``skipped``; whether the file still matches it is for the reader to check
    (:meth:`RecordsView.get` does).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     read_records(root)
    ({}, {})
    """
    folder = os.path.join(os.fspath(root), FOLDER)
    try:
        names = [e for e in os.scandir(folder) if e.name.endswith((".json", ".jsonl"))]
    except OSError:
        return {}, {}
    names.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
    objects: dict[str, dict] = {}
    partials: dict[str, dict] = {}
    for entry in names:
        for line in _read_file(entry.path):
            _apply(objects, partials, line)
    return objects, partials


def compact(root: str | os.PathLike, job_id: str) -> None:
    """Gather the records of ``job_id``'s finished batches into one, ``<job>.json``.

    Called by the client once no batch of the job runs, so that a destination holds one
    record per job rather than one per batch. The logs of batches that were stopped stay
    (they hold the partial downloads to resume).

    Examples
    --------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     os.makedirs(os.path.join(root, FOLDER))
    ...     for n in (0, 1):
    ...         with open(os.path.join(root, FOLDER, f"j-b00000{n}.json"), "w") as fh:
    ...             _ = fh.write('{"lines":[{"kind":"object","key":"%d","size":1}]}' % n)
    ...     compact(root, "j")
    ...     os.listdir(os.path.join(root, FOLDER)), sorted(read_records(root)[0])
    (['j.json'], ['0', '1'])
    """
    folder = os.path.join(os.fspath(root), FOLDER)
    prefix = f"{job_id}-b"
    try:
        batches = [
            e for e in os.scandir(folder) if e.name.startswith(prefix) and e.name.endswith(".json")
        ]
    except OSError:
        return
    if not batches:
        return
    batches.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
    lines = [line for e in batches for line in _read_file(e.path)]
    record = os.path.join(folder, f"{job_id}.json")
    temp = record + ".tmp"
    fd = open_working_file(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, what="job record")
    try:
        os.write(fd, json.dumps({"lines": lines}, separators=(",", ":")).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, record)
    for entry in batches:
        try:
            os.unlink(entry.path)
        except OSError:
            pass


class BatchRecords(Manifest):
    """What the engine records through while a worker runs one batch (a manifest's role).

    A :class:`~dlutils.freshness.Manifest` to the sources (they accept one), with every
    method it uses kept in the batch's files instead of SQLite; nothing of the SQLite
    file is opened.

    Parameters
    ----------
    root : str
        The destination folder (absolute, seen alike by every worker).
    name : str
        The batch's record name, ``<job>-b<batch>``; each run of the batch (a Dask
        recomputation is another) logs to ``<name>-<run>.jsonl``, runs numbered from 1.
    known : mapping
        Records from before this job (``key -> record``, see :func:`read_records`) and
        partial states (``("partial", key) -> info``) for the batch's objects.
    """

    def __init__(self, root: str, name: str, known: Mapping[Any, Any]):
        # Manifest.__init__ is not called: no SQLite file, no batch of puts, no atexit
        self.root = root
        self.folder = os.path.join(root, FOLDER)
        self.path = self.folder
        self.timeout = 0.0
        self.name = name
        self._known = dict(known)
        os.makedirs(self.folder, exist_ok=True)
        # Runs are numbered: this one takes the first free number (O_EXCL, fine on NFS),
        # and the logs below it are those of earlier runs (a worker died under them).
        record = os.path.join(self.folder, f"{name}.json")
        self._logs = [record] if os.path.exists(record) else []
        run = 1
        while True:
            log_path = os.path.join(self.folder, f"{name}-{run}.jsonl")
            try:
                self._fd = open_working_file(
                    log_path,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
                    what="batch record",
                )
                break
            except FileExistsError:
                self._logs.append(log_path)
                run += 1
        self.run = run
        self._log_path = log_path
        self.earlier: dict[str, dict] = {}
        partials: dict[str, dict] = {}
        for path in self._logs:
            for line in _read_file(path):
                _apply(self.earlier, partials, line)
        self._partials = partials
        self._objects: dict[str, dict] = {}
        self._lines: list[dict] = []

    def __repr__(self) -> str:
        return f"BatchRecords({self.root!r}, {self.name!r})"

    def __reduce__(self):  # pragma: no cover - made where it is used, never sent
        raise TypeError("BatchRecords live in the worker that runs their batch")

    def __enter__(self) -> BatchRecords:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def _append(self, line: dict[str, Any]) -> None:
        self._lines.append(line)
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        os.write(self._fd, data)  # one write per line: a kill cuts at most this line

    # -- what a batch asks

    def placed_earlier(self, path: str) -> dict[str, Any] | None:
        """The record of ``path`` by an earlier run of this batch, if the file still matches."""
        key = _relative(self.root, path)
        entry = self.earlier.get(key)
        return entry if entry is not None and _valid(self.root, key, entry) else None

    def commit(self, path: str, skipped: bool, received: int) -> None:
        """Write the record of ``path`` (placed or kept): the engine's attrs, the file now."""
        key = _relative(self.root, path)
        attrs = self._objects.pop(key, None)
        if attrs is None:  # kept with no new record: carry the old one, if still true
            old = self.get(path)
            attrs = old.to_dict() if old is not None else {}
        try:
            st = os.stat(os.path.join(self.root, key))
        except OSError:
            return
        self._append(
            {
                "kind": "object",
                "key": key,
                "attrs": attrs,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "received": received,
                "skipped": skipped,
            }
        )

    def finish(self) -> None:
        """Write the batch's record whole (temporary file, rename), drop the runs' logs.

        It holds every object the batch placed in any run, and the resume state of those
        it left unfinished (their ``.part`` files stay).
        """
        partials = [{"kind": "partial", "key": k, "info": v} for k, v in self._partials.items()]
        last = {
            line["key"]: line for line in self._lines if line.get("kind") in ("object", "forget")
        }
        objects = list(last.values())
        lines = [*partials, *self.earlier.values(), *objects]
        record = os.path.join(self.folder, f"{self.name}.json")
        temp = f"{record}.{self.run}.tmp"
        fd = open_working_file(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, what="batch record")
        try:
            os.write(fd, json.dumps({"lines": lines}, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, record)
        os.close(self._fd)
        for path in [*self._logs, self._log_path]:
            if path.endswith(".jsonl"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def abandon(self) -> None:
        """Close the log without writing the record (the batch stopped: its log stays,
        unless it is empty)."""
        os.close(self._fd)
        if not self._lines:
            try:
                os.unlink(self._log_path)
            except OSError:
                pass

    # -- what the engine asks (as of a Manifest)

    def check(self) -> None:
        pass

    def close(self) -> None:
        """Nothing: the batch ends with :meth:`finish` or :meth:`abandon`."""

    def flush(self) -> None:
        pass

    def get(self, path: str | os.PathLike) -> ObjectAttrs | None:
        key = _relative(self.root, path)
        for entry in (self.earlier.get(key), self._known.get(key)):
            if entry is not None and _valid(self.root, key, entry):
                return ObjectAttrs.from_dict(entry.get("attrs") or {})
        return None

    def __contains__(self, path: str | os.PathLike) -> bool:
        return self.get(path) is not None

    def remove(self, path: str | os.PathLike) -> None:
        key = _relative(self.root, path)
        self.earlier.pop(key, None)
        self._known.pop(key, None)
        self._append({"kind": "forget", "key": key})

    def records(self, prefix: str = "") -> Iterator[tuple[str, ObjectAttrs]]:
        merged = {**self._known, **self.earlier}
        for key in sorted(k for k in merged if isinstance(k, str) and k.startswith(prefix)):
            if _valid(self.root, key, merged[key]):
                yield key, ObjectAttrs.from_dict(merged[key].get("attrs") or {})

    def put(self, path: str | os.PathLike, attrs: ObjectAttrs) -> None:
        """Record the file at once (the engine has just placed it): a worker killed before
        :meth:`commit` leaves the next run of the batch no reason to fetch it again."""
        key = _relative(self.root, path)
        st = os.stat(os.path.join(self.root, key))  # as a Manifest does: it must be there
        self._objects[key] = attrs.to_dict()
        self._append(
            {
                "kind": "object",
                "key": key,
                "attrs": self._objects[key],
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "received": None,  # known at commit
                "skipped": None,
            }
        )

    def get_partial(self, path: str | os.PathLike) -> dict[str, Any] | None:
        key = _relative(self.root, path)
        if key in self._partials:
            return self._partials[key]
        return self._known.get(("partial", key))

    def put_partial(self, path: str | os.PathLike, info: Mapping[str, Any]) -> None:
        key = _relative(self.root, path)
        self._partials[key] = dict(info)
        self._append({"kind": "partial", "key": key, "info": dict(info)})

    def drop_partial(self, path: str | os.PathLike) -> None:
        key = _relative(self.root, path)
        if self._partials.pop(key, None) is not None or ("partial", key) in self._known:
            self._known.pop(("partial", key), None)
            self._append({"kind": "drop-partial", "key": key})


def _forget(root: str, log_name: str, key: str) -> None:
    """Append a removal of ``key`` to the log ``log_name`` of the records folder."""
    line = json.dumps({"kind": "forget", "key": key}, separators=(",", ":")) + "\n"
    path = os.path.join(root, FOLDER, log_name)
    fd = open_working_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, what="batch record")
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class ManifestWithRecords(Manifest):
    """The SQLite manifest of a folder a cluster job wrote to, reading its records too.

    A job on threads writes its records to SQLite as always; a file with no valid record
    there is looked up in the cluster's batch records (read once, when made), and so is
    the resume state of a ``.part`` a cluster left. Either record holds only while the
    file keeps the size and mtime it had, so whichever is valid is right.
    """

    def __init__(self, root: str | os.PathLike, *, timeout: float = 60.0) -> None:
        super().__init__(root, timeout=timeout)
        self._cluster, self._cluster_partials = read_records(self.root)

    def get(self, path: str | os.PathLike) -> ObjectAttrs | None:
        found = super().get(path)
        if found is not None:
            return found
        key = self._key(path)
        entry = self._cluster.get(key)
        if entry is not None and _valid(self.root, key, entry):
            return ObjectAttrs.from_dict(entry.get("attrs") or {})
        return None

    def get_partial(self, path: str | os.PathLike) -> dict[str, Any] | None:
        found = super().get_partial(path)
        return found if found is not None else self._cluster_partials.get(self._key(path))

    def drop_partial(self, path: str | os.PathLike) -> None:
        self._cluster_partials.pop(self._key(path), None)
        super().drop_partial(path)

    def put_partial(self, path: str | os.PathLike, info: Mapping[str, Any]) -> None:
        self._cluster_partials.pop(self._key(path), None)
        super().put_partial(path, info)

    def records(self, prefix: str = "") -> Iterator[tuple[str, ObjectAttrs]]:
        seen = set()
        for key, attrs in super().records(prefix):
            seen.add(key)
            yield key, attrs
        for key in sorted(self._cluster):
            if key.startswith(prefix) and key not in seen:
                if _valid(self.root, key, self._cluster[key]):
                    yield key, ObjectAttrs.from_dict(self._cluster[key].get("attrs") or {})

    def remove(self, path: str | os.PathLike) -> None:
        key = self._key(path)
        super().remove(path)
        if self._cluster.pop(key, None) is not None:
            _forget(self.root, f"manifest-{os.getpid()}.jsonl", key)


def open_manifest(root: str | os.PathLike) -> Manifest:
    """The manifest of ``root``: reading a cluster job's records too when there are some."""
    if os.path.isdir(os.path.join(os.fspath(root), FOLDER)):
        return ManifestWithRecords(root)
    return Manifest(root)


class RecordsView:
    """The records of a destination as the client reads them: batch records over the manifest.

    What a synchronising job needs (:meth:`records`, :meth:`get`, :meth:`remove`,
    ``root``); a removal is a line of the client's own log, so it needs no lock either.
    """

    def __init__(self, root: str, job_id: str):
        self.root = root
        self.objects, self.partials = read_records(root)
        self._manifest = (
            Manifest(root) if os.path.lexists(os.path.join(root, Manifest.FILENAME)) else None
        )
        self._log = f"{job_id}-client.jsonl"

    def close(self) -> None:
        if self._manifest is not None:
            self._manifest.close()

    def known(self, key: str) -> dict[str, Any] | None:
        """The record of ``key`` to ship with its batch (batch records, else the manifest)."""
        entry = self.objects.get(key)
        if entry is not None:
            return entry
        if self._manifest is None:
            return None
        attrs = self._manifest.get(key)
        if attrs is None:
            return None
        st = os.stat(os.path.join(self.root, key))
        return {"attrs": attrs.to_dict(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def get(self, path: str | os.PathLike) -> ObjectAttrs | None:
        key = _relative(self.root, path)
        entry = self.objects.get(key)
        if entry is not None and _valid(self.root, key, entry):
            return ObjectAttrs.from_dict(entry.get("attrs") or {})
        return self._manifest.get(key) if self._manifest is not None else None

    def records(self, prefix: str = "") -> Iterator[tuple[str, ObjectAttrs]]:
        self.objects, self.partials = read_records(self.root)
        seen = set()
        for key in sorted(self.objects):
            if key.startswith(prefix) and _valid(self.root, key, self.objects[key]):
                seen.add(key)
                yield key, ObjectAttrs.from_dict(self.objects[key].get("attrs") or {})
        if self._manifest is not None:
            for key, attrs in self._manifest.records(prefix):
                if key not in seen:
                    yield key, attrs

    def remove(self, path: str | os.PathLike) -> None:
        key = _relative(self.root, path)
        self.objects.pop(key, None)
        _forget(self.root, self._log, key)
        if self._manifest is not None:
            self._manifest.remove(key)
