"""AIStore source: ``ais://host[:port]/bucket/object`` read through the cluster's HTTP API."""

# What this module relies on, from NVIDIA/aistore (re-implemented, not copied):
#
# * GET/HEAD ``/v1/objects/<bucket>/<object>?provider=ais`` (docs/http_api.md). A gateway
#   answers with a redirect to the target that holds the object; requests follows it.
# * Object headers (api/apc/headers.go, cmn/objattrs.go ``ToHeader``): ``ais-checksum-type``,
#   ``ais-checksum-value``, ``ais-version``, ``ais-atime``; the size in ``Content-Length``,
#   also on HEAD. On a ranged GET the checksum may be the range's, so checksums are read
#   from a HEAD only.
# * Checksum types (cmn/cos/cksum.go): xxhash, xxhash2, md5, crc32c, sha256, sha512, none.
#   md5, crc32c, sha256 and sha512 are verified after download; xxhash and xxhash2 (the
#   default) cannot be computed here and are ignored. AIStore releases before 2024 computed
#   SHA-512/256 under the name "sha256"; such a cluster fails verification loudly.
# * Listing (docs/http_api.md "Listing objects", api/apc/lsmsg.go, cmn/objlist.go): GET
#   ``/v1/buckets/<bucket>?provider=ais`` with the JSON body ``{"action": "list", "value":
#   LsoMsg}``; ``flags`` is a string; ``uuid`` and ``continuation_token`` of a page are sent
#   back for the next one, and an empty token ends the listing. Entries carry ``name``,
#   ``size`` (a string), ``version`` and ``checksum``: the bare value, whose type the
#   listing does not say; its length tells (8 crc32c, 32 md5, 64 sha256, 16 xxhash).
# * https: AIStore clients find a gateway through ``AIS_ENDPOINT`` (docs/environment-vars.md,
#   "http or https address of an arbitrary AIS gateway"). An ``ais://`` link uses https when
#   ``AIS_ENDPOINT`` is an https address of the same host and port; there is no
#   ``ais+https://`` scheme in AIStore, so none here.
#
# Unlike AIStore's CLI, whose ``ais://bucket/object`` takes the cluster from AIS_ENDPOINT,
# dlutils' links name the gateway: ``ais://host[:port]/bucket/object``. Object names are
# taken verbatim, as bucket listings return them: no percent-decoding, and ``?`` and ``#``
# belong to the name.

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ..checksums import parse_checksum
from ..errors import DownloadError, InvalidInputError, UnsupportedSchemeError
from ..freshness import ObjectAttrs, attrs_from_headers
from ..names import join_inside, redact
from ..redaction import redacting
from ..retry import RetryPolicy
from ..transfer import Fetched, call_with_retries
from ..transfer.options import TransferOptions, transfer_options
from ._common import (
    SourceObject,
    cache_mode,
    hit,
    is_current,
    keeping,
    names_a_folder,
    place,
    trusted,
    verify_cached,
)
from .http import HttpRemote, fetch_http

__all__ = ["parse_ais", "ais_url", "fetch_ais", "ais_download", "list_ais", "DEFAULT_PORT"]

log = logging.getLogger("dlutils")

#: Port of an AIStore gateway when a link names none.
DEFAULT_PORT = 8080

_FORM = "'ais://host[:port]/bucket/object'"
_EXAMPLE = "'ais://10.0.0.5:8080/imagenet/train-0022.tgz'"
#: AIStore checksum types the transfer engine can verify.
_VERIFIABLE = ("sha256", "sha512", "md5", "crc32c")
#: A listing gives a bare checksum value: its length names the type among AIStore's.
_BY_WIDTH = {8: "crc32c", 32: "md5", 64: "sha256"}
_HEX = re.compile(r"^[0-9a-f]+$")
_ENTRY_IS_DIR = 1 << 8  # api/apc/lsmsg.go EntryIsDir


