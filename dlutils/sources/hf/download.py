"""``hf_download`` and ``fetch_hf``: files of a repository onto disk, over the engine."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

import requests

from ...checksums import parse_checksum
from ...destinations import is_store, resolve
from ...errors import (
    DownloadAborted,
    InvalidInputError,
    JobFailedError,
    UnsafePathError,
)
from ...freshness import Manifest, ObjectAttrs
from ...names import check_name, join_inside
from ...redaction import redacting
from ...transfer import Fetched, download
from ...transfer.options import TransferOptions
from ...transports import choose
from .._common import (
    SourceObject,
    cache_mode,
    hit,
    is_current,
    keeping,
    names_a_folder,
    record,
    trusted,
    verify_cached,
    with_verified,
)
from ..http import HttpRemote
from .hub import _CurlHops, _Hops, _Hub, _stat
from .links import _EXAMPLE, _FORM, HfRef, parse_hf, resolve_url
from .listing import list_hf

log = logging.getLogger("dlutils")


def _refused(exc: requests.HTTPError, hub: _Hub, ref: HfRef) -> Exception:
    response = exc.response
    if response is not None and response.status_code in (401, 403) and hub.on_hub(response.url):
        return hub.error(response, ref.link, ref)
    return exc


def fetch_hf(
    link: str | HfRef,
    local_filepath: str | os.PathLike | None = None,
    options: TransferOptions | None = None,
) -> Fetched:
    """Download one file of a Hub repository and say whether it was downloaded or current.

    Parameters
    ----------
    link : str or HfRef
        ``hf://datasets/<org>/<name>[@revision]/path/in/repo`` (a model without
        ``datasets/``); see :func:`parse_hf`.
    local_filepath : str or PathLike, optional
        A file path; or a folder (existing, or written with a trailing separator), or
        ``None`` for the current folder, in which the file keeps its folders
        (``folder/data/train.csv``). A path with ``..`` is refused before any request.
    options : TransferOptions, optional
        The keywords below (default: their defaults).
    cache : bool or "verified"
        Keep a file already there when it is the Hub's: by its manifest record (whose
        ``source`` is the ``hf://`` link; a matching sha256 decides alone), else by size
        as pyvo does. ``False`` always downloads. ``"verified"`` keeps a file known good
        (the ``checksum`` given holds, or dlutils verified it when it placed it) with no
        request; see :doc:`/freshness`.
    remote_attrs : ObjectAttrs, optional
        The file's attributes from :func:`list_hf`. With its size and sha256 (or ETag),
        no HEAD is sent: the expected size and checksum come from it. Without it, one
        HEAD asks the Hub (``X-Linked-Size``, ``X-Linked-Etag``).
    token : str or bool, optional
        Sent as ``Authorization: Bearer`` to the hub only; ``None`` reads ``HF_TOKEN``
        (then ``HUGGING_FACE_HUB_TOKEN``), ``False`` sends none.
    headers : mapping, optional
        Extra headers, for the hub only; the storage host an LFS file is redirected to
        gets only ``Range``, conditional headers, ``Accept-Encoding`` and ``User-Agent``.
    checksum : str, optional
        Expected ``"algorithm:hex"``; replaces the sha256 the Hub gives.
    endpoint : str, optional
        The hub's address; ``HF_ENDPOINT`` (else https://huggingface.co) by default.
    transport : {"requests", "curl", "auto"}
        What fetches the file's bytes (the resolve link and its redirect), as for
        :func:`~dlutils.sources.http.http_download`; a job's default is ``"auto"``.
        Over libcurl, each request starts at the hub (the token goes there only) and
        follows its redirect to the storage host with the transfer's headers alone.
    timeout, session, verbose, expected_size, retries, backoff, progress, limiter
        As for :func:`~dlutils.sources.http.http_download`.
    abort, manifest, segments, segment_threshold, fsync, sleep
        As for :func:`~dlutils.sources.http.http_download`.

    Returns
    -------
    dlutils.transfer.Fetched

    Raises
    ------
    HfAuthError
        401/403 from the hub: a token with access to the repository is needed.
    requests.HTTPError
        Another refusal: 404 for a missing repository, revision or file.
    dlutils.DownloadError
        Bad input, an unsafe path, a checksum or size mismatch (nothing placed).

    Notes
    -----
    Only LFS files have a sha256 on the Hub; a Git file is checked by its size.

    Examples
    --------
    >>> from dlutils.sources.hf import fetch_hf
    >>> fetch_hf("hf://datasets/org/name@main/../escape.txt", "data/")
    Traceback (most recent call last):
    ...
    dlutils.errors.UnsafePathError: path in the repository '../escape.txt' is not safe: it \
