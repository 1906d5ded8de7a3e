"""The entry points: :func:`download` starts a job; the pyvo-style functions run one to its end."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

from ..destinations import resolve
from ..errors import InvalidInputError, JobFailedError
from ..names import redact
from ..options import OPTION_DOCS, Options, from_keywords
from ..sources.classify import Source, classify_source
from .runner import Job

__all__ = ["download", "range_download", "multi_download"]


def download(
    source: str | Iterable[str] | Mapping[str, str],
    dest: str | os.PathLike,
    *,
    object_name: str | None = None,
    subdir: str | None = None,
    prefix: str = "",
    suffix: str = "",
    sync: bool = False,
    parquet: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    blob_threshold: int | str | None = None,
    description: str | None = None,
    connections: int | None = None,
    bytes_per_hour: int | str | None = None,
    timeout: float | str | timedelta | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    headers: Mapping[str, str] | None = None,
    cache: bool | str = True,
    progress: bool = False,
    verbose: bool = False,
    executor: Executor | None = None,
    session: Any = None,
    session_factory: Any = None,
    segments: int | None = None,
    segment_threshold: int | str | None = None,
    transport: str = "auto",
    aws_profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    token: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    options: Options | None = None,
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

    Every option is checked once, before anything starts; a wrong one raises
    :class:`~dlutils.InvalidInputError` naming it and showing a valid value.

    Parameters
    ----------
    source : str, list of str or dict
        A link, a brace template, a bucket link, an ``hf://`` link, a list of links or
        a dict name -> link (see :func:`dlutils.sources.classify.classify_source`).
    dest : str or PathLike
        The local folder the objects go to, or an object-store prefix (``s3://bucket/p/``,
        ``memory://p/``; see :doc:`/destinations`).
    object_name : str, optional
        One link only: the name to save it as (default: the link's last path element).
    subdir : str, optional
        Templates only: a folder under ``dest`` for the objects.
    prefix, suffix : str
        Bucket links only: keep the objects whose names start and end so.
    sync : bool
        Bucket links only: delete local files this bucket put there whose objects are gone.
    parquet, include, exclude, blob_threshold
        ``hf://`` links only: see :meth:`dlutils.Job.hf`.
    {options}options : Options, optional
        The options above as one object; keywords that differ from their default
        override it.

    Returns
    -------
    Job
        The job, started.

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
    dest = resolve(dest)  # before anything else: a URL that is no destination is refused
    request = {"prefix": prefix, "suffix": suffix, "sync": sync}
    naming = {"object_name": object_name, "subdir": subdir}
    hub = {"parquet": parquet, "include": include, "exclude": exclude}
    hub["blob_threshold"] = blob_threshold
    chosen = from_keywords(locals(), options)
    return _job_for(classify_source(source), dest, chosen, request, hub, naming).start()


def _job_for(
    source: Source,
    dest: str | os.PathLike,
    options: Options,
    request: dict[str, Any],
    hub: dict[str, Any],
    naming: dict[str, Any],
) -> Job:
    """The unstarted job for a classified source; options of another kind are refused."""
    if source.kind == "hf":
        ref = source.hf
        assert ref is not None
        _refuse_unless(source, request, {"prefix": "", "suffix": "", "sync": False}, "bucket")
        which = {"dataset": ref.repo_id} if ref.repo_type == "dataset" else {"model": ref.repo_id}
        return Job.hf(
            dest, **which, file=ref.path, revision=ref.revision, token=options.token,
            **hub, options=options,
        )  # fmt: skip
    _refuse_unless(source, hub, {"parquet": False, "include": None, "exclude": None,
                                 "blob_threshold": None}, "hf")  # fmt: skip
    if source.kind == "backend":
        return Job.backend(source.text, dest, **request, options=options)  # type: ignore[arg-type]
    _refuse_unless(source, request, {"prefix": "", "suffix": "", "sync": False}, "bucket")
    name, subdir = naming["object_name"], naming["subdir"]
    if source.kind != "single":
        _refuse_unless(source, {"object_name": name}, {"object_name": None}, "single")
    if source.kind != "range":
        _refuse_unless(source, {"subdir": subdir}, {"subdir": None}, "range")
    if source.kind == "multi":
        return Job.multi(source.objects, dest, options=options)  # type: ignore[arg-type]
    if source.kind == "range":
        return Job.range(source.text, dest, subdir, options=options)  # type: ignore[arg-type]
    return Job.single(source.text, dest, name, options=options)  # type: ignore[arg-type]


_FOR = {
    "bucket": "bucket links such as 's3://bucket/folder/'",
    "hf": "hf:// links such as 'hf://datasets/org/name'",
    "single": "one link such as 'https://example.org/data.csv'",
    "range": "templates such as 'https://example.org/shard-{000..099}.tar'",
}


def _refuse_unless(
    source: Source, given: dict[str, Any], defaults: dict[str, Any], kind: str
) -> None:
    """Refuse options of another kind of source (``sync=`` for one link, say)."""
    used = [name for name, value in given.items() if value != defaults[name]]
    if used:
        shown = redact(source.text) if source.text is not None else "a list of links"
        raise InvalidInputError(f"{', '.join(used)} apply to {_FOR[kind]}, not to {shown!r}")


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
    dest: str | os.PathLike | None = None,
    *,
    subdir: str | None = None,
    local_dirpath: str | os.PathLike | None = None,
    description: str | None = None,
    connections: int | None = None,
    bytes_per_hour: int | str | None = None,
    timeout: float | str | timedelta | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    headers: Mapping[str, str] | None = None,
    cache: bool | str = True,
    progress: bool = False,
    verbose: bool = False,
    executor: Executor | None = None,
    session: Any = None,
    session_factory: Any = None,
    segments: int | None = None,
    segment_threshold: int | str | None = None,
    transport: str = "auto",
    aws_profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    token: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    options: Options | None = None,
) -> list[str]:
    """Download every link of a brace template into a folder; return the paths.

    ``dest`` is the folder (default: the current one); ``local_dirpath=``, its old
    name, still works and warns. If any object fails, the others still finish, then one
    :class:`~dlutils.JobFailedError` lists every failure.

    Parameters
    ----------
    {options}options : Options, optional
        The options above as one object; keywords that differ from their default
        override it.

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
    dest = _dest_alias(dest, local_dirpath, "range_download")
    chosen = from_keywords(locals(), options)
    job = Job.range(template, dest, subdir, options=chosen)
    return _run_to_end(job.start())


