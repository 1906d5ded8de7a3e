"""Google Cloud Storage source: ``gcs_download``, ``fetch_gcs``, ``list_gcs``, over the JSON API."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from calendar import timegm
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlencode

import requests

from ..checksums import b64_to_hex, parse_checksum
from ..errors import (
    DownloadError,
    IncompleteDownloadError,
    InvalidInputError,
    RemoteChangedError,
    UnsafePathError,
    UnsupportedSchemeError,
)
from ..freshness import Manifest, ObjectAttrs
from ..names import join_inside
from ..progress import Callback
from ..redaction import redacting
from ..retry import RetryPolicy
from ..transfer import (
    SEGMENT_THRESHOLD,
    Body,
    Fetched,
    TransferResult,
    call_with_retries,
    download,
    resume_point,
)
from ..transfer.options import TransferOptions, transfer_options
from ._common import (
    SourceObject,
    cache_mode,
    hit,
    is_current,
    keeping,
    names_a_folder,
    place,
    record,
    trusted,
    verify_cached,
    with_verified,
)
from .http import open_remote

__all__ = ["gcs_download", "fetch_gcs", "list_gcs", "GcsRemote", "gcs_endpoint"]

log = logging.getLogger("dlutils")

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
#: The only scope asked of application default credentials: dlutils never writes.
READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
_OBJECT_FIELDS = "name,size,generation,md5Hash,crc32c,etag,updated"
_LIST_FIELDS = f"items({_OBJECT_FIELDS}),nextPageToken"
#: After this many replacements of an object during its download, give up.
_MAX_REPLACED = 3
_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)")


def gcs_endpoint(environ: Mapping[str, str] | None = None) -> str:
    """The JSON API's base URL: ``STORAGE_EMULATOR_HOST`` when set, as Google's clients do.

    Parameters
    ----------
    environ : mapping, optional
        Where to look for ``STORAGE_EMULATOR_HOST``; ``os.environ`` by default. A host
        with no scheme gets ``http://``.

    Returns
    -------
    str

    Examples
    --------
    >>> from dlutils.sources.gcs import gcs_endpoint
    >>> gcs_endpoint({})
    'https://storage.googleapis.com'
    >>> gcs_endpoint({"STORAGE_EMULATOR_HOST": "localhost:9023"})
    'http://localhost:9023'
    """
    environ = os.environ if environ is None else environ
    host = environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if not host:
        return DEFAULT_ENDPOINT
    return host if "://" in host else f"http://{host}"


def _split(uri: Any, *, folder: bool = False) -> tuple[str, str]:
    """``(bucket, key)`` of ``gs://bucket/key``, the key taken literally (no decoding)."""
    example = "'gs://bucket/folder/'" if folder else "'gs://bucket/path/to/object.bin'"
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInputError(f"uri {uri!r} is not valid: expected a link such as {example}")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() != "gs":
        raise UnsupportedSchemeError(f"uri {uri!r} is not a gs:// link; write it as {example}")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidInputError(f"uri {uri!r} names no bucket; write it as {example}")
    if folder:
        return bucket, key + "/" if key and not key.endswith("/") else key
    if not key or key.endswith("/"):
        raise InvalidInputError(
            f"uri {uri!r} names a folder, not an object; write it as {example}"
            + (" (list a folder with list_gcs)" if key else "")
        )
    return bucket, key


def _object_url(endpoint: str, bucket: str, key: str) -> str:
    return f"{endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"


def _digest(value: Any, width: int) -> str | None:
    digest = b64_to_hex(value) if isinstance(value, str) and value else None
    return digest if digest is not None and len(digest) == width else None


def _http_date(rfc3339: Any) -> str | None:
    """GCS's ``updated`` (RFC 3339, UTC) as an HTTP date, the form ``last_modified`` keeps."""
    match = _RFC3339.match(rfc3339) if isinstance(rfc3339, str) else None
    if match is None:
        return None
    return formatdate(timegm(tuple(map(int, match.groups())) + (0, 0, 0)), usegmt=True)


