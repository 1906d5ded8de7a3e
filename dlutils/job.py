"""Download jobs as the AIStore downloader runs them: request types, status, limits, abort.

A :class:`Job` is thin: it expands a request into tasks (one link, one local path
each), runs them on an executor through :func:`dlutils.sources.fetch`, counts, and
reports. All transfer logic lives below it.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from . import templates
from .errors import (
    DownloadAborted,
    DownloadError,
    InvalidInputError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from .freshness import Manifest, ObjectAttrs
from .limits import TokenBucket, parse_duration, parse_size
from .names import check_name, join_inside, object_name, redact, redact_text
from .progress import Callback, TqdmCallback
from .sources import BUCKET_SCHEMES, check_link, fetch, list_objects, scheme_of
from .transfer import AbortEvent, Fetched

__all__ = [
    "Job",
    "JobStatus",
    "TaskInfo",
    "State",
    "download",
    "range_download",
    "multi_download",
    "list_jobs",
    "get_job",
    "remove_job",
]

log = logging.getLogger("dlutils")

#: Transfers a job runs at once when ``connections`` is not given.
DEFAULT_WORKERS = 8
#: Seconds ``wait()`` gives an aborted job to stop after a KeyboardInterrupt.
_STOP_WAIT = 2.0
#: How many finished tasks a status keeps (the counters cover all of them).
RECENT_TASKS = 32
#: Files at least this big get a progress bar of their own.
FILE_BAR_THRESHOLD = 16 << 20


class State(str, Enum):
    """The life of a job: pending, running, then finished or aborted."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(frozen=True)
class TaskInfo:
    """One object of a job: its name and how many of its bytes are here."""

    name: str
    downloaded: int = 0
    total: int | None = None


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job, with the AIStore downloader's counters.

    ``finished`` counts the objects done, skipped ones included (as in the
    reference); ``errors`` the objects that failed; ``scheduled`` the ones handed
    to the executor so far; ``total`` is ``None`` while unknown.
    """

    id: str
    description: str
    state: State
    total: int | None
    scheduled: int
    finished: int
    skipped: int
    errors: int
    bytes: int
    started_time: datetime | None
    finished_time: datetime | None
    all_dispatched: bool
    current_tasks: tuple[TaskInfo, ...] = ()
    finished_tasks: tuple[TaskInfo, ...] = ()
    download_errors: tuple[tuple[str, str], ...] = ()
    #: Local files removed by a synchronising backend job (counted in ``finished`` too).
    deleted: int = 0

    @property
    def pending(self) -> int:
        """Objects not yet finished or failed."""
        total = self.total if self.total is not None else self.scheduled
        return max(0, total - self.finished - self.errors)

    @property
    def done(self) -> bool:
        """True once the job is finished or aborted."""
        return self.state in (State.FINISHED, State.ABORTED)

    @property
    def aborted(self) -> bool:
        return self.state is State.ABORTED

    def to_dict(self) -> dict[str, Any]:
        """The status in the AIStore downloader's JSON field names."""

        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        def task(t: TaskInfo) -> dict[str, Any]:
            return {"name": t.name, "downloaded": t.downloaded, "total": t.total}

        return {
            "id": self.id,
            "description": self.description,
            "state": self.state.value,
            "started_time": when(self.started_time),
            "finished_time": when(self.finished_time),
            "finished_cnt": self.finished,
            "scheduled_cnt": self.scheduled,
            "skipped_cnt": self.skipped,
            "error_cnt": self.errors,
            "deleted_cnt": self.deleted,
            "total": self.total if self.total is not None else -1,
            "all_dispatched": self.all_dispatched,
            "aborted": self.aborted,
            "bytes": self.bytes,
            "current_tasks": [task(t) for t in self.current_tasks],
            "finished_tasks": [task(t) for t in self.finished_tasks],
            "download_errors": [{"name": n, "error": e} for n, e in self.download_errors],
        }


@dataclass(frozen=True)
class _Task:
    name: str
    link: str
    path: str
    checksum: str | None = None
    size: int | None = None
    #: Why this object cannot be fetched (an unsafe name), recorded as its error.
    error: str | None = None
    #: The class of that error (:class:`~dlutils.UnsafePathError` for a name).
    error_type: type[Exception] = InvalidInputError
    #: What a bucket listing said of the object, so an unchanged one costs no request.
    remote_attrs: ObjectAttrs | None = None
    #: A big file (``blob_threshold``): fetched alone, over several connections.
    big: bool = False


@dataclass
class _Options:
    description: str | None = None
    timeout: float | None = None
    connections: int | None = None
    bytes_per_hour: int | None = None
    headers: dict[str, str] | None = None
    cache: bool = True
    retries: int = 5
    executor: Executor | None = None
    progress: bool = False
    session: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


_OPTION_NAMES = {
    "description",
    "timeout",
    "connections",
    "bytes_per_hour",
    "headers",
    "cache",
    "retries",
    "executor",
    "progress",
    "session",
    "verbose",
    "backoff",
    "segments",
    "segment_threshold",
    # options of one source, passed only to links of that scheme
    "aws_profile",
    "endpoint_url",
    "region",
    "token",
}


def _options(opts: Mapping[str, Any]) -> _Options:
    unknown = set(opts) - _OPTION_NAMES
    if unknown:
        raise InvalidInputError(
            f"unknown job option(s) {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(_OPTION_NAMES))}"
        )
    result = _Options()
    result.description = opts.get("description")
    # 0 means "no limit", as in AIStore's requests.
    result.timeout = parse_duration(opts.get("timeout")) or None
    connections = opts.get("connections")
    if connections is not None and (not isinstance(connections, int) or connections < 0):
        raise InvalidInputError(
            f"connections={connections!r} is not valid: use an int >= 0 (0 means no limit)"
        )
    result.connections = connections or None
    bph = opts.get("bytes_per_hour")
    if bph is not None:
        bph = parse_size(bph)
    result.bytes_per_hour = bph or None
    headers = opts.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        raise InvalidInputError(f"headers={headers!r} is not valid: use a mapping name -> value")
    result.headers = dict(headers) if headers else None
    result.cache = bool(opts.get("cache", True))
    result.retries = opts.get("retries", 5)
    executor = opts.get("executor")
    if executor is not None and not isinstance(executor, Executor):
        raise InvalidInputError(
            f"executor={executor!r} is not valid: use a concurrent.futures.Executor"
        )
    result.executor = executor
    result.progress = bool(opts.get("progress", False) or opts.get("verbose", False))
    result.session = opts.get("session")
    passed = ("backoff", "segments", "segment_threshold", "aws_profile", "endpoint_url", "region")
    result.extra = {k: opts[k] for k in (*passed, "token") if k in opts}
    return result


