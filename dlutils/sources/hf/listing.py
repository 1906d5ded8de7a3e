"""Listing a repository (its tree, or its parquet export), filtered by glob patterns."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urljoin

import requests

from ...errors import (
    DownloadError,
    InvalidInputError,
)
from ...freshness import ObjectAttrs
from ...names import redact
from .hub import _Hub
from .links import _COMMIT, _SHA256, PARQUET_REVISION, HfRef, parse_hf

log = logging.getLogger("dlutils")


def _patterns(value: Any, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else value
    try:
        values = tuple(values)
    except TypeError:
        values = (value,)
    if not all(isinstance(p, str) and p for p in values):
        raise InvalidInputError(
            f"{what}={value!r} is not valid: give a glob pattern or a list of them, "
            "such as '*.parquet' or ['data/*', '*.json']"
        )
    # As huggingface_hub's filter_repo_objects: a pattern ending in '/' means its folder.
    return tuple(p + "*" if p.endswith("/") else p for p in values)


def _selected(path: str, include: tuple[str, ...] | None, exclude: tuple[str, ...] | None) -> bool:
    """``fnmatch`` rules, case-sensitive everywhere: ``*`` also matches ``/``."""
    if include is not None and not any(fnmatch.fnmatchcase(path, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatchcase(path, p) for p in exclude))


def _entry_attrs(ref: HfRef, path: str, item: Mapping[str, Any]) -> ObjectAttrs:
    size = item.get("size")
    lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else {}
    sha = lfs.get("oid") or lfs.get("sha256")
    sha = sha.lower() if isinstance(sha, str) and _SHA256.match(sha) else None
    if isinstance(lfs.get("size"), int):
        size = lfs["size"]
    oid = item.get("oid") if isinstance(item.get("oid"), str) else None
    etag = sha or oid  # as the hub's (X-Linked-)ETag: the sha256 of LFS, else the blob id
    return ObjectAttrs(
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        sha256=sha,
        etag=f'"{etag}"' if etag else None,
        source=replace(ref, path=path).link,
    )


def _tree(hub: _Hub, ref: HfRef, folder: str) -> Iterator[Any]:
    revision = quote(ref.revision, safe="")
    url = f"{hub.endpoint}/api/{ref.repo_type}s/{ref.repo_id}/tree/{revision}"
    if folder:
        url += "/" + quote(folder, safe="")
    url += "?recursive=true&expand=false"
    what = f"listing {replace(ref, path=(folder + '/') if folder else None).link}"
    seen = {url}
    while True:
        page, response = hub.get_json(url, what, ref)
        if not isinstance(page, list):
            raise DownloadError(f"{what}: expected a JSON list of entries, got {page!r:.80}")
        yield from page
        following = response.links.get("next", {}).get("url")
        if not following:
            return
        url = urljoin(url, following)
        if url in seen:
            raise DownloadError(f"{what}: the hub sent page {redact(url)} twice")
        seen.add(url)


def _parquet_ref(ref: HfRef) -> HfRef:
    if ref.repo_type != "dataset":
        raise InvalidInputError(
            f"parquet=True reads a dataset's parquet export; {ref.link!r} is a model"
        )
    revision = ref.revision
    if revision == "main":
        return replace(ref, revision=PARQUET_REVISION)
    if revision == PARQUET_REVISION or _COMMIT.match(revision):
        return replace(ref, revision=revision)
    raise InvalidInputError(
        f"parquet=True with revision {revision!r}: the Hub exports the default branch only, "
        f"on revision {PARQUET_REVISION!r}; leave the revision as 'main' (or give "
        f"{PARQUET_REVISION!r} or one of its commits), or pass parquet=False to download "
        f"revision {revision!r} itself"
    )


def _parquet_splits(hub: _Hub, ref: HfRef) -> dict[tuple[str, str], int]:
    """``{(config, folder): files the export lists}``; folder is the split, or
    ``partial-<split>`` where a partial conversion puts it."""
    url = f"{hub.endpoint}/api/datasets/{ref.repo_id}/parquet"
    what = f"the parquet export of {replace(ref, path=None).link}"
    export, _ = hub.get_json(url, what, ref)
    if not isinstance(export, dict):
        raise DownloadError(f"{what}: expected {{config: {{split: [urls]}}}}, got {export!r:.80}")
    splits: dict[tuple[str, str], int] = {}
    for config, by_split in export.items():
        if not isinstance(by_split, dict):
            raise DownloadError(f"{what}: config {config!r} maps to {by_split!r:.80}")
        for split, urls in by_split.items():
            count = len(urls) if isinstance(urls, list) else 0
            splits[(str(config), str(split))] = count
            splits[(str(config), f"partial-{split}")] = count
    return splits


def list_hf(
    uri_or_ref: str | HfRef,
    prefix: str = "",
    suffix: str = "",
    *,
    token: str | bool | None = None,
    session: requests.Session | None = None,
    timeout: Any = None,
    parquet: bool = False,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    revision: str | None = None,
    headers: Mapping[str, str] | None = None,
    endpoint: str | None = None,
) -> Iterator[tuple[str, ObjectAttrs]]:
    """List a repository's files, recursively, page by page, as ``(path, ObjectAttrs)``.

    Parameters
    ----------
    uri_or_ref : str or HfRef
        ``hf://datasets/<org>/<name>[@revision][/folder]`` or a model's link; a path in it
        is a folder to list.
    prefix, suffix : str
        Keep paths that start with the folder plus ``prefix`` and end with ``suffix``.
    token, session, timeout, headers, endpoint
        As for :func:`fetch_hf`.
    parquet : bool
        List the dataset's parquet export instead (see Notes).
    include, exclude : str or list of str, optional
        Glob patterns (``fnmatch``, case-sensitive; ``*`` matches ``/`` too; a pattern
        ending in ``/`` means everything in that folder) on the path in the repository:
        a path is kept when it matches an ``include`` pattern (any path, without
        ``include``) and no ``exclude`` pattern.
    revision : str, optional
        Replaces the link's revision.

    Returns
    -------
    Iterator[tuple[str, ObjectAttrs]]
        Paths in the repository, folders kept, with ``size``, ``sha256`` (LFS files),
        ``etag`` (the sha256 of an LFS file, the git blob id of another, as the Hub's
        ``ETag``) and ``source``: the file's ``hf://`` link at the revision, which
        :func:`fetch_hf` reads. A page is asked for when the previous one is used up.

    Raises
    ------
    HfAuthError
        401/403: the repository needs a token with access.
    requests.HTTPError
        404 for a missing repository, revision or folder.
    dlutils.InvalidInputError
        At once, for malformed arguments.

    Notes
    -----
    With ``parquet=True``, ``/api/datasets/<id>/parquet`` names the export's configs and
    splits, as AIStore's downloader reads it, and the branch ``refs/convert/parquet``
    (where the export lives) is listed for them: paths are ``<config>/<split>/0000.parquet``
    (``<config>/partial-<split>/...`` for a partial export), so the ``0000.parquet`` of
    every split keeps its own folder, each with its size and sha256. The export follows
    the default branch: ``revision`` may be ``"main"`` (read as ``refs/convert/parquet``),
    ``refs/convert/parquet`` or one of its commits.

    Examples
    --------
    >>> from dlutils.sources.hf import list_hf
    >>> for path, attrs in list_hf("hf://datasets/org/name", include="data/*"):  # doctest: +SKIP
    ...     print(path, attrs.size, attrs.sha256)
    data/train/0.parquet 1048576 6f3c...
    """
    ref = uri_or_ref if isinstance(uri_or_ref, HfRef) else parse_hf(uri_or_ref)
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidInputError(f"prefix={prefix!r} and suffix={suffix!r} must be strings")
    if revision is not None:
        ref = replace(ref, revision=revision)
    if parquet:
        ref = _parquet_ref(ref)
    wanted, unwanted = _patterns(include, "include"), _patterns(exclude, "exclude")
    hub = _Hub(endpoint, token, headers, session, timeout)
    folder = (ref.path or "").strip("/")
    start = f"{folder}/{prefix}" if folder else prefix

    def entries() -> Iterator[tuple[str, ObjectAttrs]]:
        splits = _parquet_splits(hub, ref) if parquet else {}
        found: dict[tuple[str, str], int] = {}
        for item in _tree(hub, ref, folder):
            if not isinstance(item, dict) or item.get("type") != "file":
                continue  # directories (recursive listings name them too)
            path = item.get("path")
            if not isinstance(path, str) or not path.startswith(start) or not path.endswith(suffix):
                continue
            if parquet:
                config, _, rest = path.partition("/")
                split, _, name = rest.partition("/")
                if (config, split) not in splits or not name or "/" in name:
                    continue
                found[(config, split)] = found.get((config, split), 0) + 1
            if _selected(path, wanted, unwanted):
                yield path, _entry_attrs(ref, path, item)
        for key, count in found.items():
            if count != splits[key]:
                log.warning(
                    "the parquet export lists %d file(s) for %s, its branch has %d",
                    splits[key],
                    "/".join(key),
                    count,
                )

    return entries()
