"""Big objects of a cluster job split into range tasks across workers.

On a Dask cluster with a local (shared) destination, an http(s) object or a Hub file of
at least the job's threshold (``blob_threshold``, else ``segment_threshold``) is planned
on the client:

* one ranged request (:func:`dlutils.transfer.ranges.probe`) learns its size, its
  validator and that ranges are accepted; without all three it goes to one worker as a
  batch of its own, as before;
* the client creates ``NAME.part`` at the object's size with the engine's safe open and
  holds its lock (another dlutils process asking for the same file waits), then sends
  the ranges as tasks ``dlutils-<job>-range-<n>`` (no link in the key), a few ranges a
  task fetched at once over the task's threads: the object's ``segments`` (its
  connections) spread over the cluster's worker threads;
* each range is fetched on a worker by :func:`dlutils.transfer.ranges.fetch_range`,
  pinned to the validator (a changed object raises
  :class:`~dlutils.RemoteChangedError`), holding a lease of the job's ``connections``
  per request, reporting its bytes; once written it is marked done in the records
  folder (:class:`RangeMarks`), so a task run again (its worker died) or a later job
  does not fetch it again;
* when every range is in, the client checks the size (and the checksum when one is
  given, or sent by the server for the whole object: the md5 of a single-part S3 ETag,
  ``X-Goog-Hash``...), ``os.replace``\\ s the ``.part`` into place and records the
  object like a batch would.

An abort stops the range tasks (the job's control entry) and keeps the ``.part`` and its
marks for the next run. Object-store destinations (``s3://``) and other schemes (``s3://``,
``gs://``, ``ais://`` links) keep the one-worker path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..checksums import parse_checksum
from ..errors import DownloadAborted, DownloadError
from ..freshness import attrs_from_headers
from ..limits import TokenBucket, parse_timeout
from ..names import redact
from ..transfer import AbortEvent, part_path
from ..transfer.ranges import Probe, fetch_range, place_part, plan_ranges, probe
from ..workfiles import open_working_file
from .elsewhere import environment
from .records import FOLDER, BatchRecords
from .shared import _describe
from .tasks import _Task

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["RangeMarks", "splittable", "run_ranges"]

log = logging.getLogger("dlutils")

#: Ranges an object is planned in, per worker thread of the cluster.
RANGES_PER_THREAD = 8
#: No range is smaller than this (but the last).
MIN_RANGE = 1 << 20


#: The links whose objects may be split: their sources expose the engine's Remote.
SPLIT_SCHEMES = ("http://", "https://", "hf://")


def splittable(task: _Task, store: bool) -> bool:
    """Whether ``task`` may be split into ranges: an http(s) or hub file into a local folder."""
    return not store and not task.error and task.link.lower().startswith(SPLIT_SCHEMES)


def remote_of(link: str, options: Any, session: Any = None) -> Any:
    """The engine's :class:`~dlutils.transfer.Remote` of ``link``, as its source's fetch
    (:func:`~dlutils.sources.http.fetch_http`, :func:`~dlutils.sources.hf.fetch_hf`) makes
    it from the same options."""
    if link.lower().startswith("hf://"):
        from ..sources.hf.download import file_remote

        if session is not None:
            options = options.replace(session=session)
        return file_remote(link, options)
    from ..sources.http import open_remote

    return open_remote(
        link,
        transport=options.transport or "requests",
        session=session if session is not None else options.session,
        headers=options.headers,
        timeout=parse_timeout(options.timeout),
        auth=options.auth,
    )


class RangeMarks:
    """Which ranges of one object are written: a small file each, in the records folder.

    ``<root>/.dlutils-records/ranges/<digest of the key>/<start>-<end>`` holds the
    object's validator and size; only marks of the same version count. A mark is made
    (``O_EXCL``, never through a link) after the range's last byte was written, so a
    worker killed before leaves no mark and the range is fetched again.
    """

    def __init__(self, root: str, key: str):
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.folder = os.path.join(root, FOLDER, "ranges", digest)

    def _path(self, start: int, end: int) -> str:
        return os.path.join(self.folder, f"{start}-{end}")

    def mark(self, start: int, end: int, validator: str, total: int) -> None:
        os.makedirs(self.folder, exist_ok=True)
        try:
            fd = open_working_file(
                self._path(start, end), os.O_WRONLY | os.O_CREAT | os.O_EXCL, what="range record"
            )
        except FileExistsError:
            return
        try:
            os.write(fd, json.dumps({"validator": validator, "total": total}).encode())
        finally:
            os.close(fd)

    def done(self, validator: str, total: int) -> set[tuple[int, int]]:
        """The ranges marked written for this version of the object."""
        found: set[tuple[int, int]] = set()
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return found
        for name in names:
            try:
                start, end = (int(x) for x in name.split("-"))
                fd = open_working_file(self._path(start, end), os.O_RDONLY, what="range record")
                try:
                    info = json.loads(os.read(fd, 4096) or b"{}")
                finally:
                    os.close(fd)
            except (ValueError, OSError):
                continue
            if info.get("validator") == validator and info.get("total") == total:
                found.add((start, end))
        return found

    def forget(self) -> None:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.folder, name))
            except OSError:
                pass
        for folder in (self.folder, os.path.dirname(self.folder)):  # the second if empty
            try:
                os.rmdir(folder)
            except OSError:
                pass


@dataclass(frozen=True)
class _Object:
    """One big object as its range tasks need it (the link never shows in a repr)."""

    link: str = field(repr=False)
    name: str
    path: str
    index: int
    validator: str
    total: int
    identity: tuple[int, int]
    #: Range tasks of the object: each takes this share of the object's rate limit.
    tasks: int = 1
    #: Ranges a task fetches at once: the object's ``segments`` spread over the cluster.
    lanes: int = 4


# --------------------------------------------------------------------------- worker side


def run_ranges(spec: Any, obj: _Object, n: int, ranges: list[tuple[int, int]]) -> tuple:
    """A range task on a worker: fetch ``ranges`` of ``obj`` into its ``.part``; never raises.

    Returns ``("done", received, worker address)``, ``("aborted",)`` or
    ``("error", error type name, message)``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .cluster_batch import _context, _Progress

    ctx = _context(spec)
    run = f"{secrets.token_hex(4)}-r{n}"
    try:
        marks = RangeMarks(spec.root, os.path.relpath(obj.path, spec.root).replace(os.sep, "/"))
        written = marks.done(obj.validator, obj.total)
        todo = [r for r in ranges if tuple(r) not in written]
        # the object holds one batch's share of bytes_per_hour, split among its tasks
        rate = spec.rate / max(1, obj.tasks) if spec.rate else None
        limiter = TokenBucket(rate, burst=rate) if rate else None
        session = spec.session_factory() if spec.session_factory is not None else None
        options = spec.big_common
        part = part_path(obj.path)

        def one(place: int) -> int:
            start, end = todo[place]
            key = (obj.index, 0, f"{run}-{place}")
            progress = _Progress(ctx, key, obj.name, obj.total)
            abort = AbortEvent(ctx.abort, time_limit=spec.time_limit)
            try:
                got = fetch_range(
                    remote_of(obj.link, options, session),
                    part,
                    start,
                    end,
                    obj.validator,
                    obj.total,
                    identity=obj.identity,
                    progress=progress,
                    limiter=limiter,
                    abort=abort,
                    budget=ctx.budget,
                    retry=options.retry_policy(),
                )
            finally:
                abort.close()
                with ctx.lock:
                    ctx.current.pop(key, None)
            marks.mark(start, end, obj.validator, obj.total)
            return got

        with environment(spec.settings):
            if not todo:
                received = 0
            else:
                with ThreadPoolExecutor(
                    min(obj.lanes, len(todo)), thread_name_prefix=f"{spec.job_id}-r{n}"
                ) as pool:
                    received = sum(pool.map(one, range(len(todo))))
        return ("done", received, ctx.worker.address)
    except DownloadAborted:
        if ctx.abort.is_set():
            return ("aborted",)
        return ("error", "DownloadAborted", ctx.why or "aborted")
    except Exception as exc:  # noqa: BLE001 - reported with the object, redacted
        if ctx.abort.is_set() and ctx.why == "aborted":
            return ("aborted",)
        return ("error", type(exc).__name__, _describe(exc, obj.link))
    finally:
        ctx.send()
        from .cluster_batch import _CONTEXTS_LOCK

        with _CONTEXTS_LOCK, ctx.lock:
            for key in [k for k in ctx.current if k[0] == obj.index and str(k[2]).startswith(run)]:
                del ctx.current[key]
            ctx.running -= 1
            if ctx.running == 0:
                ctx.idle_since = time.monotonic()


