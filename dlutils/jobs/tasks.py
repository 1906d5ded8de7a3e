"""Requests turned into tasks: one link, one local path each, expanded lazily.

Each request type of the AIStore downloader (single, multi, range, backend) and the
HuggingFace repository becomes a :class:`Plan`: a callable yielding the tasks, their
count when known, and the text a job's description shows. A plan fetches nothing.
"""

from __future__ import annotations

import collections
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import templates
from ..destinations import is_store
from ..errors import DownloadError, InvalidInputError, UnsafePathError, UnsupportedSchemeError
from ..freshness import Manifest, ObjectAttrs
from ..limits import parse_size
from ..names import check_name, join_inside, object_name, redact
from ..options import Options
from ..sources import BUCKET_SCHEMES, check_link, list_objects, require, scheme_of
from ..sources.classify import check_link_type
from ..sources.classify import check_template as _check_template

if TYPE_CHECKING:
    from .runner import Job

log = logging.getLogger("dlutils")


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


@dataclass(frozen=True)
class Plan:
    """What a request expands to: its tasks (a fresh iterator per call), how many (``None``
    while a listing runs), the text a description shows, and what the runner must know."""

    tasks: Callable[[], Iterator[_Task]]
    total: int | None
    source: str
    #: Called once the whole listing was seen (a synchronising backend job).
    sync: Callable[[Job, Manifest], None] | None = None
    #: Files at least this big go one at a time over several connections (hub jobs).
    blob_threshold: int | None = None


def single(link: str, dest: str | os.PathLike, object_name: str | None = None) -> Plan:
    """One link, saved as ``object_name`` (default: the link's last path element)."""
    require(scheme_of(check_link(check_link_type(link))))
    name = _name_for(link, object_name)
    task = _Task(name, link, join_inside(dest, name))
    return Plan(lambda: iter([task]), 1, link)


def multi(objects: Iterable[str] | Mapping[str, str], dest: str | os.PathLike) -> Plan:
    """A list of links (named after their last path element) or a dict name -> link.

    Two links that would be saved under the same name are an error listing every clash
    (the AIStore downloader silently keeps the last one).
    """
    if isinstance(objects, str):
        raise InvalidInputError(
            f"objects={objects!r} is a single string: give a list of links or a dict "
            "name -> link (or use Job.single / Job.range)"
        )
    refused: dict[str, UnsafePathError] = {}
    if isinstance(objects, Mapping):  # names the caller chose: a bad one is refused now
        pairs = [
            (_name_for(check_link_type(link, f"link of {name!r}"), name), link)
            for name, link in objects.items()
        ]
    else:  # names the links give: a bad one is an error of that object only
        pairs = []
        for link in objects:
            check_link_type(link)
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
    for scheme in {scheme_of(link) for _, link in pairs}:
        require(scheme)  # once for the job, not once per object
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
    return Plan(lambda: iter(tasks), len(tasks), "multi-download")