def _attrs(bucket: str, name: str, item: Mapping[str, Any]) -> ObjectAttrs:
    """:class:`ObjectAttrs` from an object resource of the JSON API (metadata or listing)."""
    size = str(item.get("size", ""))
    return ObjectAttrs(
        size=int(size) if size.isdigit() else None,
        version=str(item["generation"]) if item.get("generation") else None,
        etag=item.get("etag") if isinstance(item.get("etag"), str) else None,
        md5=_digest(item.get("md5Hash"), 32),
        crc32c=_digest(item.get("crc32c"), 8),
        last_modified=_http_date(item.get("updated")),
        source=f"gs://{bucket}/{name}",
    )


class _GenerationChanged(DownloadError):
    """The pinned generation is no longer the live one (412). Not a RemoteChangedError on
    purpose: the engine retries those with backoff, and asking again for a generation that
    is gone cannot succeed; :func:`fetch_gcs` looks the object up again instead."""


class _Adc:
    """Application default credentials, looked up once per process and refreshed when stale."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.credentials: Any = None
        #: (endpoint, bucket) pairs that refused anonymous access: skip straight to credentials.
        self.private: set[tuple[str, str]] = set()

    def load(self, refused: requests.HTTPError, what: str) -> None:
        with self.lock:
            if self.credentials is not None:
                return
            try:
                import google.auth
                import google.auth.transport.requests
            except ImportError as exc:
                raise _need_credentials(refused, what, "google-auth is not installed") from exc
            try:
                credentials, _ = google.auth.default(scopes=[READ_ONLY_SCOPE])
                credentials.refresh(google.auth.transport.requests.Request())
            except Exception as exc:  # noqa: BLE001 - google-auth raises several kinds
                reason = f"no application default credentials could be used ({exc})"
                raise _need_credentials(refused, what, reason) from exc
            self.credentials = credentials

    def token(self) -> str:
        with self.lock:
            if not self.credentials.valid:
                import google.auth.transport.requests

                self.credentials.refresh(google.auth.transport.requests.Request())
            return self.credentials.token


_ADC = _Adc()


def _need_credentials(refused: requests.HTTPError, what: str, reason: str) -> requests.HTTPError:
    response = refused.response
    return requests.HTTPError(
        f"{response.status_code} {response.reason}: {what} refused anonymous access and {reason}. "
        "Pass token='<OAuth 2.0 access token>', or install google-auth and set up application "
        "default credentials (`gcloud auth application-default login`, or "
        "GOOGLE_APPLICATION_CREDENTIALS=key.json)",
        response=response,
    )


class _Client:
    """Requests to one bucket: endpoint, auth (token, anonymous, then ADC) and retries."""

    def __init__(
        self,
        bucket: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        timeout: Any = None,
        retry: RetryPolicy | None = None,
        abort: threading.Event | None = None,
        sleep: Callable[[float], Any] | None = None,
        transport: str = "requests",
    ):
        self.bucket, self.endpoint = bucket, gcs_endpoint()
        self.transport = transport
        self.headers = dict(headers or {})
        self.session, self.timeout = session, timeout
        self.retry, self.abort, self.sleep = retry or RetryPolicy(), abort, sleep
        self.token = token
        # A bearer given by the caller is used alone: no credentials are ever looked up.
        self.fixed = token is not None or any(k.lower() == "authorization" for k in self.headers)
        self.use_adc = not self.fixed and (self.endpoint, bucket) in _ADC.private
        self.use_adc = self.use_adc and _ADC.credentials is not None

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header for the next request (never logged, never in messages)."""
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        if self.use_adc:
            return {"Authorization": f"Bearer {_ADC.token()}"}
        return {}

    def remote(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """The :class:`~dlutils.transfer.Remote` of ``url`` over the client's transport."""
        merged = {**(headers or {}), **self.headers}
        return open_remote(
            url,
            transport=self.transport,
            session=self.session,
            headers=merged,
            timeout=self.timeout,
        )

    def call(self, func: Callable[[], Any], remote: Any, what: str) -> Any:
        """``func()`` with retries; after a 401/403 to an anonymous request, once more with ADC."""

        def classify(exc: BaseException) -> tuple[bool, float | None]:
            if isinstance(exc, IncompleteDownloadError):  # a JSON body cut short
                return True, None
            return remote.classify(exc)

        def attempt() -> Any:
            return call_with_retries(
                func, classify=classify, retry=self.retry, abort=self.abort, sleep=self.sleep
            )

        try:
            return attempt()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in (401, 403) or self.fixed or self.use_adc:
                raise
            _ADC.load(exc, what)
            log.debug("%s refused anonymous access; using application default credentials", what)
            self.use_adc = True
            _ADC.private.add((self.endpoint, self.bucket))
        return attempt()

    def get_json(self, url: str, what: str) -> dict[str, Any]:
        remote = self.remote(url)

        def once() -> dict[str, Any]:
            body = remote.open(headers=self.auth_headers())
            try:
                data = b"".join(iter(lambda: body.read(1 << 16), b""))
            finally:
                body.close()
            try:
                return json.loads(data)
            except ValueError as exc:
                raise DownloadError(f"{what} did not answer with JSON: {data[:200]!r}") from exc

        return self.call(once, remote, what)


class GcsRemote:
    """Opens one object's bytes, pinned to one generation (a :class:`dlutils.transfer.Remote`).

    Every request carries ``ifGenerationMatch=<generation>``: the server answers 412 once
    the object was replaced, whatever the bucket's versioning, so no range of another
    generation is ever mixed in. (``generation=`` would instead answer 404 in unversioned
    buckets, which reads as "missing", and silently serve a noncurrent version in versioned
    ones.) Since the pin is in the URL, the validator the engine records is the generation,
    and no ``If-Range`` is sent. Bytes are asked for as stored (``Accept-Encoding: gzip``:
    GCS only ever decompresses), so size, crc32c and md5 of the metadata apply to them.
    """

    def __init__(self, client: _Client, key: str, attrs: ObjectAttrs):
        self.client, self.attrs = client, attrs
        self.display = f"gs://{client.bucket}/{key}"
        url = _object_url(client.endpoint, client.bucket, key) + "?alt=media"
        if attrs.version:
            url += f"&ifGenerationMatch={quote(attrs.version, safe='')}"
        self.http = client.remote(url, {"Accept-Encoding": "gzip"})
        self.validator = f"gcs-generation:{attrs.version}" if attrs.version else None

    def open(self, start: int = 0, end: int | None = None, *, if_range: str | None = None) -> Body:
        if self.validator is None:  # not pinned: plain HTTP validators
            return self.http.open(start, end, if_range=if_range, headers=self.client.auth_headers())
        if if_range is not None and if_range != self.validator:
            start, end = 0, None  # a partial of another generation: send the object whole
        try:
            body = self.http.open(start, end, headers=self.client.auth_headers())
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 412:
                raise _GenerationChanged(
                    f"{self.display} is no longer generation {self.attrs.version}"
                ) from exc
            raise
        total = body.total
        if total is None and body.status == 200:
            total = self.attrs.size  # a stored-gzip body comes with no usable length
        return replace(body, validator=self.validator, accepts_ranges=True, total=total)

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        return self.http.classify(exc)


def _local_name(key: str) -> str:
    if any(segment in (".", "..") for segment in key.split("/")):
        raise UnsafePathError(
            f"object key {key!r} is not safe to name a local file: it has a '.' or '..' "
            "segment; pass local_filepath='name.ext' to choose the file"
        )
    return key.rsplit("/", 1)[-1]


@redacting  # no credential in what it raises, whichever library raised it
def gcs_download(
    uri: str | None = None,
    bucket_name: str | None = None,
    key: str | None = None,
    local_filepath: str | os.PathLike | None = None,
    cache: bool | str = True,
    timeout: Any = None,
    session: requests.Session | None = None,
    verbose: bool = False,
    *,
    token: str | None = None,
    checksum: str | None = None,
    expected_size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Callback | Callable[[int], Any] | None = None,
    limiter: Any = None,
    abort: threading.Event | None = None,
    manifest: Manifest | bool | None = None,
    segments: int = 32,
    segment_threshold: int = SEGMENT_THRESHOLD,
    fsync: bool = False,
    sleep: Callable[[float], Any] | None = None,
    transport: str = "requests",
) -> str:
    """Download a Google Cloud Storage object to a local file and return the file's path.

    Shaped like ``pyvo.utils.download.aws_download``. The bytes go to ``NAME.part``, are
    checked against the object's md5 (or crc32c) before they are placed, an interrupted
    download resumes, and every range is pinned to the generation seen at the start.

    Parameters
    ----------
    uri : str, optional
        ``gs://bucket/path/to/object``, the key taken literally.
    bucket_name, key : str, optional
        The bucket and the object's name, instead of ``uri`` (giving both is an error:
        ``gcs_download(uri, "out.bin")`` would otherwise pass the path as the bucket).
    local_filepath : str or PathLike, optional
        Where to write. ``None`` uses the key's base name in the current folder; an
        existing folder (or a path ending in ``/``) the base name inside it.
    cache : bool or "verified"
        Reuse a file already there when it is current: compared with the folder's manifest
        record (generation, md5, crc32c, size), else by size alone as pyvo does (a wrong
        size is replaced with a :class:`~dlutils.CacheMismatchWarning`). ``"verified"``
        keeps a file known good (the ``checksum`` given holds, or dlutils verified it
        when it placed it) with no request; see :doc:`/freshness`.
    timeout : float or (connect, read), optional
        Seconds a connection may stay silent; ``None`` means http's ``DEFAULT_TIMEOUT``.
    session : requests.Session, optional
        Session to use; by default a pooled one per thread.
    verbose : bool
        Show a progress bar and say when a cached file is used.
    token : str, optional
        An OAuth 2.0 access token, sent as ``Authorization: Bearer``. Without one, the
        object is asked for anonymously (public buckets) and, when that is refused, with
        application default credentials through google-auth, if installed.
    checksum, expected_size, retries, backoff, progress, limiter, abort, manifest
        As for :func:`dlutils.http_download`; ``checksum`` replaces the object's own.
    segments, segment_threshold, fsync, sleep, transport
        As for :func:`dlutils.http_download`: ``transport="auto"`` or ``"curl"`` reads
        the object's media link (and its metadata) over libcurl, the bearer token sent
        to the storage host only.

    Returns
    -------
    str
        ``local_filepath`` as given, or the path of the file derived from the key.

    Raises
    ------
    requests.HTTPError
        The server refused: 404 for a missing object, 401/403 when no credentials work.
    dlutils.DownloadError
        A failure of dlutils' own: :class:`~dlutils.ChecksumMismatchError` for corrupted
        bytes, :class:`~dlutils.RemoteChangedError` for an object replaced again and again
        while downloading, :class:`~dlutils.InvalidInputError` for bad arguments.

    Notes
    -----
    An object stored with ``Content-Encoding: gzip`` is saved as stored (compressed): its
    stored bytes are the ones the checksums describe.

    Examples
    --------
    >>> from dlutils.sources.gcs import gcs_download
    >>> gcs_download("gs://gcp-public-data-landsat/index.csv.gz", verbose=True)  # doctest: +SKIP
    'index.csv.gz'
    >>> gcs_download(bucket_name="my-bucket")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: gcs_download needs uri='gs://bucket/key', or both \
bucket_name= and key=; got uri=None, bucket_name='my-bucket', key=None
    """
    options = transfer_options(locals())  # before any other name is defined
    if uri is not None and (bucket_name is not None or key is not None):
        raise InvalidInputError(
            f"give uri={uri!r} or bucket_name= and key=, not both (got bucket_name="
            f"{bucket_name!r}, key={key!r}); the local path goes in local_filepath="
        )
    if uri is None:
        if not bucket_name or not key:
            raise InvalidInputError(
                "gcs_download needs uri='gs://bucket/key', or both bucket_name= and key=; "
                f"got uri={uri!r}, bucket_name={bucket_name!r}, key={key!r}"
            )
        uri = f"gs://{bucket_name}/{key}"
    return place(uri, local_filepath, options, fetch_gcs)


def fetch_gcs(
    uri: str,
    local_filepath: str | os.PathLike | None = None,
    options: TransferOptions | None = None,
) -> Fetched:
    """Like :func:`gcs_download`, but say whether the file was downloaded or was current.

    ``options`` holds :func:`gcs_download`'s keywords (default: its defaults).
    ``options.remote_attrs`` (what a :func:`list_gcs` listing said of the object)
    replaces the metadata request: an object it shows unchanged costs no request at all.
    ``options.headers`` are added to every request.

    Examples
    --------
    >>> from dlutils.sources.gcs import fetch_gcs
    >>> fetch_gcs("gs://my-bucket/train/", "data/")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: uri 'gs://my-bucket/train/' names a folder, not an \
object; write it as 'gs://bucket/path/to/object.bin' (list a folder with list_gcs)
    """
    o = options if options is not None else TransferOptions()
    verbose = o.verbose
    bucket, key = _split(uri)
    user_checksum = parse_checksum(o.checksum)  # bad input fails before any request
    cache = cache_mode(o.cache)
    source = f"gs://{bucket}/{key}"
    explicit = local_filepath is not None and not names_a_folder(local_filepath)
    if explicit:
        target = shown = os.fspath(local_filepath)  # type: ignore[arg-type]
        folder = os.path.dirname(target)
    else:
        folder = os.fspath(local_filepath) if local_filepath is not None else ""
        target = shown = join_inside(folder, _local_name(key), what="name derived from the key")
    policy = o.retry_policy()
    client = _client(bucket, o)
    attrs = None if o.remote_attrs is None else replace(o.remote_attrs, source=source)
    listed, replaced = attrs is not None, 0
    with keeping(o, folder, source) as (keeper, bar):
        if trusted(cache, target, user_checksum, keeper, listed=listed):
            return hit(target, verbose, shown, how="is known good")
        while True:
            if attrs is None:
                attrs = _metadata(client, key)
            if (
                cache
                and os.path.isfile(target)
                and is_current(target, attrs, keeper, source)
                and verify_cached(target, user_checksum)
            ):
                return hit(target, verbose, shown)
            if listed and not attrs.version:
                attrs, listed = None, False  # a listing that cannot pin: ask the object itself
                continue
            remote = GcsRemote(client, key, attrs)
            try:
                result = _transfer(
                    remote,
                    target,
                    keeper,
                    checksum=user_checksum or _checksum_of(attrs),
                    expected_size=o.expected_size if o.expected_size is not None else attrs.size,
                    progress=bar,
                    **o.engine(policy),
                )
            except _GenerationChanged as exc:
                replaced += 1
                if replaced >= _MAX_REPLACED:
                    raise RemoteChangedError(
                        f"{source} was replaced {replaced} times while it was being downloaded; "
                        "try again once it stops changing"
                    ) from exc
                log.debug("%s was replaced during its download; looking it up again", source)
                attrs, listed = None, False
                continue
            if result.outcome != "downloaded":
                return hit(target, False, shown)
            if keeper is not None:
                record(keeper, target, with_verified(attrs, result))
            return Fetched(shown, False, result.size, result.received)


def _client(bucket: str, o: TransferOptions) -> _Client:
    """The requests to ``bucket`` with ``o``'s token, headers, session and retries."""
    return _Client(
        bucket,
        token=o.token,
        headers=o.headers,
        session=o.session,
        timeout=o.timeout,
        retry=o.retry_policy(),
        abort=o.abort,
        sleep=o.sleep,
        transport=o.transport or "requests",
    )


def _metadata(client: _Client, key: str) -> ObjectAttrs:
    """The object's attributes (generation, size, md5, crc32c): one metadata request."""
    url = f"{_object_url(client.endpoint, client.bucket, key)}?fields={_OBJECT_FIELDS}"
    return _attrs(client.bucket, key, client.get_json(url, f"gs://{client.bucket}/{key}"))


def source_object(uri: str, options: TransferOptions | None = None) -> SourceObject:
    """The ``gs://`` object ``uri`` for the store path (:mod:`dlutils.stores`): its bytes
    through :class:`GcsRemote`, pinned to the generation listed or asked first."""
    o = options if options is not None else TransferOptions()
    bucket, key = _split(uri)
    source = f"gs://{bucket}/{key}"
    client = _client(bucket, o)
    known = None if o.remote_attrs is None else replace(o.remote_attrs, source=source)
    if known is not None and not known.version:
        known = None  # a listing that cannot pin: ask the object itself
    return SourceObject(
        source,
        key.rsplit("/", 1)[-1],
        known,
        stat=lambda: _metadata(client, key),
        remote=lambda attrs: GcsRemote(client, key, attrs or ObjectAttrs()),
        checksum=lambda attrs: _checksum_of(attrs) if attrs is not None else None,
        needs_attrs=True,
    )


def _checksum_of(attrs: ObjectAttrs) -> str | None:
    if attrs.md5:
        return f"md5:{attrs.md5}"
    return f"crc32c:{attrs.crc32c}" if attrs.crc32c else None


def _transfer(
    remote: GcsRemote, target: str, keeper: Manifest | None, **options: Any
) -> TransferResult:
    """Open the first body ourselves (so a 401/403 can turn to credentials), then the engine."""
    offset, validator = resume_point(target, keeper) or (0, None)
    start = offset if validator is not None and validator == remote.validator else 0
    first = remote.client.call(lambda: remote.open(start), remote.http, remote.display)
    return download(remote, target, first=first, journal=keeper, **options)


def list_gcs(
    uri: str,
    prefix: str = "",
    suffix: str = "",
    *,
    session: requests.Session | None = None,
    token: str | None = None,
    timeout: Any = None,
) -> Iterator[tuple[str, ObjectAttrs]]:
    """List a bucket's objects under a folder, page by page, as ``(name, ObjectAttrs)``.

    Parameters
    ----------
    uri : str
        ``gs://bucket`` or ``gs://bucket/some/folder/`` (a missing final ``/`` is added).
    prefix, suffix : str
        Keep names that start with the folder plus ``prefix`` and end with ``suffix``.
        Names ending in ``/`` (folder placeholders) are skipped.
    session, token, timeout
        As for :func:`gcs_download`.

    Returns
    -------
    iterator of (str, ObjectAttrs)
        Full object names with their size, generation (``version``), md5, crc32c, etag,
        last-modified date and ``source``; each page is requested when the previous one
        has been consumed.

    Raises
    ------
    requests.HTTPError
        The server refused (404 for a missing bucket).
    dlutils.InvalidInputError
        At once, for a malformed ``uri``, ``prefix`` or ``suffix``.

    Examples
    --------
    >>> from dlutils.sources.gcs import list_gcs
    >>> for name, attrs in list_gcs("gs://my-bucket/train/", suffix=".tar"):  # doctest: +SKIP
    ...     print(name, attrs.size)
    train/shard-000.tar 1048576
    >>> list_gcs("s3://my-bucket/")
    Traceback (most recent call last):
    ...
    dlutils.errors.UnsupportedSchemeError: uri 's3://my-bucket/' is not a gs:// link; write \
it as 'gs://bucket/folder/'
    """
    bucket, folder = _split(uri, folder=True)
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidInputError(f"prefix={prefix!r} and suffix={suffix!r} must be strings")
    client = _Client(bucket, token=token, session=session, timeout=timeout)
    return _pages(client, folder + prefix, suffix)


def _pages(client: _Client, prefix: str, suffix: str) -> Iterator[tuple[str, ObjectAttrs]]:
    bucket = client.bucket
    base = f"{client.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o?"
    what = f"gs://{bucket}/{prefix}"
    page_token: str | None = None
    while True:
        params = {"fields": _LIST_FIELDS, **({"prefix": prefix} if prefix else {})}
        if page_token:
            params["pageToken"] = page_token
        page = client.get_json(base + urlencode(params), what)
        for item in page.get("items") or ():
            name = item.get("name")
            if isinstance(name, str) and not name.endswith("/") and name.endswith(suffix):
                yield name, _attrs(bucket, name, item)
        following = page.get("nextPageToken")
        if not following:
            return
        if following == page_token:
            raise DownloadError(f"listing {what} returned the same page token twice: {following}")
        page_token = following