# ------------------------------------------------------------------------------- registry

_registry: dict[str, Job] = {}
#: The command line's worker runs a stored job under the store's id: it sets ``value`` in
#: the thread that creates the job, so logs and statuses name the id the user was given.
_given_id = threading.local()
_registry_lock = threading.Lock()


def list_jobs(regex: str | None = None, active_only: bool = False) -> list[Job]:
    """Jobs started in this process, running ones first, then by start time.

    See :func:`download` for an example.

    Parameters
    ----------
    regex : str, optional
        Keep jobs whose description contains a match (``re.search``).
    active_only : bool
        Keep only jobs still running.
    """
    pattern = None
    if regex is not None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise InvalidInputError(f"regex {regex!r} is not valid: {exc}") from exc
    with _registry_lock:
        jobs = list(_registry.values())
    if pattern is not None:
        jobs = [job for job in jobs if pattern.search(job.description)]
    if active_only:
        jobs = [job for job in jobs if not job.status().done]
    return sorted(jobs, key=lambda job: (job.status().done, job._started or 0.0))


def get_job(job_id: str) -> Job:
    """The job with this id; :class:`~dlutils.JobNotFoundError` if there is none.

    Examples
    --------
    >>> import dlutils
    >>> try:
    ...     dlutils.get_job("dnl-0000000000")
    ... except dlutils.JobNotFoundError as exc:
    ...     print(exc)
    no download job 'dnl-0000000000'; list_jobs() shows the known ones
    """
    with _registry_lock:
        job = _registry.get(job_id)
    if job is None:
        raise JobNotFoundError(f"no download job {job_id!r}; list_jobs() shows the known ones")
    return job


def remove_job(job_id: str) -> None:
    """Forget a finished or aborted job; a running one cannot be removed.

    See :func:`download` for an example.
    """
    job = get_job(job_id)
    state = job.status().state
    if state in (State.PENDING, State.RUNNING):
        raise JobStateError(
            f"job {job_id} is {state.value}: abort it or wait for it before removing it"
        )
    with _registry_lock:
        _registry.pop(job_id, None)


# ------------------------------------------------------------------------------- the job


