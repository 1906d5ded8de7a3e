"""Amazon S3 source: ``aws_download`` (pyvo-compatible), ``fetch_s3`` and ``list_s3``."""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import timezone
from email.utils import format_datetime
from typing import Any

from .._version import __version__
from ..checksums import parse_checksum
from ..errors import IncompleteDownloadError, InvalidInputError, RemoteChangedError, UnsafePathError
from ..freshness import Manifest, ObjectAttrs, attrs_from_headers
from ..limits import parse_timeout
from ..names import join_inside, redact
from ..progress import Callback
from ..redaction import redacting
from ..retry import FATAL_STATUS, RETRYABLE_STATUS, RetryPolicy, parse_retry_after
from ..transfer import SEGMENT_THRESHOLD, Body, Fetched, call_with_retries, download
from ..transfer.options import TransferOptions, transfer_options
from ._common import (
    VERIFIED,
    SourceObject,
    cache_mode,
    hit,
    interrupt,
    is_current,
    keeping,
    names_a_folder,
    place,
    record,
    trusted,
    verify_cached,
    with_verified,
)
from .http import _Interruptible

__all__ = ["aws_download", "fetch_s3", "list_s3", "split_s3_uri", "S3Remote", "DEFAULT_TIMEOUT"]

log = logging.getLogger("dlutils")

#: (connect, read) seconds used when ``timeout=None``.
DEFAULT_TIMEOUT = (30.0, 120.0)
#: Connections a cached client keeps: a job's workers times a download's segments share it.
MAX_POOL_CONNECTIONS = 64

_INSTALL_HINT = 'the s3:// source needs boto3: pip install "dlutils-download[s3]"'
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
#: S3 error codes retried whatever their status (RequestTimeout is a 400).
_RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded"}
    | {"InternalError", "ServiceUnavailable", "RequestThrottled", "TooManyRequestsException"}
)
_FATAL_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "AccessDenied", "InvalidAccessKeyId"}
    | {"SignatureDoesNotMatch", "InvalidBucketName", "404", "403", "401"}
)


def _boto() -> tuple[Any, Any]:
    """``(boto3, botocore)``, imported on first use, with the install hint when missing."""
    try:
        import boto3
        import botocore
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return boto3, botocore


def split_s3_uri(uri: Any, *, need_key: bool = True) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://bucket/key`` link; the key is taken literally.

    Examples
    --------
    >>> from dlutils.sources.aws import split_s3_uri
    >>> split_s3_uri("s3://my-bucket/data/2024/table #1.csv")
    ('my-bucket', 'data/2024/table #1.csv')
    >>> split_s3_uri("s3://my-bucket", need_key=False)
    ('my-bucket', '')
    >>> split_s3_uri("https://example.org/a.csv")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: uri 'https://example.org/a.csv' is not an s3:// link; \