def _split(link: Any, endpoint: str | None) -> tuple[str, str, str, str]:
    """``(base_url, "ais://host[:port]/", bucket, rest)`` of an ais link; rest may be empty."""
    if not isinstance(link, str) or not link.strip():
        raise InvalidInputError(
            f"ais link {link!r} is not valid: write it as {_FORM}, for instance {_EXAMPLE}"
        )
    scheme, sep, rest = link.partition("://")
    if not sep or scheme.lower() != "ais":
        raise UnsupportedSchemeError(
            f"link {redact(link)!r} is not an ais:// link; write it as {_FORM}, "
            f"for instance {_EXAMPLE}"
        )
    host, _, path = rest.partition("/")
    bucket, _, name = path.partition("/")
    try:
        parts = urlsplit("//" + host)
        hostname, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise InvalidInputError(f"ais link {link!r} has a bad port ({exc}); {_EXAMPLE}") from exc
    if not hostname or "@" in host:
        raise InvalidInputError(
            f"ais link {redact(link)!r} names no gateway host"
            + (" (credentials do not belong in it)" if "@" in host else "")
            + f": write it as {_FORM}, for instance {_EXAMPLE}"
        )
    if not bucket:
        raise InvalidInputError(
            f"ais link {link!r} names no bucket: write it as {_FORM}, for instance {_EXAMPLE}"
        )
    netloc = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    base = f"{_scheme(hostname, port, endpoint)}://{netloc}"
    return base, f"ais://{host}/", bucket, name


def _scheme(hostname: str, port: int, endpoint: str | None) -> str:
    """``https`` when AIS_ENDPOINT is an https address of this gateway, else ``http``."""
    endpoint = os.environ.get("AIS_ENDPOINT") if endpoint is None else endpoint
    if not endpoint:
        return "http"
    try:
        parts = urlsplit(endpoint if "://" in endpoint else "http://" + endpoint)
        same = (parts.hostname or "").lower() == hostname.lower()
        https = parts.scheme.lower() == "https"
        return "https" if https and same and (parts.port or 443) == port else "http"
    except ValueError:
        return "http"


def parse_ais(link: str, *, endpoint: str | None = None) -> tuple[str, str, str]:
    """Split an ais link into the gateway's URL, the bucket and the object name.

    Parameters
    ----------
    link : str
        ``ais://host[:port]/bucket/object``; the port is 8080 when omitted, and the
        object name may contain ``/``. It is taken verbatim (not percent-decoded).
    endpoint : str, optional
        The cluster's address as in ``AIS_ENDPOINT`` (read from the environment when not
        given): when it is ``https://`` on the same host and port, the gateway's URL is too.

    Returns
    -------
    (str, str, str)
        ``(base_url, bucket, object_name)``.

    Raises
    ------
    dlutils.InvalidInputError
        When a host, bucket or object is missing (a :class:`~dlutils.UnsupportedSchemeError`
        for another scheme).

    Examples
    --------
    >>> from dlutils.sources.ais import parse_ais
    >>> parse_ais("ais://10.0.0.5:8080/imagenet/train-0022.tgz")
    ('http://10.0.0.5:8080', 'imagenet', 'train-0022.tgz')
    >>> parse_ais("ais://gw.local/data/shards/a b.tar", endpoint="https://gw.local:8080")
    ('https://gw.local:8080', 'data', 'shards/a b.tar')
    >>> parse_ais("ais://10.0.0.5/imagenet")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: ais link 'ais://10.0.0.5/imagenet' names no object: \
write it as 'ais://host[:port]/bucket/object', for instance \
'ais://10.0.0.5:8080/imagenet/train-0022.tgz'
    """
    base, _, bucket, name = _split(link, endpoint)
    if not name or name.endswith("/"):
        what = "a folder, not an object" if name else "no object"
        raise InvalidInputError(
            f"ais link {link!r} names {what}: write it as {_FORM}, for instance {_EXAMPLE}"
        )
    return base, bucket, name


def ais_url(link: str, *, endpoint: str | None = None) -> str:
    """The cluster URL that reads the object: ``GET /v1/objects/<bucket>/<object>``.

    Examples
    --------
    >>> from dlutils.sources.ais import ais_url
    >>> ais_url("ais://10.0.0.5/imagenet/train/a b#1.tgz")
    'http://10.0.0.5:8080/v1/objects/imagenet/train/a%20b%231.tgz?provider=ais'
    """
    base, bucket, name = parse_ais(link, endpoint=endpoint)
    return f"{base}/v1/objects/{quote(bucket, safe='')}/{quote(name, safe='/')}?provider=ais"


def _attrs(source: str, headers: Mapping[str, str]) -> tuple[ObjectAttrs, str | None]:
    """An object's attributes from HEAD headers, and its checksum when it can be verified."""
    attrs = attrs_from_headers(source, headers)
    kind = (headers.get("ais-checksum-type") or "").strip().lower()
    value = (headers.get("ais-checksum-value") or "").strip().lower()
    found: dict[str, str] = {}
    if headers.get("ais-version"):
        found["version"] = headers["ais-version"].strip()
    spec = None
    if kind in _VERIFIABLE and value:
        try:
            spec = str(parse_checksum(f"{kind}:{value}"))
        except InvalidInputError:
            log.warning("ignoring malformed %s checksum %r of %s", kind, value, source)
        if spec and kind != "sha512":  # ObjectAttrs has no sha512 field
            found[kind] = value
    elif kind not in ("", "none"):
        log.debug("%s: %s checksum not verifiable by dlutils; ignored", source, kind)
    return replace(attrs, **found), spec