# --------------------------------------------------------------------------- client side


def probe_task(task: _Task, spec: Any, threshold: int) -> Probe | None:
    """The client's one request for ``task``: a :class:`Probe` if it is to be split.

    ``None`` (the object goes to one worker, as a batch of its own or with others) when
    a file is already under its name (the usual path judges whether it is current), the
    server does not answer ranges with a size and a validator, or the object is smaller
    than ``threshold``.
    """
    if os.path.lexists(task.path):
        return None
    options = spec.big_common
    session = spec.session_factory() if spec.session_factory is not None else None
    try:
        found = probe(remote_of(task.link, options, session), retry=options.retry_policy())
    except Exception as exc:  # noqa: BLE001 - the worker's path reports the object's error
        log.debug("job %s: cannot ask %s its size: %s", spec.job_id, redact(task.link), exc)
        return None
    if found is None or found.total < max(1, threshold):
        return None
    if task.size is not None and task.size != found.total:
        return None  # the usual path raises the size mismatch
    return found


class SplitObject:
    """The client's side of one big object: plan, send, wait, verify, place, record."""

    def __init__(self, run: Any, spec: Any, root: str, index: int, task: _Task, found: Probe):
        self.run, self.spec, self.root = run, spec, root
        self.index, self.task, self.found = index, task, found
        self.key = os.path.relpath(task.path, root).replace(os.sep, "/")

    def __call__(self) -> tuple:
        """``("done", skipped, size, received, run)``, ``("aborted",)`` or ``("error", msg)``;
        ``None`` when the ``.part`` is held by another process (go the usual way)."""
        task = self.task
        part = part_path(task.path)
        os.makedirs(os.path.dirname(task.path) or ".", exist_ok=True)
        fd = open_working_file(part, os.O_RDWR | os.O_CREAT, what="partial file")
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return None
            return self._run(fd, part)
        finally:
            os.close(fd)

    def _run(self, fd: int, part: str) -> tuple:
        task, found, spec, client = self.task, self.found, self.spec, self.run.client
        marks = RangeMarks(self.root, self.key)
        written: set[tuple[int, int]] = set()
        if os.fstat(fd).st_size == found.total:
            written = marks.done(found.validator, found.total)
        if not written:
            marks.forget()
            os.ftruncate(fd, 0)
            os.ftruncate(fd, found.total)
        threads = max(1, sum(client.nthreads().values()))
        smallest = max(MIN_RANGE, math.ceil(found.total / (threads * RANGES_PER_THREAD)))
        plan = plan_ranges(found.total, threads * RANGES_PER_THREAD, smallest)
        todo = [r for r in plan if r not in written]
        st = os.fstat(fd)
        # the object's segments (connections) spread over the cluster's threads
        lanes = max(1, math.ceil(max(1, spec.big_common.segments) / threads))
        groups = [todo[i : i + lanes] for i in range(0, len(todo), lanes)]
        obj = _Object(
            task.link,
            task.name,
            task.path,
            self.index,
            found.validator,
            found.total,
            (st.st_dev, st.st_ino),
            tasks=len(groups),
            lanes=lanes,
        )
        log.info(
            "job %s: %s (%d bytes) in %d ranges across the cluster, %d already here",
            spec.job_id,
            task.name,
            found.total,
            len(plan),
            len(plan) - len(todo),
        )
        futures = []
        for group in groups:
            n = self.run.next_range()
            futures.append(
                client.submit(
                    run_ranges,
                    spec,
                    obj,
                    n,
                    group,
                    key=f"dlutils-{spec.job_id}-range-{n}",
                    pure=False,
                )
            )
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - lost with its workers, cancelled
                outcomes.append(("error", type(exc).__name__, _describe(exc, task.link)))
        received = sum(o[1] for o in outcomes if o[0] == "done")
        self.workers = {o[2] for o in outcomes if o[0] == "done"}
        errors = [o for o in outcomes if o[0] == "error"]
        changed = [o for o in errors if o[1] == "RemoteChangedError"]
        if changed:  # another version's bytes may be in the .part: none of it is kept
            marks.forget()
            os.ftruncate(fd, 0)
            _unlink_ours(part, fd)
            return ("error", changed[0][2])
        if any(o[0] == "aborted" for o in outcomes) or self.run.job._abort.is_set():
            return ("aborted",)  # the .part and its marks stay for the next run
        if errors:
            return ("error", errors[0][2])
        if not set(plan) <= marks.done(found.validator, found.total):
            return ("error", f"DownloadError: not every range of {task.name} was written")
        checksum = parse_checksum(task.checksum) if task.checksum else None
        listed = task.remote_attrs
        if checksum is None and listed is not None and listed.sha256:  # a hub's LFS sha256
            checksum = parse_checksum(f"sha256:{listed.sha256}")
        # Content-MD5 of a range answer may be the range's own: not the object's digest
        headers = {k: v for k, v in found.headers.items() if k.lower() != "content-md5"}
        attrs = attrs_from_headers(redact(task.link), headers)
        attrs = dataclasses.replace(attrs, size=found.total)
        if checksum is None:
            for algorithm in ("sha256", "md5", "crc32c"):  # what the server said, if anything
                value = getattr(attrs, algorithm, None)
                if value:
                    checksum = parse_checksum(f"{algorithm}:{value}")
                    break
        try:
            place_part(fd, part, task.path, found.total, checksum, redact(task.link))
        except DownloadError as exc:
            marks.forget()
            return ("error", _describe(exc, task.link))
        marks.forget()
        if checksum is not None:
            attrs = dataclasses.replace(
                attrs, **{checksum.algorithm: checksum.hexdigest}, verified=checksum.algorithm
            )
        records = BatchRecords(self.root, f"{spec.job_id}-b{self.index:06d}", {})
        try:
            records.put(task.path, attrs)
            records.commit(task.path, False, received)
            records.finish()
        except OSError as exc:
            log.warning("job %s: cannot record %s: %s", spec.job_id, task.name, exc)
            records.abandon()
        log.info("placed %s (%d bytes, in ranges)", task.path, found.total)
        return ("done", False, found.total, received, "ranges")


def _unlink_ours(part: str, fd: int) -> None:
    try:
        st, found = os.fstat(fd), os.lstat(part)
        if (st.st_dev, st.st_ino) == (found.st_dev, found.st_ino):
            os.unlink(part)
    except OSError:
        pass