give one such as 's3://my-bucket/data/table.csv'
    """
    example = "'s3://my-bucket/data/table.csv'" if need_key else "'s3://my-bucket/folder/'"
    if not isinstance(uri, str) or uri[:5].lower() != "s3://":
        shown = repr(redact(uri)) if isinstance(uri, str) else f"of type {type(uri).__name__}"
        raise InvalidInputError(f"uri {shown} is not an s3:// link; give one such as {example}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise InvalidInputError(f"uri {uri!r} names no bucket; give one such as {example}")
    if need_key and not key:
        raise InvalidInputError(
            f"uri {uri!r} names a bucket, not an object; give one such as {example}"
        )
    return bucket, key


def _timeouts(timeout: Any) -> tuple[float, float]:
    value = parse_timeout(timeout)  # the same reading as every source's
    if value is None:
        return DEFAULT_TIMEOUT
    return value if isinstance(value, tuple) else (value, value)


class _Clients:
    """boto3 clients cached per (session or profile, endpoint, region, signing, timeouts).

    Clients are thread-safe; sessions are not, so clients are made under one lock.
    Also remembers the buckets whose anonymous access was refused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._own: dict[tuple, Any] = {}
        self._sessions: dict[str | None, Any] = {}
        self.private: set[tuple] = set()

    def get(self, session: Any, profile: str | None, options: tuple, signed: bool) -> Any:
        key = (profile, *options, signed)
        with self._lock:
            table = self._given.setdefault(session, {}) if session is not None else self._own
            client = table.get(key)
            if client is None:
                if session is None:
                    if profile not in self._sessions:
                        boto3, _ = _boto()
                        self._sessions[profile] = boto3.session.Session(profile_name=profile)
                    session = self._sessions[profile]
                client = table[key] = self._create(session, options, signed)
        return client

    def _create(self, session: Any, options: tuple, signed: bool) -> Any:
        _, botocore = _boto()
        endpoint_url, region, (connect, read) = options[0], options[1], options[-1]
        settings: dict[str, Any] = {
            "connect_timeout": connect,
            "read_timeout": read,
            "retries": {"total_max_attempts": 1},  # dlutils retries, with resume
            "max_pool_connections": MAX_POOL_CONNECTIONS,
            "user_agent_extra": f"dlutils/{__version__}",
        }
        if "response_checksum_validation" in botocore.config.Config.OPTION_DEFAULTS:
            # botocore would check a full-object CRC only on the last read, after every byte
            # is in the .part, where a failure cannot discard it: checksum= is the way.
            settings["response_checksum_validation"] = "when_required"
        if not signed:
            settings["signature_version"] = botocore.UNSIGNED
        extra = {"endpoint_url": endpoint_url} if endpoint_url else {}
        if region:
            extra["region_name"] = region
        client = session.client("s3", config=botocore.config.Config(**settings), **extra)
        _interruptible(client)
        return client