has a '..' segment; a name must be a relative path inside the destination, such as \
'train/shard-0001.tar'
    """
    o = options if options is not None else TransferOptions()
    remote_attrs, verbose = o.remote_attrs, o.verbose
    abort, session = o.abort, o.session
    ref = link if isinstance(link, HfRef) else parse_hf(link)
    if not ref.path or ref.path.endswith("/"):
        raise InvalidInputError(
            f"hf link {ref.link!r} names no file (list a folder with list_hf); write it as "
            f"{_FORM}, for instance {_EXAMPLE}"
        )
    check_name(ref.path, what="path in the repository", local=False)  # the local name: below
    user_checksum = parse_checksum(o.checksum)  # bad input fails before any request
    cache = cache_mode(o.cache)
    if remote_attrs is not None and not isinstance(remote_attrs, ObjectAttrs):
        raise InvalidInputError(f"remote_attrs {remote_attrs!r} is not an ObjectAttrs")
    source = ref.link
    if local_filepath is not None and not names_a_folder(local_filepath):
        target = os.fspath(local_filepath)
        folder = os.path.dirname(target)
    else:
        folder = os.fspath(local_filepath) if local_filepath is not None else ""
        target = join_inside(folder, ref.path, what="path in the repository")
    policy = o.retry_policy()
    hub = _Hub(o.endpoint, o.token, o.headers, session, o.timeout, policy, abort, o.sleep)
    url = resolve_url(ref, endpoint=hub.endpoint)
    with keeping(o, folder, source) as (keeper, bar):
        if trusted(cache, target, user_checksum, keeper, listed=remote_attrs is not None):
            return hit(target, verbose, target, how="is known good")
        known = None if remote_attrs is None else replace(remote_attrs, source=source)
        location = None
        if not _enough(known):
            asked, location = _stat(hub, ref, url)
            known = asked if known is None else known.merged(asked)
        if (
            cache
            and os.path.isfile(target)
            and is_current(target, known, keeper, source)
            and verify_cached(target, user_checksum)
        ):
            return hit(target, verbose, target)
        remote = _file_remote(hub, url, location, o.headers, session, o.transport or "requests")
        try:
            result = download(
                remote,
                target,
                checksum=user_checksum or (f"sha256:{known.sha256}" if known.sha256 else None),
                expected_size=known.size if o.expected_size is None else o.expected_size,
                progress=bar,
                journal=keeper,
                **o.engine(policy),
            )
        except requests.HTTPError as exc:
            refused = _refused(exc, hub, ref)
            if refused is exc:
                raise
            raise refused from None  # the hub's own message adds nothing, and no token
        if result.outcome != "downloaded":
            return hit(target, False, target)
        if keeper is not None:
            record(keeper, target, with_verified(known, result))
        return Fetched(target, False, result.size, result.received)


def _enough(known: ObjectAttrs | None) -> bool:
    """Whether a listing's attributes need no HEAD: a size, and a sha256 or ETag."""
    return known is not None and known.size is not None and bool(known.sha256 or known.etag)


def source_object(link: str | HfRef, options: TransferOptions | None = None) -> SourceObject:
    """The ``hf://`` file ``link`` for the store path (:mod:`dlutils.stores`): attributes from
    the listing (one HEAD when it lacks a size or a sha256), bytes through
    :func:`_file_remote`, its LFS sha256 verified."""
    o = options if options is not None else TransferOptions()
    ref = link if isinstance(link, HfRef) else parse_hf(link)
    if not ref.path or ref.path.endswith("/"):
        raise InvalidInputError(
            f"hf link {ref.link!r} names no file (list a folder with list_hf); write it as "
            f"{_FORM}, for instance {_EXAMPLE}"
        )
    check_name(ref.path, what="path in the repository", local=False)
    hub = _Hub(
        o.endpoint, o.token, o.headers, o.session, o.timeout, o.retry_policy(), o.abort, o.sleep
    )
    url = resolve_url(ref, endpoint=hub.endpoint)
    where: dict[str, str | None] = {}
    known = None if o.remote_attrs is None else replace(o.remote_attrs, source=ref.link)
    if not _enough(known):
        known = None  # asked with stat()

    def stat() -> ObjectAttrs:
        asked, where["location"] = _stat(hub, ref, url)
        listed = None if o.remote_attrs is None else replace(o.remote_attrs, source=ref.link)
        return asked if listed is None else listed.merged(asked)

    def remote(attrs: ObjectAttrs | None) -> Any:
        transport = o.transport or "requests"
        return _file_remote(hub, url, where.get("location"), o.headers, o.session, transport)

    def checksum(attrs: ObjectAttrs | None) -> str | None:
        return f"sha256:{attrs.sha256}" if attrs is not None and attrs.sha256 else None

    return SourceObject(
        ref.link, ref.path.rsplit("/", 1)[-1], known, stat, remote, checksum,
        needs_attrs=True,  # its size and sha256, as fetch_hf asks them first
    )  # fmt: skip


