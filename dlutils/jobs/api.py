"""The entry points: :func:`download` starts a job; the pyvo-style functions run one to its end."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidInputError, JobFailedError
from ..names import redact
from ..sources.classify import Source, classify_source
from .runner import Job

__all__ = ["download", "range_download", "multi_download"]


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
    return _job_for(classify_source(source), dest, opts).start()


def _job_for(source: Source, dest: str | os.PathLike, opts: dict[str, Any]) -> Job:
    """The unstarted job for a classified source."""
    if source.kind == "hf":
        ref = source.hf
        assert ref is not None
        which = {"dataset": ref.repo_id} if ref.repo_type == "dataset" else {"model": ref.repo_id}
        return Job.hf(dest, **which, file=ref.path, revision=ref.revision, **opts)
    backend_opts = {k: opts.pop(k) for k in ("prefix", "suffix", "sync") if k in opts}
    if source.kind == "backend":
        return Job.backend(source.text, dest, **backend_opts, **opts)  # type: ignore[arg-type]
    if backend_opts:
        shown = redact(source.text) if source.text is not None else "a list of links"
        raise InvalidInputError(
            f"{', '.join(backend_opts)} apply to bucket links such as 's3://bucket/folder/', "
            f"not to {shown!r}"
        )
    if source.kind == "multi":
        return Job.multi(source.objects, dest, **opts)  # type: ignore[arg-type]
    if source.kind == "range":
        return Job.range(source.text, dest, **opts)  # type: ignore[arg-type]
    return Job.single(source.text, dest, **opts)  # type: ignore[arg-type]


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