class Job:
    """A download job: many objects, one id, status counters, limits, abort.

    Create one with :meth:`single`, :meth:`multi`, :meth:`range` or
    :meth:`from_request` (unstarted), or with :func:`dlutils.download` (started).

    Examples
    --------
    >>> import tempfile
    >>> from dlutils import Job
    >>> from dlutils.localserver import LocalServer
    >>> files = {f"d/f{i}.bin": bytes([i]) * 100 for i in range(5)}
    >>> with LocalServer(files) as server, tempfile.TemporaryDirectory() as dest:
    ...     job = Job.range(server.url + "/d/f{0..4}.bin", dest).start()
    ...     status = job.wait(timeout=60)
    ...     print(status.state.value, status.finished, status.errors, status.bytes)
    finished 5 0 500
    """

    def __init__(
        self,
        tasks: Callable[[], Iterator[_Task]],
        dest: str | os.PathLike,
        *,
        total: int | None,
        source: str,
        opts: Mapping[str, Any],
        sync: Callable[[Job, Manifest], None] | None = None,
    ):
        self._opts = _options(opts)
        self._tasks = tasks
        self._sync = sync
        self._blob_threshold: int | None = None
        self.dest = os.fspath(dest)
        self.id = getattr(_given_id, "value", None) or "dnl-" + secrets.token_hex(5)
        self.description = redact_text(
            self._opts.description or f"{redact(source)} -> {self.dest or '.'}"
        )
        self._total = total
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._done = threading.Event()
        self._abort = AbortEvent()
        self._state = State.PENDING
        self._started: float | None = None
        self._finished: float | None = None
        self._scheduled = self._finished_cnt = self._skipped = self._errors = self._bytes = 0
        self._deleted = 0
        self._inflight = 0
        self._all_dispatched = False
        self._current: dict[str, list[Any]] = {}
        self._recent: collections.deque[TaskInfo] = collections.deque(maxlen=RECENT_TASKS)
        self._download_errors: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._bar_lock = threading.Lock()

    # -- request types -----------------------------------------------------------

    @classmethod
    def single(
        cls, link: str, dest: str | os.PathLike, object_name: str | None = None, **opts: Any
    ) -> Job:
        """One link, saved as ``object_name`` (default: the link's last path element)."""
        check_link(link)
        name = _name_for(link, object_name)
        path = join_inside(dest, name)
        task = _Task(name, link, path)
        return cls(lambda: iter([task]), dest, total=1, source=link, opts=opts)

    @classmethod
    def multi(
        cls, objects: Iterable[str] | Mapping[str, str], dest: str | os.PathLike, **opts: Any
    ) -> Job:
        """A list of links (named after their last path element) or a dict name -> link.

        Two links that would be saved under the same name are an error listing
        every clash (the AIStore downloader silently keeps the last one).
        """
        if isinstance(objects, str):
            raise InvalidInputError(
                f"objects={objects!r} is a single string: give a list of links or a dict "
                "name -> link (or use Job.single / Job.range)"
            )
        refused: dict[str, UnsafePathError] = {}
        if isinstance(objects, Mapping):  # names the caller chose: a bad one is refused now
            pairs = [(_name_for(link, name), link) for name, link in objects.items()]
        else:  # names the links give: a bad one is an error of that object only
            pairs = []
            for link in objects:
                try:
                    pairs.append((_name_for(link, None), link))
                except UnsafePathError as exc:
                    name = object_name(link)
                    pairs.append((name, link))
                    refused[name] = exc
        if not pairs:
            raise InvalidInputError("objects is empty: give at least one link")
        by_name: dict[str, list[str]] = collections.defaultdict(list)
        for name, link in pairs:
            check_link(link)
            by_name[name].append(link)
        clashes = {name: links for name, links in by_name.items() if len(links) > 1}
        if clashes:
            lines = "; ".join(
                f"{name!r} <- {', '.join(redact(link) for link in links)}"
                for name, links in sorted(clashes.items())
            )
            raise InvalidInputError(
                f"{len(clashes)} name(s) would be used by more than one link: {lines}. "
                "Give a dict name -> link to choose the names."
            )
        tasks = [
            _refused(name, link, refused[name]) if name in refused else _placed(name, link, dest)
            for name, link in pairs
        ]
        return cls(lambda: iter(tasks), dest, total=len(tasks), source="multi-download", opts=opts)

    @classmethod
    def range(
        cls, template: str, dest: str | os.PathLike, subdir: str | None = None, **opts: Any
    ) -> Job:
        """A brace template of links, expanded lazily (see :mod:`dlutils.templates`).

        The ranges must vary in the last path element, so that every link gets a
        name of its own; ``subdir`` is joined in front of the names.
        """
        parsed = templates.parse(template)
        path_part = re.split(r"[?#]", template, maxsplit=1)[0]  # names drop query and fragment
        folder_part = path_part.rsplit("/", 1)[0] if "/" in path_part else ""
        if templates.has_template(template[len(path_part) :]):
            raise InvalidInputError(
                f"template {redact(template)!r} varies in its query or fragment, which names "
                "leave out, so different links would get the same name; put the ranges in the "
                "file name, or use Job.multi with a dict name -> link"
            )
        if templates.has_template(folder_part):
            raise InvalidInputError(
                f"template {redact(template)!r} varies before its last '/', so different links "
                "would get the same name; put the ranges in the file name, or use Job.multi with "
                "a dict name -> link"
            )
        first = next(iter(parsed), None)
        if first is None:
            raise InvalidInputError(f"template {redact(template)!r} expands to no link")
        if "://" not in template:
            raise UnsupportedSchemeError(
                f"template {redact(template)!r} has no scheme; write it as "
                f"'https://{redact(template)}' (an AIStore JSON request, read by "
                "Job.from_request, takes it as http:// as the AIStore downloader does)"
            )
        check_link(first)
        if isinstance(subdir, str):
            subdir = subdir.rstrip("/\\")  # "some/subdir/" is a folder, as in AIStore
        prefix = check_name(subdir, what="subdir") + "/" if subdir else ""
        try:
            _name_for(first, None)
        except UnsafePathError:
            pass  # a name of the template, not the template: an error of that object only

        def tasks() -> Iterator[_Task]:
            for link in parsed:
                yield _placed(prefix + object_name(link), link, dest)

        return cls(tasks, dest, total=len(parsed), source=template, opts=opts)

    @classmethod
    def backend(
        cls,
        bucket_uri: str,
        dest: str | os.PathLike,
        prefix: str = "",
        suffix: str = "",
        sync: bool = False,
        **opts: Any,
    ) -> Job:
        """Everything in a bucket (``s3://``, ``gs://``, ``ais://``) under a prefix.

        Local names are the object names relative to the folder in ``bucket_uri``
        (``s3://bucket/train/`` puts ``train/a/0.tar`` at ``dest/a/0.tar``); ``prefix``
        and ``suffix`` filter them. Objects already current are skipped with no
        request. With ``sync=True``, once the whole listing has been seen, local files
        this job's bucket put there (as the folder's manifest records) whose objects
        are gone are deleted; files from elsewhere, or changed by hand, are kept.
        """
        scheme = scheme_of(check_link(bucket_uri))
        if scheme not in BUCKET_SCHEMES:
            raise InvalidInputError(
                f"bucket {redact(bucket_uri)!r} is not a bucket link: use "
                f"{', '.join(s + '://bucket/' for s in BUCKET_SCHEMES)}"
            )
        root, folder = _bucket_root(bucket_uri)
        if not isinstance(prefix, str) or not isinstance(suffix, str):
            raise InvalidInputError(f"prefix={prefix!r} / suffix={suffix!r}: use strings")
        lister_opts = _options(opts)
        listing_options = {"timeout": lister_opts.timeout, "session": lister_opts.session}
        listing_options.update(
            {
                k: v
                for k, v in lister_opts.extra.items()
                if k in ("aws_profile", "endpoint_url", "region", "token")
            }
        )
        listed: set[str] | None = set() if sync else None

        def tasks() -> Iterator[_Task]:
            for key, attrs in list_objects(root + folder, prefix, suffix, **listing_options):
                name = key[len(folder) :] if key.startswith(folder) else key
                if listed is not None:
                    listed.add(name)
                yield _placed(name, root + key, dest, remote_attrs=attrs)

        def synchronise(job: Job, manifest: Manifest) -> None:
            assert listed is not None
            for name, record in manifest.records(prefix):
                if name in listed or not name.endswith(suffix):
                    continue
                if record.source != root + folder + name:
                    continue  # not from this bucket: a web link, or another folder
                path = os.path.join(manifest.root, *name.split("/"))
                if manifest.get(path) is None:
                    continue  # changed by hand since it was downloaded: keep it
                os.unlink(path)
                manifest.remove(path)
                log.info("%s: %s is gone from %s; deleted %s", job.id, name, root, path)
                job._record_deletion(name)

        return cls(
            tasks,
            dest,
            total=None,
            source=root + folder + prefix + ("*" + suffix if suffix else ""),
            opts=opts,
            sync=synchronise if sync else None,
        )

    @classmethod
    def hf(
        cls,
        dest: str | os.PathLike,
        dataset: str | None = None,
        model: str | None = None,
        file: str | None = None,
        revision: str = "main",
        token: str | None = None,
        parquet: bool = False,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        blob_threshold: int | str | None = None,
        **opts: Any,
    ) -> Job:
        """A HuggingFace dataset or model repository (or one ``file`` of it).

        Files keep their folders under ``dest``; sizes and LFS sha256 from the listing
        are the expected size and checksum and the freshness record, so a re-run
        fetches nothing unchanged. ``token`` (or ``HF_TOKEN``) goes to the hub only.
        With ``parquet=True``, a dataset's parquet export is fetched instead, as
        ``<config>/<split>/NNNN.parquet``. ``include``/``exclude`` are glob patterns.
        Files of at least ``blob_threshold`` bytes (an int or ``"1GiB"``) are fetched
        one at a time over several connections, the others together in the pool.
        """
        from .sources.hf import HfRef, list_hf, stat_hf

        if (dataset is None) == (model is None):
            raise InvalidInputError(
                f"give exactly one of dataset= or model= (got dataset={dataset!r}, "
                f"model={model!r}), for instance Job.hf('data/', dataset='org/name')"
            )
        repo_type, repo_id = ("dataset", dataset) if dataset is not None else ("model", model)
        threshold = parse_size(blob_threshold) if blob_threshold is not None else None
        if token is not None:
            opts = {**opts, "token": token}
        if file is not None:
            if parquet or include is not None or exclude is not None:
                raise InvalidInputError(
                    "file= names one file: parquet/include/exclude do not apply"
                )
            link = HfRef(repo_type, repo_id, revision, file).link
            task = _Task(file, link, join_inside(dest, file, what="hub file"))
            job = cls(lambda: iter([task]), dest, total=1, source=link, opts=opts)
            return job
        ref = HfRef(repo_type, repo_id, revision)
        options = _options(opts)
        listing = {"token": token, "session": options.session, "timeout": options.timeout}

        def tasks() -> Iterator[_Task]:
            for name, attrs in list_hf(
                ref, parquet=parquet, include=include, exclude=exclude, **listing
            ):
                if threshold is not None and attrs.size is None:
                    attrs = stat_hf(attrs.source, token=token, session=options.session)
                big = threshold is not None and attrs.size is not None and attrs.size >= threshold
                link = attrs.source or ref.link
                yield _placed(name, link, dest, "hub file", remote_attrs=attrs, big=big)

        job = cls(tasks, dest, total=None, source=ref.link, opts=opts)
        job._blob_threshold = threshold
        return job

    @classmethod
    def from_request(cls, body: Mapping[str, Any], dest: str | os.PathLike) -> Job:
        """A job from an AIStore downloader request body (a dict, as parsed from JSON).

        ``type`` is ``single`` (``link``, ``object_name``), ``multi`` (``objects``: a
        list of links or a map name -> link), ``range`` (``template``, ``subdir``) or
        ``backend`` (``bucket``, ``prefix``, ``suffix``, ``sync``, also spelt
        ``synchronize``); common fields are ``description``, ``timeout`` (a duration
        such as ``"1m30s"``: the time one attempt at one object may take, see
        :func:`dlutils.download`), ``limits`` (``connections``, ``bytes_per_hour``) and
        ``headers``.

        As in the AIStore downloader, a link or template without a scheme is an
        ``http://`` link (``"randomwebsite.com/some_dir/object{200..300}log.txt"``), a
        ``subdir`` may end with ``/``, and a backend ``bucket`` with no provider (or
        provider ``"ais"``) is an AIStore bucket of the cluster ``AIS_ENDPOINT`` names.

        Examples
        --------
        >>> import tempfile
        >>> from dlutils import Job
        >>> with tempfile.TemporaryDirectory() as dest:
        ...     job = Job.from_request({
        ...         "type": "range",
        ...         "bucket": {"name": "test"},
        ...         "template": "randomwebsite.com/some_dir/object{200..300}log.txt",
        ...         "subdir": "some/subdir/",
        ...     }, dest)
        ...     print(job.status().total, job.description.split(" -> ")[0])
        101 http://randomwebsite.com/some_dir/object{200..300}log.txt
        """
        if not isinstance(body, Mapping):
            raise InvalidInputError(  # not the body itself: it may hold links and headers
                f"request body of type {type(body).__name__} is not valid: expected a JSON "
                "object (a dict; parse JSON text with json.loads first)"
            )
        kind = body.get("type")
        if not kind:
            raise InvalidInputError(
                "request body has no 'type': use one of 'single', 'multi', 'range', 'backend'"
            )
        limits = body.get("limits") or {}
        if not isinstance(limits, Mapping):
            raise InvalidInputError(f"'limits' {limits!r} is not valid: expected an object")
        for key in ("connections", "bytes_per_hour"):
            value = limits.get(key, 0)
            if not isinstance(value, int) or value < 0:
                raise InvalidInputError(
                    f"'limits.{key}' must be a non-negative integer (got: {value!r})"
                )
        headers = body.get("headers")
        if isinstance(headers, Mapping):
            headers = {
                k: ", ".join(v) if isinstance(v, list) else str(v) for k, v in headers.items()
            }
        opts: dict[str, Any] = {
            "description": body.get("description") or None,
            "timeout": body.get("timeout") or None,
            "connections": limits.get("connections") or None,
            "bytes_per_hour": limits.get("bytes_per_hour") or None,
            "headers": headers or None,
        }
        if kind == "single":
            if not body.get("link"):
                raise InvalidInputError("missing 'link' in the request body")
            link = _web_link(body["link"])
            return cls.single(link, dest, body.get("object_name") or None, **opts)
        if kind == "multi":
            objects = body.get("objects")
            if not objects:
                raise InvalidInputError("missing 'objects' in the request body")
            if isinstance(objects, Mapping):
                bad = [k for k, v in objects.items() if not isinstance(v, str)]
            elif isinstance(objects, list):
                bad = [v for v in objects if not isinstance(v, str)]
            else:
                raise InvalidInputError(
                    "'objects' must be a map (name -> link) or a list of links, "
                    f"found {type(objects).__name__}"
                )
            if bad:
                raise InvalidInputError(f"'objects' must hold strings, found {bad[:3]!r}")
            if isinstance(objects, Mapping):
                objects = {name: _web_link(link) for name, link in objects.items()}
            else:
                objects = [_web_link(link) for link in objects]
            return cls.multi(objects, dest, **opts)
        if kind == "range":
            template = body.get("template")
            if not template:
                raise InvalidInputError("missing 'template' in the request body")
            if not isinstance(template, str):
                raise InvalidInputError(f"'template' {template!r} is not valid: use a string")
            _check_template(template)
            return cls.range(_web_link(template), dest, body.get("subdir") or None, **opts)
        if kind == "backend":
            # "sync" is the documented field, "synchronize" AIStore's own JSON tag: either
            sync = body.get("sync", body.get("synchronize", False))
            if not isinstance(sync, bool):
                raise InvalidInputError(f"'sync' {sync!r} is not valid: use true or false")
            return cls.backend(
                _bucket_from_request(body.get("bucket")),
                dest,
                prefix=body.get("prefix") or "",
                suffix=body.get("suffix") or "",
                sync=sync or bool(body.get("synchronize")),
                **opts,
            )
        raise InvalidInputError(
            f"request type {kind!r} is not valid: use one of 'single', 'multi', 'range', 'backend'"
        )

    # -- running -----------------------------------------------------------------

    def start(self) -> Job:
        """Start the job in the background and return it at once."""
        with self._lock:
            if self._state is not State.PENDING:
                raise JobStateError(f"job {self.id} was already started ({self._state.value})")
            self._state = State.RUNNING
            self._started = time.time()
        log.info("job %s started: %s", self.id, self.description)
        with _registry_lock:
            _registry[self.id] = self
        self._thread = threading.Thread(target=self._run, name=f"dlutils-{self.id}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        opts = self._opts
        own = opts.executor is None
        workers = opts.connections or DEFAULT_WORKERS
        executor = opts.executor or ThreadPoolExecutor(workers, thread_name_prefix=self.id)
        live = isinstance(executor, ThreadPoolExecutor)
        window = threading.BoundedSemaphore(opts.connections or workers * 2)
        manifest = Manifest(self.dest or ".")
        limiter = TokenBucket.per_hour(opts.bytes_per_hour) if opts.bytes_per_hour else None
        common = {
            "cache": opts.cache,
            "timeout": _transport_timeout(opts.timeout),
            "session": opts.session,
            "headers": opts.headers,
            "retries": opts.retries,
            "manifest": manifest,
            **({"segments": 1} if opts.connections else {}),
            **opts.extra,
        }
        big_lane: ThreadPoolExecutor | None = None
        big_common = {**common, "segments": max(2, opts.connections or 8)}
        if self._blob_threshold is not None:
            big_common["segment_threshold"] = max(1, self._blob_threshold)
        if opts.progress:
            self._open_bar()
        where = "<manifest>"
        try:
            manifest.check()  # a manifest planted as a link would write elsewhere: refuse the job
            where = "<listing>"
            for task in self._tasks():
                if task.big:  # one at a time, beside the pool: never in its window
                    if self._abort.is_set():
                        break
                    if big_lane is None:
                        big_lane = ThreadPoolExecutor(1, thread_name_prefix=f"{self.id}-big")
                    future = big_lane.submit(self._execute, task, big_common, limiter)
                    with self._lock:
                        self._scheduled += 1
                        self._inflight += 1
                    future.add_done_callback(
                        lambda f, t=task: self._task_done(t, f, None, counted_bytes=True)
                    )
                    continue
                if not self._acquire(window):
                    break
                try:
                    if live:
                        future = executor.submit(self._execute, task, common, limiter)
                    else:
                        future = executor.submit(_execute_elsewhere, task, common, opts.timeout)
                except BaseException:
                    window.release()  # e.g. the caller shut its executor down
                    raise
                with self._lock:
                    self._scheduled += 1
                    self._inflight += 1
                future.add_done_callback(
                    lambda f, t=task: self._task_done(t, f, window, counted_bytes=live)
                )
            else:
                with self._lock:
                    self._all_dispatched = True
                    if self._total is None:  # a listing: known once it is complete
                        self._total = self._scheduled
        except Exception as exc:  # a request that fails while it is being expanded
            log.exception("job %s could not list its objects", self.id)
            with self._lock:
                self._errors += 1
                self._download_errors.append((where, _describe(exc, "")))
        finally:
            with self._lock:
                while self._inflight:
                    self._idle.wait(0.5)
                complete = self._all_dispatched and not self._abort.is_set()
            if complete and self._sync is not None:
                try:
                    self._sync(self, manifest)
                except Exception as exc:
                    log.exception("job %s could not synchronise", self.id)
                    with self._lock:
                        self._errors += 1
                        self._download_errors.append(("<sync>", _describe(exc, "")))
            if own:
                executor.shutdown(wait=True)
            if big_lane is not None:
                big_lane.shutdown(wait=True)
            manifest.close()
            with self._lock:
                self._state = State.ABORTED if self._abort.is_set() else State.FINISHED
                self._finished = time.time()
            self._close_bar()
            self._log_end()
            self._done.set()

    def _log_end(self) -> None:
        s = self.status()
        took = (self._finished or 0.0) - (self._started or self._finished or 0.0)
        log.info(
            "job %s %s: %d done (%d skipped), %d errors, %d bytes in %.1f s: %s",
            self.id,
            s.state.value,
            s.finished,
            s.skipped,
            s.errors,
            s.bytes,
            took,
            self.description,
        )

    def _acquire(self, window: threading.BoundedSemaphore) -> bool:
        while not window.acquire(timeout=0.2):
            if self._abort.is_set():
                return False
        if self._abort.is_set():
            window.release()
            return False
        return True

    def _execute(self, task: _Task, common: dict[str, Any], limiter: Any) -> Fetched:
        if self._abort.is_set():
            raise DownloadAborted("job aborted before this object started")
        _raise_if_unusable(task)
        entry = [task.name, 0, task.size]
        with self._lock:
            self._current[task.name] = entry
        progress = _TaskProgress(self, entry)
        # The object's own event: the job's abort reaches it, and it times each attempt.
        abort = AbortEvent(self._abort, time_limit=self._opts.timeout)
        try:
            return fetch(
                task.link,
                task.path,
                **common,
                **_task_extras(task),
                progress=progress,
                abort=abort,
                limiter=limiter,
            )
        finally:
            abort.close()
            progress.close()
            with self._lock:
                self._current.pop(task.name, None)

    def _task_done(
        self,
        task: _Task,
        future: Future,
        window: threading.BoundedSemaphore | None,
        counted_bytes: bool,
    ) -> None:
        if window is not None:
            window.release()
        with self._lock:
            self._inflight -= 1
            exc = None if future.cancelled() else future.exception()
            if future.cancelled() or (isinstance(exc, DownloadAborted) and self._abort.is_set()):
                self._scheduled -= 1  # dropped by the abort, not failed
            elif exc is not None:
                self._errors += 1
                self._download_errors.append((task.name, _describe(exc, task.link)))
            else:
                fetched: Fetched = future.result()
                self._finished_cnt += 1
                self._skipped += fetched.skipped
                if not counted_bytes:  # run elsewhere: its bytes are known now
                    self._bytes += fetched.received
                    self._bar_bytes(expected=fetched.received, received=fetched.received)
                self._recent.append(TaskInfo(task.name, fetched.size or 0, fetched.size))
            self._idle.notify_all()
            done, errors, total = self._finished_cnt + self._errors, self._errors, self._total
        if self._bar is not None:
            files = f"{done}/{total if total is not None else '?'} files"
            with self._bar_lock:
                self._bar.set_postfix_str(f"{files}, {errors} errors", refresh=False)

    def _record_deletion(self, name: str) -> None:
        with self._lock:
            self._deleted += 1
            self._finished_cnt += 1
            self._total = (self._total or 0) + 1
            self._recent.append(TaskInfo(name, 0, 0))

    def _open_bar(self) -> None:
        """One bar of bytes for the job (files done as its postfix): it moves during a large
        file. Its total grows as the objects' sizes become known."""
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=0,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=self.id,
            dynamic_ncols=True,
        )

    def _bar_bytes(self, expected: int = 0, received: int = 0) -> None:
        """``expected`` more bytes to come (negative: fewer than said), ``received`` came."""
        bar = self._bar
        if bar is None or not (expected or received):
            return
        with self._bar_lock:
            if expected:
                bar.total = max(bar.total + expected, bar.n + received)
            if received:
                bar.update(received)  # tqdm redraws at most every 0.1 s

    def _close_bar(self) -> None:
        if self._bar is not None:
            with self._bar_lock:
                self._bar.total = self._bar.n  # what was not received will not come
                self._bar.close()

    # -- control and status ------------------------------------------------------

    def abort(self) -> None:
        """Stop: drop queued objects, stop running transfers (their ``.part`` files stay).

        Aborting a finished job changes nothing.
        """
        with self._lock:
            if self._state in (State.FINISHED, State.ABORTED):
                return
            if self._state is State.PENDING:
                self._state = State.ABORTED
                self._finished = time.time()
                self._abort.set()
                self._done.set()
                return
        self._abort.set()

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job is finished or aborted and return its status.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass first (the job goes
        on). A ``KeyboardInterrupt`` (^C, or "interrupt the kernel" in a notebook)
        while waiting aborts the job: its transfers stop within about a second, their
        ``.part`` files kept for a later resume, and the ``KeyboardInterrupt`` is
        raised again. To leave a job running, wait with a ``timeout`` in a loop, or
        not at all.
        """
        if self._state is State.PENDING:
            raise JobStateError(f"job {self.id} was never started: call start() first")
        try:
            finished = self._done.wait(timeout)
        except KeyboardInterrupt:
            self.abort()
            stopped = self._done.wait(_STOP_WAIT)
            log.warning(
                "job %s %s after KeyboardInterrupt",
                self.id,
                "aborted" if stopped else "is being aborted",
            )
            raise
        if not finished:
            raise TimeoutError(f"job {self.id} is still running after {timeout} s")
        return self.status()

    def status(self) -> JobStatus:
        """A consistent snapshot of the job's counters and tasks."""
        with self._lock:
            return JobStatus(
                id=self.id,
                description=self.description,
                state=self._state,
                total=self._total,
                scheduled=self._scheduled,
                finished=self._finished_cnt,
                skipped=self._skipped,
                errors=self._errors,
                bytes=self._bytes,
                started_time=_utc(self._started),
                finished_time=_utc(self._finished),
                all_dispatched=self._all_dispatched,
                current_tasks=tuple(
                    TaskInfo(name, done, total) for name, done, total in self._current.values()
                ),
                finished_tasks=tuple(self._recent),
                download_errors=tuple(sorted(self._download_errors)),
                deleted=self._deleted,
            )

    @property
    def paths(self) -> list[str]:
        """The local path of every object of the job (derived again from the request)."""
        return [task.path for task in self._tasks() if task.path]

    def __repr__(self) -> str:
        status = self.status()
        return f"<Job {self.id} {status.state.value} {self.description!r}>"