def _spec(attrs: ObjectAttrs) -> str | None:
    """The strongest checksum ``attrs`` know, as ``"algorithm:hex"``."""
    for name in ("sha256", "md5", "crc32c"):
        if getattr(attrs, name) is not None:
            return f"{name}:{getattr(attrs, name)}"
    return None


def _http_error(response: requests.Response, what: str) -> requests.HTTPError:
    kind = "Client" if response.status_code < 500 else "Server"
    message = f"{response.status_code} {kind} Error: {response.reason} for {what}"
    return requests.HTTPError(message, response=response)


def _head(
    remote: HttpRemote, source: str, retry: RetryPolicy, abort: Any, sleep: Any
) -> tuple[ObjectAttrs, str | None]:
    def once() -> Mapping[str, str]:
        response = remote.request("HEAD", stream=False)  # redirects: credentials stay home
        response.close()
        if response.status_code >= 400:
            raise _http_error(response, f"{source} (HEAD {remote.display})")
        return response.headers

    headers = call_with_retries(
        once, classify=remote.classify, retry=retry, abort=abort, sleep=sleep
    )
    return _attrs(source, headers)


def _remote(link: str, o: TransferOptions) -> HttpRemote:
    """The cluster's ``/v1/objects`` URL of ``link`` as a remote: the one place that knows
    how an AIStore object is opened (its HEAD, its bytes), for local files and stores."""
    url = ais_url(link, endpoint=o.endpoint)
    return HttpRemote(url, session=o.session, headers=o.headers, timeout=o.timeout)


def source_object(link: str, options: TransferOptions | None = None) -> SourceObject:
    """The ``ais://`` object ``link`` for the store path (:mod:`dlutils.stores`): attributes
    from the listing or one HEAD, its checksum (md5, crc32c, sha256) verified."""
    o = options if options is not None else TransferOptions()
    _, _, name = parse_ais(link, endpoint=o.endpoint)
    source = "ais://" + link.split("://", 1)[1]
    remote = _remote(link, o)
    specs: dict[str, str | None] = {}

    def stat() -> ObjectAttrs:
        attrs, specs["spec"] = _head(remote, source, o.retry_policy(), o.abort, o.sleep)
        return attrs

    def checksum(attrs: ObjectAttrs | None) -> str | None:
        return specs.get("spec") or (_spec(attrs) if attrs is not None else None)

    known = None if o.remote_attrs is None else replace(o.remote_attrs, source=source)
    return SourceObject(
        source, name.rsplit("/", 1)[-1], known, stat, lambda attrs: remote, checksum,
        needs_attrs=True,  # its size and checksum, as fetch_ais asks them first
    )  # fmt: skip


def _target(local_filepath: str | os.PathLike | None, name: str) -> str:
    if local_filepath is not None and not names_a_folder(local_filepath):
        return os.fspath(local_filepath)
    folder = "" if local_filepath is None else os.fspath(local_filepath)
    return join_inside(folder, name.rsplit("/", 1)[-1], what="name derived from the ais object")