def multi_download(
    objects: Iterable[str] | Mapping[str, str],
    dest: str | os.PathLike | None = None,
    *,
    local_dirpath: str | os.PathLike | None = None,
    description: str | None = None,
    connections: int | None = None,
    bytes_per_hour: int | str | None = None,
    timeout: float | str | timedelta | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    headers: Mapping[str, str] | None = None,
    cache: bool | str = True,
    progress: bool = False,
    verbose: bool = False,
    executor: Executor | None = None,
    session: Any = None,
    session_factory: Any = None,
    segments: int | None = None,
    segment_threshold: int | str | None = None,
    transport: str = "auto",
    aws_profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    token: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    options: Options | None = None,
) -> list[str]:
    """Download a list of links (or a dict name -> link) into a folder; return the paths.

    ``dest`` is the folder (default: the current one); ``local_dirpath=``, its old
    name, still works and warns. If any object fails, the others still finish, then one
    :class:`~dlutils.JobFailedError` lists every failure.

    Parameters
    ----------
    {options}options : Options, optional
        The options above as one object; keywords that differ from their default
        override it.

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
    dest = _dest_alias(dest, local_dirpath, "multi_download")
    chosen = from_keywords(locals(), options)
    job = Job.multi(objects, dest, options=chosen)
    return _run_to_end(job.start())


def _dest_alias(
    dest: str | os.PathLike | None, local_dirpath: str | os.PathLike | None, function: str
) -> str | os.PathLike:
    """``dest``, or ``local_dirpath`` (its old name) with a DeprecationWarning."""
    if local_dirpath is not None:
        if dest is not None:
            raise InvalidInputError(
                f"{function}() got both dest= and local_dirpath= (its old name): give dest= only"
            )
        warnings.warn(
            f"{function}(local_dirpath=...) is deprecated: use dest=", DeprecationWarning, 3
        )
        dest = local_dirpath
    return dest if dest is not None else ""


for _function in (download, range_download, multi_download):
    _function.__doc__ = (_function.__doc__ or "").replace(
        "{options}", OPTION_DOCS.replace("\n", "\n    ")
    )
del _function