class _TaskProgress(Callback):
    """Feeds one task's bytes to its job's counters and, for big files, a bar of its own."""

    def __init__(self, job: Job, entry: list[Any]):
        self.job = job
        self.entry = entry
        self.bar: TqdmCallback | None = None
        self.announced = 0  # bytes this task added to the job bar's total

    def set_size(self, size: int | None) -> None:
        expected = 0
        with self.job._lock:
            self.entry[2] = size
            if size is not None:  # a restart announces the size again: count it once
                expected = max(size, self.entry[1]) - self.announced
                self.announced += expected
        self.job._bar_bytes(expected=expected)
        if self.job._opts.progress and size and size >= FILE_BAR_THRESHOLD and self.bar is None:
            self.bar = TqdmCallback(self.entry[0], leave=False)
            self.bar.set_size(size)

    def update(self, nbytes: int) -> None:
        with self.job._lock:
            self.entry[1] += nbytes
            self.job._bytes += nbytes
            # more than announced (or nothing was): the total grows with what came
            expected = max(0, self.entry[1] - self.announced)
            self.announced += expected
        self.job._bar_bytes(expected=expected, received=nbytes)
        if self.bar is not None:
            self.bar.update(nbytes)

    def close(self) -> None:
        # resumed, skipped or failed: its share of the total is what it received
        with self.job._lock:
            expected, self.announced = self.entry[1] - self.announced, self.entry[1]
        self.job._bar_bytes(expected=expected)
        if self.bar is not None:
            self.bar.close()