def _interruptible(client: Any) -> None:
    """Let an abort reach ``client``'s requests still connecting or waiting for headers.

    botocore's connections are urllib3's under other names: the pool classes of the
    client's session get connections that show their sockets to the engine, as the
    http source's do (:class:`dlutils.sources.http._Interruptible`). Without them an
    abort waits for a stalled server's read timeout. A botocore laid out otherwise is
    left as it is.
    """
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    pools = getattr(session, "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict):
        return
    for scheme, pool in list(pools.items()):  # the dict the pool managers share, in place
        connection = getattr(pool, "ConnectionCls", None)
        if connection is None or issubclass(connection, _Interruptible):
            continue
        connection = type(connection.__name__, (_Interruptible, connection), {})
        pools[scheme] = type(pool.__name__, (pool,), {"ConnectionCls": connection})


_CLIENTS = _Clients()


class _Access:
    """How one bucket is reached: a given session, a profile, or anonymous then credentials.

    Anonymous access comes first (public buckets need no account, as in pyvo); a 401 or
    403 retries with the default credential chain, and the bucket is remembered as
    private so later requests go signed at once.
    """

    def __init__(self, bucket: str, *, session, aws_profile, endpoint_url, region, timeout):
        boto3, botocore = _boto()
        if session is not None and not isinstance(session, boto3.session.Session):
            raise InvalidInputError(
                f"session of type {type(session).__name__} is not a boto3.session.Session; "
                "pass boto3.session.Session(...), aws_profile='name', or neither for anonymous "
                "access falling back to your default AWS credentials"
            )
        if aws_profile is not None and not isinstance(aws_profile, str):
            raise InvalidInputError(f"aws_profile={aws_profile!r} is not valid: use a name")
        self.bucket = bucket
        self.session = session
        self.profile = None if session is not None else aws_profile
        env = (os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"))
        self.options = (endpoint_url, region, env, _timeouts(timeout))
        self.signed = session is not None or aws_profile is not None
        self._errors = botocore.exceptions
        #: ``(how, worked, error)`` of each access tried, for ``verbose`` (pyvo's report).
        self.attempts: collections.deque[tuple[str, bool, str | None]] = collections.deque(maxlen=4)

    def _how(self, signed: bool) -> str:
        if self.session is not None:
            return "Access with session"
        if self.profile is not None:
            return f"Access with profile ({self.profile})"
        return "Access with system credentials" if signed else "Anonymous access"

    def _private_key(self) -> tuple:
        return (*self.options[:3], self.bucket)

    def call(self, operation: str, **params: Any) -> Any:
        signed = self.signed or self._private_key() in _CLIENTS.private
        client = _CLIENTS.get(self.session, self.profile, self.options, signed)
        try:
            result = getattr(client, operation)(**params)
        except Exception as exc:
            self.attempts.append((self._how(signed), False, str(exc)))
            if not isinstance(exc, self._errors.ClientError):
                raise
            if signed or _status(exc) not in (401, 403):
                raise
            refused = exc
        else:
            self.attempts.append((self._how(signed), True, None))
            return result
        log.debug("anonymous access to s3://%s was refused; using AWS credentials", self.bucket)
        client = _CLIENTS.get(None, None, self.options, True)
        try:
            result = getattr(client, operation)(**params)
        except self._errors.NoCredentialsError as exc:
            self.attempts.append((self._how(True), False, str(exc)))
            if hasattr(refused, "add_note"):
                refused.add_note("No AWS credentials were found to retry it with.")
            raise refused from None
        except self._errors.ClientError as exc:
            self.attempts.append((self._how(True), False, str(exc)))
            _CLIENTS.private.add(self._private_key())
            raise
        self.attempts.append((self._how(True), True, None))
        _CLIENTS.private.add(self._private_key())
        return result

    def report(self) -> None:
        """Print, as pyvo's ``verbose`` does, each access tried since the last report."""
        for how, worked, error in self.attempts:
            print(f"{how}: {worked}. Message: {error}")
        self.attempts.clear()


def _status(exc: Any) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _named(exc: BaseException, display: str) -> BaseException:
    """Put the object's ``s3://`` name in a botocore error's message (it has none)."""
    text = str(exc)
    if display not in text:
        exc.args = (f"{text} (for {display})",)
    return exc


def _classify(exc: BaseException) -> tuple[bool, float | None]:
    """Whether a boto3 error is worth a retry, and the ``Retry-After`` it carried."""
    _, botocore = _boto()
    errors = botocore.exceptions
    if isinstance(exc, errors.ClientError):
        status, code = _status(exc), _code(exc)
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        retry_after = parse_retry_after(headers.get("retry-after"))
        if code in _FATAL_CODES:
            return False, None
        if code in _RETRY_CODES:
            return True, retry_after
        if status in FATAL_STATUS:
            return False, None
        return status in RETRYABLE_STATUS or status >= 500, retry_after
    if isinstance(exc, errors.SSLError):
        return False, None
    retryable = (errors.ConnectionError, errors.HTTPClientError, errors.IncompleteReadError)
    return isinstance(exc, (*retryable, ConnectionError, TimeoutError)), None


class S3Remote:
    """Opens one S3 object for the transfer engine (see :class:`dlutils.transfer.Remote`).

    Ranged requests carry ``IfMatch`` with the ETag they are pinned to, and
    ``VersionId`` when ``version`` is known. Credentials as in :func:`aws_download`.
    """

    def __init__(
        self,
        uri: str,
        *,
        version: str | None = None,
        session: Any = None,
        aws_profile: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout: Any = None,
    ):
        self.bucket, self.key = split_s3_uri(uri)
        self.version = version
        self.display = f"s3://{self.bucket}/{self.key}"
        #: The object's stored (size, Content-Encoding), asked by HEAD only when an answer
        #: comes encoded (see :meth:`as_stored`).
        self.stored: tuple[int | None, str | None] | None = None
        self.access = _Access(
            self.bucket,
            session=session,
            aws_profile=aws_profile,
            endpoint_url=endpoint_url,
            region=region,
            timeout=timeout,
        )

    def open(self, start: int = 0, end: int | None = None, *, if_range: str | None = None) -> Body:
        _, botocore = _boto()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.version:
            params["VersionId"] = self.version
        ranged = bool(start) or end is not None
        if ranged:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
            if if_range:
                params["IfMatch"] = if_range
        try:
            response = self.access.call("get_object", **params)
        except botocore.exceptions.ClientError as exc:
            status = _status(exc)
            if status == 416 or _code(exc) == "InvalidRange":
                total = _unsatisfiable_total(exc)
                return Body(416, start, total, None, True, {}, lambda n: b"", _noop)
            if status == 412 and ranged and if_range:
                if end is None:  # a resume: the whole new object, as If-Range would give
                    log.debug("%s changed since its .part was begun", self.display)
                    return self.open(0)
                raise RemoteChangedError(
                    f"{self.display} changed while it was being downloaded in pieces "
                    f"(its ETag is no longer {if_range})"
                ) from None
            raise _named(exc, self.display) from None
        meta = response["ResponseMetadata"]
        status, headers = meta["HTTPStatusCode"], meta.get("HTTPHeaders", {})
        first, last, total = 0, None, response.get("ContentLength")
        match = _CONTENT_RANGE.match(response.get("ContentRange") or "")
        if status == 206 and match:
            first, last = int(match.group(1)), int(match.group(2))
            total = int(match.group(3)) if match.group(3) != "*" else None
        stream = response["Body"]
        return self.as_stored(
            Body(
                status=status,
                start=first,
                end=last,
                total=total,
                validator=response.get("ETag") or None,
                accepts_ranges=True,
                headers=headers,
                read=_reader(stream, self.display),
                close=stream.close,
                interrupt=lambda: interrupt(getattr(stream, "_raw_stream", None), stream.close),
                length=response.get("ContentLength"),
                encoding=(response.get("ContentEncoding") or "").strip().lower() or None,
            )
        )

    def as_stored(self, body: Body) -> Body:
        """Mark an encoded answer that is the object's bytes as stored, as S3 keeps them.

        An object uploaded with ``ContentEncoding=gzip`` is served with that header and
        its stored (compressed) bytes: those are the object, as boto3, ``aws s3 cp`` and
        s5cmd keep them, and as its size and ETag describe them. A body encoded on the
        way (a proxy compressing despite ``Accept-Encoding: identity``) is not: its
        object is stored without that encoding, or with another size. Only an encoded
        answer costs a HEAD to tell the two apart; the engine decodes (or refuses) what
        is not the stored object.
        """
        if body.encoding in (None, "identity") or body.encoding_asked or body.status >= 300:
            return body
        if self.stored is None:
            self.stored = self._stored()
        size, encoding = self.stored
        if encoding == body.encoding and size is not None and body.total == size:
            return replace(body, encoding_asked=True)
        return body

    def _stored(self) -> tuple[int | None, str | None]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.version:
            params["VersionId"] = self.version
        head = self.access.call("head_object", **params)
        encoding = (head.get("ContentEncoding") or "").strip().lower() or None
        return head.get("ContentLength"), encoding

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        return _classify(exc)


def _unsatisfiable_total(exc: Any) -> int | None:
    """The object's size from a 416: S3's ``ActualObjectSize``, or ``Content-Range: */N``."""
    size = str(exc.response.get("Error", {}).get("ActualObjectSize", ""))
    if size.isdigit():
        return int(size)
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    total = str(headers.get("content-range", "")).rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _noop() -> None:
    pass


def _reader(stream: Any, display: str) -> Callable[[int], bytes]:
    _, botocore = _boto()
    errors = botocore.exceptions

    def read(size: int) -> bytes:
        try:
            return stream.read(size)
        except errors.ReadTimeoutError:
            raise  # retryable as it is
        except (errors.BotoCoreError, OSError, ValueError) as exc:
            raise IncompleteDownloadError(f"{display}: the connection broke: {exc}") from exc

    return read


def _target(key: str, local_filepath: Any) -> str:
    """The path to write (and return); a name derived from the key is checked first."""
    if local_filepath is not None and not names_a_folder(local_filepath):
        return os.fspath(local_filepath)
    source = key.replace("\\", "/")
    bad = [s for s in source.split("/") if s in (".", "..")]
    if bad:
        raise UnsafePathError(
            f"key {key!r} is not safe to name a file after: it has a {bad[0]!r} segment; "
            "pass local_filepath='name.ext' to choose the file's name"
        )
    name = key.rsplit("/", 1)[-1]
    if not name:
        raise InvalidInputError(
            f"key {key!r} ends with '/', so it names a folder, not a file; "
            "pass local_filepath='name.ext' to choose the file's name"
        )
    folder = os.fspath(local_filepath) if local_filepath is not None else ""
    return join_inside(folder, name, what="name derived from the key")


def _s3_attrs(attrs: ObjectAttrs) -> ObjectAttrs:
    """What is compared and recorded for S3: size, version, ETag, digests (not the date)."""
    return replace(attrs, last_modified=None)


@redacting  # no credential in what it raises, whichever library raised it
def aws_download(
    uri: str | None = None,
    bucket_name: str | None = None,
    key: str | None = None,
    local_filepath: str | os.PathLike | None = None,
    cache: bool | str = False,
    timeout: Any = None,
    aws_profile: str | None = None,
    session: Any = None,
    verbose: bool = False,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
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
    transport: str | None = None,
) -> str:
    """Download an S3 object to a local file and return the file's path.

    A drop-in for ``pyvo.utils.download.aws_download``, over the engine every source
    shares: bytes go to ``NAME.part`` and are verified before they are placed, an
    interrupted download resumes pinned to the object's ETag, large objects come in
    parallel ranged GETs, and failures are retried with backoff.

    Parameters
    ----------
    uri : str, optional
        ``s3://bucket/key``; the key is taken literally (no percent-decoding).
    bucket_name, key : str, optional
        Instead of ``uri``: both are needed. When ``uri`` is given they are ignored,
        as in pyvo.
    local_filepath : str or PathLike, optional
        Where to write. ``None`` uses the key's base name in the current folder
        (returned relative, as pyvo does); an existing folder, or a path ending in
        ``/``, means that name inside it. A key with a ``.`` or ``..`` segment is
        refused then (:class:`~dlutils.UnsafePathError`).
    cache : bool
        ``False`` by default, as in pyvo. Reuse a file already there when it is current:
        with a record of an earlier
        download (the folder's manifest), version id, ETag (the md5 of a single-part
        object) and size decide; without one (or when the record and S3 share nothing
        but the size), the sizes are compared as pyvo does, and a file of the wrong
        size is replaced with a :class:`~dlutils.CacheMismatchWarning`. ``False``
        always downloads. ``"verified"`` keeps a file known good with no request (the
        ``checksum`` given holds, or dlutils verified it when it placed it), as for
        :func:`~dlutils.sources.http.http_download`.
    timeout : float or (connect, read), optional
        Seconds a connection may stay silent; ``None`` means ``DEFAULT_TIMEOUT``.
    aws_profile : str, optional
        A profile of ``~/.aws/credentials`` or ``~/.aws/config`` to sign with.
    session : boto3.session.Session, optional
        A session to sign with; it wins over ``aws_profile``. With neither, access is
        anonymous first (public buckets), then, on 401 or 403, through the default
        credential chain (environment, files, instance role).
    verbose : bool
        Print the bucket and key, which access worked (``Anonymous access``,
        ``Access with profile (NAME)``, ``Access with session``, ``Access with system
        credentials``: ``True``/``False`` and the error, as pyvo prints them), show a
        progress bar and say when a cached file is used.
    endpoint_url, region : str, optional
        Another S3 endpoint (else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` as
        boto3 reads them) and region.
    checksum : str, optional
        Expected ``"sha256:<hex>"``, ``"md5:<hex>"`` or ``"crc32c:<hex>"``.
    expected_size : int, optional
        Size the object must have.
    retries, backoff : int, float
        Retry policy (see :class:`dlutils.retry.RetryPolicy`); boto3's own retries are off.
    progress, limiter, abort, segments, segment_threshold, fsync, sleep
        Passed to :func:`dlutils.transfer.download`.
    manifest : Manifest, bool or None
        The record of downloads used for caching and resume; ``None`` keeps one in
        the file's folder, ``False`` none.
    transport : {None, "auto", "curl", "requests"}
        ``None`` (the default here) reads the object with botocore's ``get_object``.
        Otherwise botocore signs a ``GET`` link locally (no request; a plain link for
        anonymous access) and that transport fetches it (see :ref:`transports`):
        faster on many small objects, and a job's default (``"auto"``). The same
        checks hold (ETag-pinned ranges, version, size, checksum), and S3's refusals
        are raised as the same ``ClientError``.

    Returns
    -------
    str
        ``local_filepath`` as given, or the derived path.

    Raises
    ------
    botocore.exceptions.ClientError
        From S3, as pyvo's users expect: a missing key (404, ``NoSuchKey``), access
        denied (403). The message names the object.
    ImportError
        boto3 is not installed (``pip install "dlutils-download[s3]"``).
    dlutils.DownloadError
        A failure of dlutils' own (:class:`~dlutils.InvalidInputError` for bad
        arguments, incomplete after all retries, checksum mismatch...).

    Examples
    --------
    >>> from dlutils.sources.aws import aws_download
    >>> aws_download(bucket_name="my-bucket")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: aws_download needs uri='s3://bucket/key', or both \
bucket_name= and key=; got bucket_name='my-bucket' and no key
    >>> aws_download("s3://noaa-ghcn-pds/csv/by_year/1763.csv")  # doctest: +SKIP
    '1763.csv'
    """
    options = transfer_options(locals())
    return place(_uri_of(uri, bucket_name, key), local_filepath, options, fetch_s3)


def _uri_of(uri: Any, bucket_name: Any, key: Any) -> str:
    if uri is not None:
        bucket, path = split_s3_uri(uri)
        if (bucket_name is not None and bucket_name != bucket) or (key is not None and key != path):
            log.debug("aws_download: uri %r given, so bucket_name and key are ignored", uri)
        return uri
    if bucket_name and key and isinstance(bucket_name, str) and isinstance(key, str):
        return f"s3://{bucket_name}/{key}"
    given = [f"{n}={v!r}" for n, v in (("bucket_name", bucket_name), ("key", key)) if v is not None]
    missing = [f"no {n}" for n, v in (("bucket_name", bucket_name), ("key", key)) if v is None]
    raise InvalidInputError(
        "aws_download needs uri='s3://bucket/key', or both bucket_name= and key=; "
        f"got {' and '.join(given + missing) if given else 'none of them'}"
    )


def fetch_s3(
    uri: str,
    local_filepath: str | os.PathLike | None = None,
    options: TransferOptions | None = None,
) -> Fetched:
    """Like :func:`aws_download` for an ``s3://`` link, but say whether it was downloaded.

    ``options`` holds :func:`aws_download`'s keywords (default: its defaults, but
    ``cache=True``). ``options.remote_attrs`` (from :func:`list_s3`) replaces the HEAD
    request: a local copy current by those attributes costs no request at all.
    ``options.headers`` (HTTP headers a job passes to every source) are ignored.
    """
    o = options if options is not None else TransferOptions()
    cache, verbose, abort, sleep = o.cache, o.verbose, o.abort, o.sleep
    remote_attrs = o.remote_attrs
    bucket, key = split_s3_uri(uri)
    if remote_attrs is not None and not isinstance(remote_attrs, ObjectAttrs):
        raise InvalidInputError(f"remote_attrs={remote_attrs!r} is not valid: use ObjectAttrs")
    source = f"s3://{bucket}/{key}"
    checksum = parse_checksum(o.checksum)
    mode = cache_mode(cache)
    policy = o.retry_policy()
    target = _target(key, local_filepath)  # an unsafe name fails before any request
    s3, fetched = _remotes(source, o)
    with keeping(o, os.path.dirname(target), source) as (keeper, bar):
        if trusted(mode, target, checksum, keeper, listed=remote_attrs is not None):
            return hit(target, verbose, target, how="is known good")
        remote = None if remote_attrs is None else _s3_attrs(replace(remote_attrs, source=source))
        if verbose:
            print(f"bucket: {bucket}, key: {key}")
        if remote is None and (verbose or (cache and os.path.isfile(target))):
            try:  # verbose: ask first, as pyvo does, to say which access works
                remote = _s3_attrs(_head(s3, policy, abort, sleep))
            finally:
                if verbose:
                    s3.access.report()
        if cache and os.path.isfile(target) and remote is not None:
            if is_current(target, remote, keeper, source) and verify_cached(target, checksum):
                return hit(target, verbose, target)
        s3.version = remote.version if remote is not None else None
        result = download(
            fetched,
            target,
            checksum=checksum,
            expected_size=o.expected_size,
            progress=bar,
            journal=keeper,
            **o.engine(policy),
        )
        if result.outcome != "downloaded":
            return hit(target, False, target)
        if keeper is not None:
            attrs = _s3_attrs(attrs_from_headers(source, result.headers))
            if attrs.etag is None and remote is not None and remote.size == result.size:
                attrs = attrs.merged(remote)  # a .part found complete: no response headers
            record(
                keeper, target, with_verified(attrs, result, path=target, confirm=mode == VERIFIED)
            )
        return Fetched(target, False, result.size, result.received)


def _remotes(source: str, o: TransferOptions) -> tuple[S3Remote, Any]:
    """The object's :class:`S3Remote` (for HEAD), and the remote its bytes come through:
    itself (boto3), or its presigned link over ``o.transport``. The one place that
    knows how an S3 object is opened, for local files and for stores alike."""
    s3 = S3Remote(
        source,
        session=o.session,
        aws_profile=o.aws_profile,
        endpoint_url=o.endpoint_url,
        region=o.region,
        timeout=o.timeout,
    )
    if o.transport is None:
        return s3, s3
    from .s3link import S3LinkRemote

    return s3, S3LinkRemote(s3, o.transport)


def source_object(uri: str, options: TransferOptions | None = None) -> SourceObject:
    """The ``s3://`` object ``uri`` for the store path (:mod:`dlutils.stores`).

    Its attributes come from ``options.remote_attrs`` (a listing) or one HEAD; its bytes
    from :func:`_remotes`, pinned to the listed version when there is one.
    """
    o = options if options is not None else TransferOptions()
    bucket, key = split_s3_uri(uri)
    source = f"s3://{bucket}/{key}"
    s3, fetched = _remotes(source, o)

    def stat() -> ObjectAttrs:
        return _s3_attrs(_head(s3, o.retry_policy(), o.abort, o.sleep))

    def remote(attrs: ObjectAttrs | None) -> Any:
        s3.version = attrs.version if attrs is not None else None
        return fetched

    known = None if o.remote_attrs is None else replace(o.remote_attrs, source=source)
    return SourceObject(source, key.rsplit("/", 1)[-1], known, stat, remote, compared=_s3_attrs)


def _head(s3: S3Remote, policy: RetryPolicy, abort: Any, sleep: Any) -> ObjectAttrs:
    _, botocore = _boto()
    try:
        response = call_with_retries(
            lambda: s3.access.call("head_object", Bucket=s3.bucket, Key=s3.key),
            classify=_classify,
            retry=policy,
            abort=abort,
            sleep=sleep,
        )
    except botocore.exceptions.ClientError as exc:
        raise _named(exc, s3.display) from None
    return attrs_from_headers(s3.display, response["ResponseMetadata"].get("HTTPHeaders", {}))


def list_s3(
    uri: str,
    prefix: str = "",
    suffix: str = "",
    *,
    session: Any = None,
    aws_profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    timeout: Any = None,
    retries: int = 5,
    backoff: float = 0.5,
    abort: threading.Event | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> Iterator[tuple[str, ObjectAttrs]]:
    """List the objects of a bucket folder, page by page, as the listing arrives.

    Parameters
    ----------
    uri : str
        ``s3://bucket`` or ``s3://bucket/some/folder/`` (a path not ending in ``/``
        still names a folder: ``s3://bucket/train`` lists ``train/...``).
    prefix, suffix : str
        Keys listed start with ``<folder><prefix>`` and end with ``suffix``. Keys
        ending in ``/`` (folder markers) are skipped.
    session, aws_profile, endpoint_url, region, timeout
        As for :func:`aws_download`: anonymous first, then credentials.
    retries, backoff, abort, sleep
        Each page request is retried as downloads are.

    Returns
    -------
    Iterator of (str, ObjectAttrs)
        The full key, and its size, ETag, md5 (from the ETag of a single-part object;
        not a digest for SSE-KMS objects, which a listing cannot tell apart),
        last-modified date and ``source`` (``s3://bucket/key``). Arguments are
        checked at once; requests start with the iteration.

    Raises
    ------
    botocore.exceptions.ClientError
        ``NoSuchBucket``, ``AccessDenied``...

    Examples
    --------
    >>> from dlutils.sources.aws import list_s3
    >>> for key, attrs in list_s3("s3://noaa-ghcn-pds/csv/", suffix=".csv"):  # doctest: +SKIP
    ...     print(key, attrs.size)
    """
    bucket, folder = split_s3_uri(uri, need_key=False)
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidInputError(f"prefix={prefix!r}, suffix={suffix!r}: use strings")
    if folder and not folder.endswith("/"):
        folder += "/"
    access = _Access(
        bucket,
        session=session,
        aws_profile=aws_profile,
        endpoint_url=endpoint_url,
        region=region,
        timeout=timeout,
    )
    policy = RetryPolicy(retries=retries, backoff=backoff)
    return _pages(access, folder + prefix, suffix, policy, abort, sleep)


def _pages(
    access: _Access, prefix: str, suffix: str, policy: RetryPolicy, abort: Any, sleep: Any
) -> Iterator[tuple[str, ObjectAttrs]]:
    _, botocore = _boto()
    bucket = access.bucket
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        try:
            page = call_with_retries(
                lambda: access.call("list_objects_v2", **params),
                classify=_classify,
                retry=policy,
                abort=abort,
                sleep=sleep,
            )
        except botocore.exceptions.ClientError as exc:
            raise _named(exc, f"s3://{bucket}/{prefix}") from None
        for item in page.get("Contents", ()):
            key = item["Key"]
            if key.endswith("/") or not key.endswith(suffix):
                continue
            yield key, _listed_attrs(bucket, item)
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        params["ContinuationToken"] = token


def _listed_attrs(bucket: str, item: Mapping[str, Any]) -> ObjectAttrs:
    """An entry of ``list_objects_v2`` read as :func:`attrs_from_headers` reads a HEAD."""
    headers = {"Content-Length": str(item.get("Size", "")), "ETag": item.get("ETag") or ""}
    when = item.get("LastModified")
    if when is not None and hasattr(when, "astimezone"):
        headers["Last-Modified"] = format_datetime(when.astimezone(timezone.utc), usegmt=True)
    return attrs_from_headers(f"s3://{bucket}/{item['Key']}", headers)