def range_(template: str, dest: str | os.PathLike, subdir: str | None = None) -> Plan:
    """A brace template of links, expanded lazily (see :mod:`dlutils.templates`).

    The ranges must vary in the last path element, so that every link gets a name of
    its own; ``subdir`` is joined in front of the names.
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
    require(scheme_of(check_link(first)))
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

    return Plan(tasks, len(parsed), template)


def backend(
    bucket_uri: str,
    dest: str | os.PathLike,
    prefix: str,
    suffix: str,
    sync: bool,
    options: Options,
) -> Plan:
    """Everything in a bucket under a prefix; see :meth:`dlutils.Job.backend`."""
    scheme = scheme_of(check_link(check_link_type(bucket_uri, "bucket")))
    require(scheme)
    if scheme not in BUCKET_SCHEMES:
        raise InvalidInputError(
            f"bucket {redact(bucket_uri)!r} is not a bucket link: use "
            f"{', '.join(s + '://bucket/' for s in BUCKET_SCHEMES)}"
        )
    root, folder = _bucket_root(bucket_uri)
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidInputError(f"prefix={prefix!r} / suffix={suffix!r}: use strings")
    listing_options = {"timeout": options.timeout, "session": options.session}
    for name in ("aws_profile", "endpoint_url", "region", "token"):
        if getattr(options, name) is not None:
            listing_options[name] = getattr(options, name)
    listed: set[str] | None = set() if sync else None

    def tasks() -> Iterator[_Task]:
        for key, attrs in list_objects(root + folder, prefix, suffix, **listing_options):
            name = key[len(folder) :] if key.startswith(folder) else key
            if listed is not None:
                listed.add(name)
            yield _placed(name, root + key, dest, backslash=False, remote_attrs=attrs)

    def synchronise(job: Job, manifest: Manifest) -> None:
        assert listed is not None
        if is_store(dest):
            _synchronise_store(job, os.fspath(dest), listed, root + folder, prefix, suffix)
            return
        for name, record in manifest.records(prefix):
            if name in listed or not name.endswith(suffix):
                continue
            if record.source != root + folder + name:
                continue  # not from this bucket: a web link, or another folder
            try:  # never through a link leading out of the destination
                path = join_inside(manifest.root, name, what="file to delete", backslash=False)
            except (UnsafePathError, OSError) as exc:
                log.warning("%s: keeping %s, gone from %s: %s", job.id, name, root, exc)
                continue
            if manifest.get(path) is None:
                continue  # changed by hand since it was downloaded: keep it
            os.unlink(path)
            manifest.remove(path)
            log.info("%s: %s is gone from %s; deleted %s", job.id, name, root, path)
            job._record_deletion(name)

    return Plan(
        tasks,
        None,
        root + folder + prefix + ("*" + suffix if suffix else ""),
        sync=synchronise if sync else None,
    )


def _synchronise_store(
    job: Job, dest: str, listed: set[str], origin: str, prefix: str, suffix: str
) -> None:
    """:func:`backend`'s sync into an object store: delete the objects under ``dest`` whose
    record (kept in the store) names ``origin`` + their name, gone from the listing.

    Objects with no record, or a record of another source, are kept, as the local sync
    keeps files its manifest does not name.
    """
    from ..stores.objects import remove, stored

    for name, obj, size, record in stored(dest, job._opts.storage_options):
        if name in listed or not name.startswith(prefix) or not name.endswith(suffix):
            continue
        if record is None or record.source != origin + name:
            continue  # not from this bucket folder: another source's, or put there by hand
        if record.size not in (None, size):
            continue  # changed since it was recorded: keep it
        remove(obj)
        log.info("%s: %s is gone from %s; deleted %s", job.id, name, origin, redact(obj.url))
        job._record_deletion(name)


def hub(
    dest: str | os.PathLike,
    *,
    dataset: str | None,
    model: str | None,
    file: str | None,
    revision: str,
    token: str | None,
    parquet: bool,
    include: str | Iterable[str] | None,
    exclude: str | Iterable[str] | None,
    blob_threshold: int | str | None,
    options: Options,
) -> Plan:
    """A HuggingFace repository, or one file of it; see :meth:`dlutils.Job.hf`."""
    from ..sources.hf import HfRef, list_hf, stat_hf

    if (dataset is None) == (model is None):
        raise InvalidInputError(
            f"give exactly one of dataset= or model= (got dataset={dataset!r}, "
            f"model={model!r}), for instance Job.hf('data/', dataset='org/name')"
        )
    repo_type, repo_id = ("dataset", dataset) if dataset is not None else ("model", model)
    threshold = parse_size(blob_threshold) if blob_threshold is not None else None
    if file is not None:
        if parquet or include is not None or exclude is not None:
            raise InvalidInputError("file= names one file: parquet/include/exclude do not apply")
        link = HfRef(repo_type, repo_id, revision, file).link
        task = _Task(file, link, join_inside(dest, file, what="hub file"))
        return Plan(lambda: iter([task]), 1, link)
    ref = HfRef(repo_type, repo_id, revision)
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

    return Plan(tasks, None, ref.link, blob_threshold=threshold)


def read_request(body: Mapping[str, Any]) -> Callable[[type[Job], str | os.PathLike], Job]:
    """An AIStore downloader request body checked, as the call of the Job constructor it
    asks for (see :meth:`dlutils.Job.from_request`)."""
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
        headers = {k: ", ".join(v) if isinstance(v, list) else str(v) for k, v in headers.items()}
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
        name = body.get("object_name") or None
        return lambda cls, dest: cls.single(link, dest, name, **opts)
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
        listed = objects
        return lambda cls, dest: cls.multi(listed, dest, **opts)
    if kind == "range":
        template = body.get("template")
        if not template:
            raise InvalidInputError("missing 'template' in the request body")
        if not isinstance(template, str):
            raise InvalidInputError(f"'template' {template!r} is not valid: use a string")
        _check_template(template)
        link, subdir = _web_link(template), body.get("subdir") or None
        return lambda cls, dest: cls.range(link, dest, subdir, **opts)
    if kind == "backend":
        # "sync" is the documented field, "synchronize" AIStore's own JSON tag: either
        sync = body.get("sync", body.get("synchronize", False))
        if not isinstance(sync, bool):
            raise InvalidInputError(f"'sync' {sync!r} is not valid: use true or false")
        bucket = _bucket_from_request(body.get("bucket"))
        prefix, suffix = body.get("prefix") or "", body.get("suffix") or ""
        sync = sync or bool(body.get("synchronize"))
        return lambda cls, dest: cls.backend(
            bucket, dest, prefix=prefix, suffix=suffix, sync=sync, **opts
        )
    raise InvalidInputError(
        f"request type {kind!r} is not valid: use one of 'single', 'multi', 'range', 'backend'"
    )


def _placed(
    name: str,
    link: str,
    dest: str | os.PathLike,
    what: str = "object name",
    backslash: bool = True,
    **fields: Any,
) -> _Task:
    """The task saving ``link`` as ``name`` under ``dest``.

    A name that cannot be used (unsafe, too long, a working file's) makes a task that
    fails as soon as it runs: an error of that object only, the job goes on.
    """
    try:
        path = join_inside(dest, name, what=what, backslash=backslash)
        return _Task(name, link, path, **fields)
    except (DownloadError, OSError) as exc:
        return _refused(name, link, exc)


def _refused(name: str, link: str, exc: Exception) -> _Task:
    return _Task(name, link, "", error=str(exc), error_type=type(exc))


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


def _web_link(link: Any) -> Any:
    """A link of an AIStore request: no scheme means ``http://``, as AIStore prepends it."""
    if isinstance(link, str) and link.strip() and "://" not in link:
        return "http://" + link
    return link


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