def _execute_elsewhere(task: _Task, common: dict[str, Any], time_limit: float | None) -> Fetched:
    """The task run by an executor of other processes: no shared progress, abort or limiter."""
    _raise_if_unusable(task)
    abort = AbortEvent(time_limit=time_limit) if time_limit else None
    try:
        return fetch(task.link, task.path, **common, **_task_extras(task), abort=abort)
    finally:
        if abort is not None:
            abort.close()


def _transport_timeout(limit: float | None) -> tuple[float, float] | None:
    """The (connect, read) silence a transport allows under a job's time limit per attempt.

    The job's limit is enforced by the engine; the transport's own limits stay the
    sources' defaults (30 s to connect, 120 s of silence), lowered to just above the
    job's limit so that they never fire first and turn a timeout into a retry.
    """
    if limit is None:
        return None
    return (min(30.0, limit + 1.0), min(120.0, limit + 1.0))


def _placed(
    name: str, link: str, dest: str | os.PathLike, what: str = "object name", **fields: Any
) -> _Task:
    """The task saving ``link`` as ``name`` under ``dest``.

    A name that cannot be used (unsafe, too long, a working file's) makes a task that
    fails as soon as it runs: an error of that object only, the job goes on.
    """
    try:
        return _Task(name, link, join_inside(dest, name, what=what), **fields)
    except (DownloadError, OSError) as exc:
        return _refused(name, link, exc)