def fetch_ais(
    link: str,
    local_filepath: str | os.PathLike | None = None,
    options: TransferOptions | None = None,
) -> Fetched:
    """Download an AIStore object and say whether it was downloaded or already current.

    The link is turned into the cluster's ``/v1/objects`` URL and fetched by
    :func:`~dlutils.sources.http.fetch_http` (``.part``, resume, retries, segments). A HEAD
    first learns the object's size, version and checksum: md5, crc32c, sha256 and sha512
    are verified before the file is placed; xxhash, AIStore's default, is not.

    Parameters
    ----------
    link : str
        ``ais://host[:port]/bucket/object`` (see :func:`parse_ais`).
    local_filepath : str or PathLike, optional
        A file path; or a folder (existing, or written with a trailing separator), or
        ``None`` for the current folder, in which the file is named after the last element
        of the object name (never after a ``Content-Disposition``).
    options : TransferOptions, optional
        The keywords below (default: their defaults); :func:`ais_download` takes them
        as keywords.
    cache : bool or "verified"
        Keep a file already there when it is the object: by its manifest record (which
        names the ``ais://`` link as its ``source``), else by size as pyvo does.
        ``"verified"`` keeps a file known good (the ``checksum`` given holds, or
        dlutils verified it when it placed it) with no request; see :doc:`/freshness`.
    remote_attrs : ObjectAttrs, optional
        The object's attributes from a listing (:func:`list_ais`). Compared with the
        record first: when they show the file current, no request is made; when they
        cannot tell (an xxhash bucket gives only size and version), one HEAD decides.
    checksum : str, optional
        Expected ``"algorithm:hex"``; replaces the cluster's checksum.
    endpoint : str, optional
        See :func:`parse_ais`.
    transport : {"requests", "curl", "auto"}
        What fetches the object's bytes, redirect to the target included (see
        :func:`~dlutils.sources.http.http_download`); a job's default is ``"auto"``.
        The HEAD, when one is needed, goes through requests.
    timeout, session, verbose, headers, expected_size, retries, backoff, progress
        As for :func:`~dlutils.sources.http.http_download`.
    limiter, abort, manifest, segments, segment_threshold, fsync, sleep
        As for :func:`~dlutils.sources.http.http_download`.

    Returns
    -------
    dlutils.transfer.Fetched

    Raises
    ------
    requests.HTTPError
        The cluster answered with an error (404 for a missing object or bucket).
    dlutils.DownloadError
        Bad input, a checksum or size mismatch (nothing placed), an incomplete download.
    """
    o = options if options is not None else TransferOptions()
    checksum, remote_attrs, verbose = o.checksum, o.remote_attrs, o.verbose
    abort, sleep, endpoint = o.abort, o.sleep, o.endpoint
    _, _, name = parse_ais(link, endpoint=endpoint)
    parse_checksum(checksum)  # bad input fails before any request
    cache = cache_mode(o.cache)
    if remote_attrs is not None and not isinstance(remote_attrs, ObjectAttrs):
        raise InvalidInputError(f"remote_attrs {remote_attrs!r} is not an ObjectAttrs")
    source = "ais://" + link.split("://", 1)[1]
    target = _target(local_filepath, name)
    policy = o.retry_policy()
    remote = _remote(link, o)
    with keeping(o, os.path.dirname(target), source) as (keeper, bar):
        if trusted(cache, target, checksum, keeper, listed=remote_attrs is not None):
            return hit(target, verbose, target, how="is known good")
        known = None if remote_attrs is None else replace(remote_attrs, source=source)
        spec = None
        if cache and os.path.isfile(target):
            if known is None:
                known, spec = _head(remote, source, policy, abort, sleep)
                current = is_current(target, known, keeper, source)
            else:
                current = is_current(target, known, keeper, source)
                recorded = keeper is not None and keeper.get(os.path.abspath(target)) is not None
                if not current and recorded:  # the listing cannot tell (xxhash): ask the cluster
                    known, spec = _head(remote, source, policy, abort, sleep)
                    current = is_current(target, known, keeper, source)
            if current and verify_cached(target, checksum):
                return hit(target, verbose, target)
        elif known is None:
            known, spec = _head(remote, source, policy, abort, sleep)
        fetched = fetch_http(
            remote.url,
            target,
            o.replace(
                cache=False,  # freshness was decided above, with the ais-* attributes
                verbose=False,
                checksum=checksum or spec or _spec(known),
                expected_size=known.size if o.expected_size is None else o.expected_size,
                progress=bar,
                manifest=keeper if keeper is not None else False,
                source=source,
                remote_attrs=None,
            ),
        )
        return fetched


@redacting  # no credential in what it raises, whichever library raised it
def ais_download(
    uri: str,
    local_filepath: str | os.PathLike | None = None,
    cache: bool | str = True,
    timeout: Any = None,
    session: requests.Session | None = None,
    verbose: bool = False,
    **options: Any,
) -> str:
    """Download ``ais://host[:port]/bucket/object`` and return the local file's path.

    See :func:`fetch_ais` for the parameters and errors.

    Examples
    --------
    >>> import hashlib, os, tempfile
    >>> from dlutils.localserver import LocalServer
    >>> from dlutils.sources.ais import ais_download
    >>> data = b"a,b\\n1,2\\n"
    >>> cksum = {"ais-checksum-type": "md5", "ais-checksum-value": hashlib.md5(data).hexdigest()}
    >>> with LocalServer() as cluster, tempfile.TemporaryDirectory() as folder:
    ...     cluster.put("v1/objects/tables/2024/t.csv", data, headers={**cksum, "ais-version": "1"})
    ...     path = ais_download(f"ais://127.0.0.1:{cluster.port}/tables/2024/t.csv", folder)
    ...     print(os.path.basename(path), open(path).read().splitlines())
    t.csv ['a,b', '1,2']
    """
    return place(uri, local_filepath, transfer_options(locals(), **options), fetch_ais)