def _file_remote(
    hub: _Hub,
    url: str,
    location: str | None,
    headers: Mapping[str, str] | None,
    session: requests.Session | None,
    transport: str,
) -> Any:
    """The :class:`~dlutils.transfer.Remote` of a file's resolve link: over requests,
    :class:`_Hops` follows the hub's redirects; over libcurl, :class:`_CurlHops`."""
    if choose(transport, session=session) == "curl":
        return _CurlHops(hub, url, location, headers)
    hops: Any = _Hops(hub, location)  # HttpRemote calls only its get()
    return HttpRemote(url, session=hops, headers=headers, timeout=hub.timeout)


@redacting  # no credential in what it raises, whichever library raised it
def hf_download(
    repo_id: str,
    filename: str | None = None,
    local_dir: str | os.PathLike | None = None,
    *,
    subfolder: str | None = None,
    repo_type: str | None = "model",
    revision: str | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    cache: bool | str = True,
    timeout: Any = None,
    session: requests.Session | None = None,
    verbose: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    parquet: bool = False,
    workers: int = 8,
    endpoint: str | None = None,
    **options: Any,
) -> str | list[str]:
    """Download one file of a Hub model or dataset, or the whole repository.

    The keywords and defaults are ``huggingface_hub.hf_hub_download``'s: a repository is
    a model unless ``repo_type="dataset"`` says otherwise, ``revision`` is ``"main"``,
    ``local_dir`` is the folder to write into, ``token`` the token. The files go into
    ``local_dir`` as they are in the repository (no cache folder of the hub's, no links).

    Parameters
    ----------
    repo_id : str
        ``"<org>/<name>"``.
    filename : str, optional
        A path in the repository: that file only. ``None``: every file (recursively).
    local_dir : str or PathLike, optional
        The folder to write into (the current folder by default); every file keeps its
        folders under it (``local_dir/data/train.csv``). A manifest
        (``.dlutils-manifest.sqlite``) directly in it records what came from where.
        ``local_dirpath=`` (the old name) still works, with a :class:`DeprecationWarning`.
    subfolder : str, optional
        A folder in the repository that ``filename`` is in (as huggingface_hub's).
    repo_type : str
        ``"model"`` (the default, as huggingface_hub; ``None`` too) or ``"dataset"``.
    revision : str, optional
        A branch, tag or commit (``"main"`` when ``None``), honoured by the listing and
        every file.
    token : str or bool, optional
        See :func:`fetch_hf`; ``None`` reads ``HF_TOKEN``, ``False`` sends none.
    force_download : bool
        Download even the files already here and current (as ``cache=False``).
    include, exclude, parquet
        See :func:`list_hf` (a whole repository only).
    workers : int
        Files downloaded at once (a whole repository).
    endpoint : str, optional
        The hub's address; ``HF_ENDPOINT`` (else https://huggingface.co) by default.
    cache, timeout, session, verbose, **options
        As for :func:`fetch_hf` (``headers``, ``retries``, ``backoff``, ``progress``,
        ``limiter``, ``abort``, ``manifest``, ``segments``, ``segment_threshold``,
        ``fsync``, ``sleep``; ``checksum`` and ``expected_size`` for one file).

    Returns
    -------
    str or list of str
        The file's path; or every file's path, in listing order. Relative when
        ``local_dir`` is.

    Raises
    ------
    HfAuthError
        401/403: a token with access to the repository is needed.
    dlutils.JobFailedError
        Some files failed (the others finished): ``errors`` lists each with its error,
        ``paths`` the files that are in place. A path with ``..`` fails alone.
    requests.HTTPError, dlutils.DownloadError
        The listing failed, or the one file did.

    Examples
    --------
    >>> import json, os, tempfile
    >>> from dlutils.localserver import LocalServer
    >>> from dlutils.sources.hf import hf_download
    >>> tree = [{"type": "directory", "oid": "1" * 40, "size": 0, "path": "data"},
    ...         {"type": "file", "oid": "2" * 40, "size": 8, "path": "data/train.csv"}]
    >>> files = {"api/models/org/tiny/tree/main": json.dumps(tree).encode(),
    ...          "org/tiny/resolve/main/data/train.csv": b"a,b\\n1,2\\n"}
    >>> with LocalServer(files) as hub, tempfile.TemporaryDirectory() as folder:
    ...     paths = hf_download("org/tiny", local_dir=folder, endpoint=hub.url)
    ...     print([os.path.relpath(p, folder) for p in paths], open(paths[0]).read().split())
    ['data/train.csv'] ['a,b', '1,2']
    """
    if "local_dirpath" in options:
        old = options.pop("local_dirpath")
        warnings.warn(
            "hf_download(local_dirpath=...) is deprecated: use local_dir=, as "
            "huggingface_hub.hf_hub_download names it",
            DeprecationWarning,
            stacklevel=3,  # through @redacting
        )
        if local_dir is not None and old is not None:
            raise InvalidInputError(
                "local_dir= and local_dirpath= (its old name) are both given: keep local_dir="
            )
        local_dir = old if local_dir is None else local_dir
    repo_type = "model" if repo_type is None else repo_type
    if subfolder is not None:
        if filename is None:
            raise InvalidInputError(
                f"subfolder={subfolder!r} is the folder of filename=: give filename= with it, "
                "or include=[subfolder + '/'] for the whole folder"
            )
        filename = f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename
    if force_download:
        cache = False
    ref = HfRef(repo_type, repo_id, revision if revision is not None else "main")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidInputError(f"workers={workers!r} is not valid: use an int >= 1")
    single = {"checksum", "expected_size", "remote_attrs"} & set(options)
    if filename is None and single:
        raise InvalidInputError(
            f"{', '.join(sorted(single))} describe one file: give filename= with them"
        )
    local_dir = resolve(local_dir, "local_dir")  # file:// is its path
    folder = os.fspath(local_dir) if local_dir is not None else ""
    given = options.pop("manifest", None)
    if is_store(folder):  # each file streamed into the store, its record kept there
        given = False
    common = TransferOptions(
        cache=cache,
        timeout=timeout,
        session=session,
        verbose=verbose,
        token=token,
        endpoint=endpoint,
        **options,
    )
    keeper = Manifest(folder or ".") if given is None else given
    common = common.replace(manifest=keeper)
    try:
        if filename is not None:
            if include is not None or exclude is not None or parquet:
                raise InvalidInputError(
                    "include=, exclude= and parquet= select files of a whole repository; "
                    f"with filename={filename!r} leave them out"
                )
            check_name(filename, what="filename")
            target = join_inside(folder, filename, what="filename")
            return _fetch(replace(ref, path=filename).link, target, common).path
        listing = list_hf(
            ref,
            token=token,
            session=session,
            timeout=timeout,
            parquet=parquet,
            include=include,
            exclude=exclude,
            headers=common.headers,
            endpoint=endpoint,
        )
        return _download_all(listing, folder, workers, common)
    finally:
        if given is None and isinstance(keeper, Manifest):
            keeper.close()