def _refused(name: str, link: str, exc: Exception) -> _Task:
    return _Task(name, link, "", error=str(exc), error_type=type(exc))


def _raise_if_unusable(task: _Task) -> None:
    if task.error:
        raise task.error_type(task.error)
    if os.path.isdir(task.path):
        # The sources read an existing folder as "save inside it"; a job always means the
        # file itself, so two objects such as 'x' and 'x/x' must not share one file.
        raise UnsafePathError(
            f"object {task.name!r} would be saved at {task.path!r}, which is a folder "
            "(it holds other objects whose names start with this one)"
        )


def _task_extras(task: _Task) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if task.remote_attrs is not None:
        extras["remote_attrs"] = task.remote_attrs
    if task.checksum:
        extras["checksum"] = task.checksum
    if task.size is not None:
        extras["expected_size"] = task.size
    return extras


def _describe(exc: BaseException, link: str) -> str:
    """The error of one object as its status shows it: type, message, link; no credential."""
    message = f"{type(exc).__name__}: {exc}"
    if link and link in message:
        message = message.replace(link, redact(link))
    message = redact_text(message)  # whatever library wrote it, in whatever form
    shown = redact(link) if link else ""
    if shown and shown not in message:
        message = f"{message} ({shown})"
    return message


def _bucket_root(bucket_uri: str) -> tuple[str, str]:
    """``("s3://bucket/", "some/folder/")`` from ``s3://bucket/some/folder``; ais keeps its host."""
    scheme, rest = bucket_uri.split("://", 1)
    parts = rest.split("/")
    head = 2 if scheme.lower() == "ais" else 1  # ais://host:port/bucket/...
    if len(parts) < head or not all(parts[:head]):
        raise InvalidInputError(
            f"bucket {redact(bucket_uri)!r} names no bucket: write it as "
            + ("'ais://host:port/bucket/'" if head == 2 else f"'{scheme}://bucket/folder/'")
        )
    root = f"{scheme.lower()}://" + "/".join(parts[:head]) + "/"
    folder = "/".join(parts[head:]).lstrip("/")
    if folder and not folder.endswith("/"):
        folder += "/"
    return root, folder