def _entry_attrs(entry: Mapping[str, Any], source: str) -> ObjectAttrs:
    size = str(entry.get("size", ""))
    value = str(entry.get("checksum") or "").lower()
    kind = _BY_WIDTH.get(len(value)) if _HEX.match(value) else None
    return ObjectAttrs(
        size=int(size) if size.isdigit() else None,
        version=str(entry.get("version") or "") or None,
        source=source,
        **({kind: value} if kind else {}),
    )


def _page(remote: HttpRemote, message: dict[str, Any]) -> dict[str, Any]:
    response = remote.request(
        "GET",
        json={"action": "list", "value": message},
        headers={**remote.headers, "Accept": "application/json"},
        stream=False,
    )
    with response:
        if response.status_code >= 400:
            raise _http_error(response, f"listing {remote.display}")
        try:
            page = response.json()
        except ValueError as exc:
            raise DownloadError(f"listing {remote.display}: the answer is not JSON") from exc
    if not isinstance(page, dict):
        raise DownloadError(f"listing {remote.display}: expected a JSON object, got {page!r:.80}")
    return page


def list_ais(
    uri: str,
    prefix: str = "",
    suffix: str = "",
    *,
    session: requests.Session | None = None,
    timeout: Any = None,
    endpoint: str | None = None,
) -> Iterator[tuple[str, ObjectAttrs]]:
    """List an AIStore bucket, page by page, as ``(object name, ObjectAttrs)``.

    Parameters
    ----------
    uri : str
        ``ais://host[:port]/bucket``, or ``.../bucket/folder/``: what follows the bucket
        is a plain name prefix, put before ``prefix``.
    prefix, suffix : str
        Only names starting with ``uri``'s folder + ``prefix`` (the cluster filters) and
        ending with ``suffix`` (filtered here).
    session, timeout, endpoint
        As for :func:`fetch_ais`.

    Returns
    -------
    Iterator[tuple[str, ObjectAttrs]]
        Full object names, with size, version, checksum (md5, crc32c or sha256 only) and
        ``source`` (``ais://host[:port]/bucket/name``, as :func:`fetch_ais` records it).
        Each page is asked for when the previous one is used up.

    Examples
    --------
    >>> import json
    >>> from dlutils.localserver import LocalServer
    >>> from dlutils.sources.ais import list_ais
    >>> page = {"uuid": "x1", "continuation_token": "", "entries": [
    ...     {"name": "train/a.tgz", "size": "3", "version": "2", "checksum": "e3069283"}]}
    >>> with LocalServer({"v1/buckets/data": json.dumps(page).encode()}) as cluster:
    ...     bucket = f"ais://127.0.0.1:{cluster.port}/data/"
    ...     for name, attrs in list_ais(bucket + "train/"):
    ...         print(name, attrs.size, attrs.version, attrs.crc32c, attrs.source == bucket + name)
    train/a.tgz 3 2 e3069283 True
    """
    base, root, bucket, folder = _split(uri, endpoint)
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidInputError(f"prefix={prefix!r} / suffix={suffix!r}: use strings")
    url = f"{base}/v1/buckets/{quote(bucket, safe='')}?provider=ais"
    remote = HttpRemote(url, session=session, timeout=timeout)
    root += bucket + "/"

    def pages() -> Iterator[tuple[str, ObjectAttrs]]:
        message = {"props": "name,size,checksum,version", "prefix": folder + prefix,
                   "flags": "0", "pagesize": 0, "uuid": "", "continuation_token": ""}  # fmt: skip
        seen: set[str] = set()
        while True:
            page = call_with_retries(lambda m=message: _page(remote, m), classify=remote.classify)
            for entry in page.get("entries") or ():
                name = entry.get("name") if isinstance(entry, dict) else None
                flags = entry.get("flags") if isinstance(entry, dict) else None
                if isinstance(flags, int) and flags & _ENTRY_IS_DIR:
                    continue  # a virtual directory, not an object
                if isinstance(name, str) and name and name.endswith(suffix):
                    yield name, _entry_attrs(entry, root + name)
            token = page.get("continuation_token") or ""
            if not token:
                return
            if token in seen:
                raise DownloadError(f"listing {remote.display}: the cluster repeated page {token}")
            seen.add(token)
            message = {**message, "uuid": page.get("uuid") or "", "continuation_token": token}

    return pages()