def _fetch(link: str, target: str, options: TransferOptions) -> Fetched:
    """One file of :func:`hf_download`: to a local path, or streamed into a store."""
    if is_store(target):
        from ...stores import fetch_to_store

        return fetch_to_store(link, target, options)
    return fetch_hf(link, target, options)


def _download_all(
    listing: Iterator[tuple[str, ObjectAttrs]],
    folder: str,
    workers: int,
    common: TransferOptions,
) -> list[str]:
    """Every listed file through a pool; at most ``2 * workers`` submitted at once."""
    abort = common.abort
    failures: list[tuple[str, str]] = []
    done: list[tuple[str, Future[Fetched]]] = []
    pending: set[Future[Fetched]] = set()
    with ThreadPoolExecutor(workers, thread_name_prefix="dlutils-hf") as pool:
        try:
            for path, attrs in listing:
                if abort is not None and abort.is_set():
                    break
                try:
                    target = join_inside(folder, path, what="path in the repository")
                except UnsafePathError as exc:
                    failures.append((path, f"{type(exc).__name__}: {exc}"))
                    continue
                future = pool.submit(
                    _fetch, attrs.source, target, common.replace(remote_attrs=attrs)
                )
                done.append((path, future))
                pending.add(future)
                if len(pending) >= 2 * workers:
                    pending = wait(pending, return_when=FIRST_COMPLETED).not_done
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if abort is not None and abort.is_set():
        raise DownloadAborted("the download of the repository was aborted; .part files are kept")
    paths = []
    for path, future in done:
        exc = future.exception()
        if exc is None:
            paths.append(future.result().path)
        else:
            failures.append((path, f"{type(exc).__name__}: {exc}"))
    if failures:
        raise JobFailedError(failures, paths)
    return paths


def file_remote(link: str, options: TransferOptions) -> Any:
    """The engine's :class:`~dlutils.transfer.Remote` of one hub file (``hf://...``), as
    :func:`fetch_hf` opens it: the token for the hub only, its redirects followed one hop
    at a time. For callers that fetch the file's ranges themselves (a cluster job)."""
    o = options
    ref = parse_hf(link)
    if not ref.path or ref.path.endswith("/"):
        raise InvalidInputError(f"hf link {ref.link!r} names no file; write it as {_FORM}")
    hub = _Hub(o.endpoint, o.token, o.headers, o.session, o.timeout, o.retry_policy(), o.abort)
    url = resolve_url(ref, endpoint=hub.endpoint)
    return _file_remote(hub, url, None, o.headers, o.session, o.transport or "requests")