_PROVIDERS = {"aws": "s3", "s3": "s3", "gcp": "gs", "gs": "gs", "gcs": "gs", "ais": "ais"}
_LITERAL_BRACES = (
    "a link whose braces are meant literally can be written percent-encoded "
    "('%7B' for '{', '%7D' for '}')"
)


def _web_link(link: Any) -> Any:
    """A link of an AIStore request: no scheme means ``http://``, as AIStore prepends it."""
    if isinstance(link, str) and link.strip() and "://" not in link:
        return "http://" + link
    return link


def _check_template(text: str) -> None:
    """Refuse a text with a brace that is not a well-formed template, before anything starts."""
    if "{" not in text and "}" not in text:
        return
    try:
        templates.parse(text)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}; {_LITERAL_BRACES}") from None


def _ais_bucket(name: str) -> str:
    """``ais://host:port/name/`` for a bucket of the cluster ``AIS_ENDPOINT`` names."""
    endpoint = os.environ.get("AIS_ENDPOINT", "").strip()
    host = endpoint.split("://", 1)[-1].split("/", 1)[0] if endpoint else ""
    if not host:
        raise InvalidInputError(
            f"bucket {{'name': {name!r}}} is an AIStore bucket (no provider, or 'ais'), but "
            "AIS_ENDPOINT is not set: set it to the cluster's address (for instance "
            "'http://10.0.0.5:8080'), give 'provider': 'aws' or 'gcp', or give the bucket as "
            "a link such as 'ais://10.0.0.5:8080/bucket/'"
        )
    return f"ais://{host}/{name}/"


def _bucket_from_request(bucket: Any) -> str:
    """A bucket link from a request's ``bucket``: a link, or ``{"name", "provider"}``.

    No provider, or ``"ais"``, means an AIStore bucket reached through ``AIS_ENDPOINT``.
    """
    if isinstance(bucket, str) and bucket:
        return bucket
    if isinstance(bucket, Mapping) and bucket.get("name"):
        provider = str(bucket.get("provider") or "ais").lower()
        scheme = _PROVIDERS.get(provider)
        if scheme == "ais":
            return _ais_bucket(str(bucket["name"]))
        if scheme:
            return f"{scheme}://{bucket['name']}/"
        raise InvalidInputError(
            f"bucket provider {bucket.get('provider')!r} is not valid: use 'ais', 'aws' or "
            "'gcp', or give the bucket as a link such as 'ais://host:8080/bucket/'"
        )
    raise InvalidInputError(
        "missing 'bucket' in the backend request: give a link such as 's3://bucket/folder/' "
        "or an object {'name': ..., 'provider': 'aws'}"
    )


def _name_for(link: str, name: str | None) -> str:
    chosen = name if name is not None else object_name(link)
    if not chosen:
        raise InvalidInputError(
            f"cannot take an object name from {redact(link)!r}: give one (object_name= or a "
            "dict name -> link)"
        )
    return check_name(chosen, what="object name")


def _utc(moment: float | None) -> datetime | None:
    return datetime.fromtimestamp(moment, tz=timezone.utc) if moment is not None else None


# ------------------------------------------------------------------------------- entry points


def download(
    source: str | Iterable[str] | Mapping[str, str], dest: str | os.PathLike, **opts: Any
) -> Job:
    """Start a job for ``source`` and return it at once.

    ``hf://datasets/<id>`` and ``hf://<model-id>`` (``@<revision>`` and a file path may
    follow the id) mean a HuggingFace job (``token=``, ``parquet=``, ``include=``,
    ``exclude=``, ``blob_threshold=`` apply); a dict or a list means a multi job, a
    string with a brace range a range job,
    a bucket link (``s3://bucket``, or any bucket link ending in ``/``) a backend
    job (``prefix=``, ``suffix=``, ``sync=`` apply), any other string a single link.
    A string with a brace that is not a well-formed template is refused with
    :class:`~dlutils.InvalidInputError` before anything starts (write braces meant
    literally as ``%7B`` and ``%7D``).

    Examples
    --------
    >>> import tempfile
    >>> import dlutils
    >>> from dlutils.localserver import LocalServer
    >>> with LocalServer({f"f{i}.bin": b"x" * i for i in range(4)}) as server, \\
    ...         tempfile.TemporaryDirectory() as dest:
    ...     job = dlutils.download(server.url + "/f{0..3}.bin", dest, description="four files")
    ...     status = job.wait(60)
    ...     print(job.id.startswith("dnl-"), status.state.value, status.finished, status.bytes)
    ...     print([j.description for j in dlutils.list_jobs(regex="^four")])
    ...     dlutils.remove_job(job.id)
    True finished 4 6
    ['four files']
    """
    is_text = isinstance(source, str)
    if is_text:
        _check_template(source)  # a malformed template is never taken as one literal link
    if is_text and scheme_of(source) == "hf":
        return _hf_job(source, dest, opts).start()
    backend_opts = {k: opts.pop(k) for k in ("prefix", "suffix", "sync") if k in opts}
    if is_text and not templates.has_template(source) and _names_a_bucket(source):
        return Job.backend(source, dest, **backend_opts, **opts).start()
    if backend_opts:
        raise InvalidInputError(
            f"{', '.join(backend_opts)} apply to bucket links such as 's3://bucket/folder/', "
            f"not to {redact(source) if is_text else type(source).__name__!r}"
        )
    if isinstance(source, Mapping) or (not is_text and isinstance(source, Iterable)):
        job = Job.multi(source, dest, **opts)
    elif is_text and templates.has_template(source):
        job = Job.range(source, dest, **opts)
    else:
        job = Job.single(source, dest, **opts)  # type: ignore[arg-type]
    return job.start()


def _hf_job(link: str, dest: str | os.PathLike, opts: dict[str, Any]) -> Job:
    """``hf://datasets/<id>[@rev][/file]`` or ``hf://<model-id>[@rev][/file]``."""
    from .sources.hf import parse_hf

    ref = parse_hf(link)
    which = {"dataset": ref.repo_id} if ref.repo_type == "dataset" else {"model": ref.repo_id}
    return Job.hf(dest, **which, file=ref.path, revision=ref.revision, **opts)


def _names_a_bucket(source: str) -> bool:
    """``s3://bucket``, ``gs://bucket/folder/``, ``ais://host/bucket/``: a bucket, not a file."""
    scheme = scheme_of(source)
    if scheme not in BUCKET_SCHEMES:
        return False
    rest = source.split("://", 1)[1]
    depth = 2 if scheme == "ais" else 1
    return source.endswith("/") or rest.count("/") < depth


def _run_to_end(job: Job) -> list[str]:
    try:
        status = job.wait()
    except BaseException:
        job.abort()
        raise
    if status.errors:
        raise JobFailedError(status.download_errors, job.paths)
    return job.paths


def range_download(
    template: str,
    local_dirpath: str | os.PathLike | None = None,
    *,
    cache: bool = True,
    timeout: float | None = None,
    session: Any = None,
    verbose: bool = False,
    **opts: Any,
) -> list[str]:
    """Download every link of a brace template into a folder; return the paths.

    If any object fails, the others still finish, then one
    :class:`~dlutils.JobFailedError` lists every failure.

    Examples
    --------
    >>> import tempfile
    >>> from dlutils import range_download
    >>> from dlutils.localserver import LocalServer
    >>> with LocalServer({f"s/{i:02d}.txt": b"x" for i in range(12)}) as server, \\
    ...         tempfile.TemporaryDirectory() as dest:
    ...     paths = range_download(server.url + "/s/{00..11..5}.txt", dest)
    ...     print([p[len(dest) + 1:] for p in paths])
    ['00.txt', '05.txt', '10.txt']
    """
    dest = local_dirpath if local_dirpath is not None else ""
    job = Job.range(
        template, dest, cache=cache, timeout=timeout, session=session, progress=verbose, **opts
    )
    return _run_to_end(job.start())


def multi_download(
    objects: Iterable[str] | Mapping[str, str],
    local_dirpath: str | os.PathLike | None = None,
    *,
    cache: bool = True,
    timeout: float | None = None,
    session: Any = None,
    verbose: bool = False,
    **opts: Any,
) -> list[str]:
    """Download a list of links (or a dict name -> link) into a folder; return the paths.

    If any object fails, the others still finish, then one
    :class:`~dlutils.JobFailedError` lists every failure.

    Examples
    --------
    >>> import os, tempfile
    >>> from dlutils import JobFailedError, multi_download
    >>> from dlutils.localserver import LocalServer
    >>> with LocalServer({"a.csv": b"1", "b.csv": b"2"}) as server, \\
    ...         tempfile.TemporaryDirectory() as dest:
    ...     links = {"tables/a.csv": server.url + "/a.csv", "b.csv": server.url + "/b.csv"}
    ...     print([os.path.relpath(p, dest) for p in multi_download(links, dest)])
    ...     try:
    ...         multi_download([server.url + "/a.csv", server.url + "/gone.csv"], dest)
    ...     except JobFailedError as exc:
    ...         print(exc.errors[0][0], "404" in exc.errors[0][1])
    ['tables/a.csv', 'b.csv']
    gone.csv True
    """
    dest = local_dirpath if local_dirpath is not None else ""
    job = Job.multi(
        objects, dest, cache=cache, timeout=timeout, session=session, progress=verbose, **opts
    )
    return _run_to_end(job.start())
