"""Stream one object straight into an object store: verified, then made visible.

An http(s) link is opened here (conditional requests decide a re-run); any other link
(``s3://``, ``gs://``, ``ais://``, ``hf://``) by its own source, through the
:class:`~dlutils.transfer.Remote` that source builds for local files too
(:func:`dlutils.sources.source_object`), its freshness decided by comparing the
listing's or one HEAD's attributes with the store's record, as the local path compares
them with the folder's manifest. The bytes go from the response to the store as they
arrive (no local copy): into a multipart upload on S3, a hidden key elsewhere
(:mod:`dlutils.stores.objects`). Every claim of the server is checked as the engine does
for local files (a body never runs past its size, a range answer must belong to the
version the upload is pinned to, a given size and checksum must hold) before the object
appears under its final key; on any failure the upload is discarded, nothing is left
under the final key and no multipart upload stays open. Only an abort keeps the parts
sent, for a later run.

An S3 object of at least ``segment_threshold`` bytes, with no checksum to compute,
goes as parts over several connections instead (:mod:`dlutils.stores.parts`).
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..checksums import new_hasher, parse_checksum
from ..control import AbortEvent, opening, timed_out
from ..errors import (
    CacheMismatchWarning,
    ChecksumMismatchError,
    ContentEncodingError,
    DownloadAborted,
    DownloadTimeoutError,
    IncompleteDownloadError,
    InvalidInputError,
    OverlongBodyError,
    RemoteChangedError,
    SizeMismatchError,
    UnsafePathError,
)
from ..freshness import ObjectAttrs, attrs_from_headers, same_object
from ..names import check_name, name_from_url, redact
from ..progress import Callback, as_callback
from ..transfer import Body, Fetched
from ..transfer.checks import _same_version, _unasked_codings, object_headers
from ..transfer.options import SEGMENT_THRESHOLD, TransferOptions
from ..transfer.retries import call_with_retries
from . import objects
from .objects import WORK, StoreObject, Upload, open_object
from .parts import VersionChanged, send_in_parts, watching

__all__ = ["fetch_to_store"]

log = logging.getLogger("dlutils")

#: Bytes read from a response at a time.
CHUNK = 1 << 20
#: Restarts from zero one object may take when the server's answers do not hold together.
MAX_RESTARTS = 1
#: Digests a record can hold as verified, strongest first.
_RECORDED = ("sha256", "md5", "crc32c")


def fetch_to_store(link: str, url: str, options: TransferOptions | None = None) -> Fetched:
    """Fetch the object ``link`` into the store object ``url`` (a folder if it ends in /).

    ``link`` is an http(s), ``s3://``, ``gs://``, ``ais://`` or ``hf://`` link.
    ``options`` holds the source's keywords (default: their defaults; ``remote_attrs``
    from a listing spares the HEAD), ``storage_options`` the store's filesystem's. An
    object of at least ``segment_threshold`` bytes goes into S3 as parts over up to
    ``segments`` connections (at most :data:`dlutils.stores.parts.MAX_CONNECTIONS`)
    unless a checksum is given. An :class:`~dlutils.transfer.AbortEvent` as ``abort``
    stops it within a second, and its ``time_limit`` (a job's ``timeout=``) bounds it
    (:class:`~dlutils.DownloadTimeoutError`, the parts sent kept for a later run). The
    local engine's options (``manifest``, ``fsync``) have no meaning here. Returns the
    object's URL in :class:`~dlutils.transfer.Fetched`.
    """
    o = options if options is not None else TransferOptions()
    if not isinstance(o.abort, AbortEvent):
        return _fetch_to_store(link, url, o)
    o.abort.begin_attempt()
    try:
        return _fetch_to_store(link, url, o)
    finally:
        o.abort.end_attempt()


def _fetch_to_store(link: str, url: str, o: TransferOptions) -> Fetched:
    """What :func:`fetch_to_store` does, within one attempt."""
    cache, verbose, checksum, expected_size = o.cache, o.verbose, o.checksum, o.expected_size
    retries, progress, limiter, abort, sleep = o.retries, o.progress, o.limiter, o.abort, o.sleep
    remote_attrs, segments, segment_threshold = o.remote_attrs, o.segments, o.segment_threshold
    from ..limits import parse_timeout
    from ..sources import scheme_of, source_object
    from ..sources._common import VERIFIED, cache_mode
    from ..sources.http import open_remote

    mode = cache_mode(cache)
    expected = parse_checksum(checksum)
    web = scheme_of(link) in ("http", "https")
    src = None if web else source_object(link, o)  # the link's own source opens it
    url = _object_url(link, url, None if src is None else src.name)
    source = redact(link) if src is None else src.source
    remote: Any = None
    if src is None:
        remote = open_remote(
            link,
            transport=o.transport or "requests",
            session=o.session,
            headers=o.headers,
            timeout=parse_timeout(o.timeout),
            auth=o.auth,
        )
    obj = open_object(url, o.storage_options)
    policy = o.retry_policy()

    bar = as_callback(progress)

    def opening_one(start: int, end: int | None, **kw: Any) -> Body:
        with opening(abort):  # an abort interrupts a connection or a wait for headers
            return remote.open(start, end, **kw)

    def opened_range(start: int, end: int | None, validator: str | None) -> Body:
        return call_with_retries(
            lambda: opening_one(start, end, if_range=validator),
            classify=remote.classify,
            retry=policy,
            abort=abort,
            sleep=sleep,
        )

    def opened(start: int, validator: str | None, conditional: Mapping[str, str]) -> Body:
        extra = {"headers": conditional} if conditional else {}  # only HttpRemote takes them
        return call_with_retries(
            lambda: opening_one(start, None, if_range=validator, **extra),
            classify=remote.classify,
            retry=policy,
            abort=abort,
            sleep=sleep,
        )

    found = obj.record() if mode else None
    record = found[1] if found is not None else None
    known = None
    if src is not None:
        if found is not None and _current(src, found, expected, mode == VERIFIED, url):
            return _hit(url, found[0], verbose)
        known = src.known
        if known is None and (src.needs_attrs or found is not None):
            known = src.known = src.stat()
        remote = src.remote(known)
        if expected is None:
            expected = parse_checksum(src.checksum(known))
        if expected_size is None and src.needs_attrs and known is not None:
            expected_size = known.size  # asked just now, or pinned: as fetch_gcs/ais/hf check it
        found = None  # decided: fetch it
    if found is not None and record is not None and record.size in (None, found[0]):
        if _known_good(record, expected, remote_attrs, mode == VERIFIED):
            return _hit(url, found[0], verbose)
    conditional: dict[str, str] = {}
    if found is not None and record is not None and record.source == source:
        if expected is None or getattr(record, expected.algorithm, None) == expected.hexdigest:
            conditional = record.conditional_headers()
    elif found is not None and record is not None and record.source:
        warnings.warn(
            f"{redact(url)} was downloaded from {record.source}, not from {source}. "
            "Overwriting ...",
            CacheMismatchWarning,
            stacklevel=3,
        )
    first = opened(0, None, conditional)
    if first.status == 304 and found is not None:
        first.close()
        return _hit(url, found[0], verbose)
    if found is not None and record is None and first.status == 200 and expected is None:
        # an object dlutils did not store: compared by size alone, as pyvo does
        if first.total == found[0]:
            first.close()
            return _hit(url, found[0], verbose)
        warnings.warn(
            f"Found cached file but it has the wrong size. Overwriting ... ({redact(url)} has "
            f"{found[0]} bytes, {source} has {first.total})",
            CacheMismatchWarning,
            stacklevel=3,
        )
    if first.status in (304, 416):
        first.close()
        first = opened(0, None, {})
    offset, validator, upload = 0, None, None
    # An earlier run's upload exists only for an object bigger than one part: only then is
    # it looked for (a request to the store), and continued if it holds this version.
    if first.total is None or first.total > objects.PART_SIZE:
        first, offset, validator, upload = _continue(obj, first, opened)
    if upload is None:
        upload = obj.upload(ObjectAttrs())
    stream = _Stream(obj, remote, upload, first, source, expected, expected_size, bar, limiter)
    if src is not None:
        stream.known, stream.compared = known, src.compared
    stream.abort, stream.opened, stream.retries = abort, opened, retries
    stream.opened_range = opened_range
    stream.connections, stream.segment_threshold = segments, segment_threshold
    started = time.monotonic()
    try:
        size = stream.run(offset, validator)
    except BaseException as exc:
        if isinstance(exc, (DownloadAborted, DownloadTimeoutError, KeyboardInterrupt)):
            stream.upload.keep()  # the parts sent stay for a later run
        else:
            stream.upload.discard()
        raise
    finally:
        if progress is None:
            bar.close()
    log.info("placed %s (%d bytes in %.2f s)", redact(url), size, time.monotonic() - started)
    return Fetched(url, False, size, stream.received)


def _continue(
    obj: StoreObject, first: Body, opened: Callable[..., Body]
) -> tuple[Body, int, str | None, Upload | None]:
    """``(body, offset, validator, upload)``: an earlier run's upload continued, if it can be.

    It can when it is pinned to the version ``first`` shows (same validator, same size)
    and the server answers for the rest of that version (``Range`` + ``If-Range``): then
    ``first`` is closed (its body unread) and the range answer returned. Otherwise the old
    upload is aborted and ``first`` returned as it is.
    """
    pending = obj.pending()
    if pending is None:
        return first, 0, None, None
    pinned = pending.pinned
    kept = (pinned.etag or pinned.last_modified) if pinned is not None else None
    same = (
        kept is not None
        and first.validator is not None
        and _same_version(first, kept)
        and (pinned is None or None in (pinned.size, first.total) or pinned.size == first.total)
    )
    beyond = first.total is not None and pending.offset >= first.total
    if not same or not pending.offset or beyond:
        pending.discard()  # another version, or nothing to keep: start over
        return first, 0, None, None
    first.close()
    body = opened(pending.offset, kept, {})
    if body.status == 206 and body.start == pending.offset and _same_version(body, kept):
        log.info("%s: resuming the upload at byte %d", redact(obj.url), pending.offset)
        return body, pending.offset, kept, pending
    body.close()  # the object changed in between: start over
    pending.discard()
    return opened(0, None, {}), 0, None, None


def _current(
    src: Any, found: tuple[int, ObjectAttrs | None], expected: Any, verified_mode: bool, url: str
) -> bool:
    """Whether the stored object is ``src``'s current version, as the local path decides
    (:func:`dlutils.sources._common.is_current`): the store's record against the listing's
    attributes (or one request to the source for them); a given checksum must be recorded
    as verified; an object dlutils did not store is compared by size. Sets ``src.known``."""
    size, record = found
    if record is not None and record.size not in (None, size):
        return False  # replaced by hand since it was recorded
    if record is not None and _known_good(record, expected, None, verified_mode):
        return True
    if record is not None and expected is not None:
        return False  # the given checksum is not the one recorded as verified
    known = src.known
    if known is None:
        known = src.known = src.stat()
    if record is not None:
        if same_object(src.compared(record), src.compared(known)):
            return True
        if record.source and record.source != src.source:
            warnings.warn(
                f"{redact(url)} was downloaded from {record.source}, not from {src.source}. "
                "Overwriting ...",
                CacheMismatchWarning,
                stacklevel=4,
            )
        return False
    if expected is None and known.size in (None, size):
        return True  # an object dlutils did not store: compared by size alone, as pyvo does
    warnings.warn(
        f"Found cached file but it has the wrong size. Overwriting ... ({redact(url)} has "
        f"{size} bytes, {src.source} has {known.size})",
        CacheMismatchWarning,
        stacklevel=4,
    )
    return False


def _object_url(link: str, url: str, name: str | None = None) -> str:
    """The object's URL: ``url``, or ``url`` + the object's name when ``url`` ends in ``/``
    (``name``, else the link's last path element)."""
    if url.endswith("/"):
        name = name or name_from_url(link)
        if not name:
            raise InvalidInputError(
                f"cannot derive an object name from {redact(link)!r}: give the object's URL "
                f"itself, such as {url + 'data.bin'!r}"
            )
        url = url + check_name(name, what="name derived from the url")
    head, _, path = url.partition("://")
    if WORK in path.split("/"):
        raise UnsafePathError(
            f"{redact(url)!r} is inside {WORK!r}, where dlutils keeps its records"
        )
    if not posixpath.basename(path):
        raise InvalidInputError(f"{redact(url)!r} names no object")
    return url


def _known_good(
    record: ObjectAttrs, expected: Any, listed: ObjectAttrs | None, verified_mode: bool
) -> bool:
    """Whether the stored object is current with no request to the source."""
    if expected is not None:
        # a given checksum: the record must hold it, as checked when the object was stored
        if record.verified != expected.algorithm:
            return False
        return getattr(record, expected.algorithm, None) == expected.hexdigest
    if listed is not None:
        return same_object(record, listed)
    return verified_mode and record.verified is not None


def _hit(url: str, size: int, verbose: bool) -> Fetched:
    if verbose:
        print(f"Found cached file {redact(url)}.")
    log.info("%s is current, skipped", redact(url))
    return Fetched(url, True, size, 0)


class _Stream:
    """One object's bytes from the server to an upload, every answer checked."""

    abort: threading.Event | None
    opened: Callable[[int, str | None, Mapping[str, str]], Body]
    opened_range: Callable[[int, int | None, str | None], Body]

    def __init__(
        self,
        obj: StoreObject,
        remote: Any,
        upload: Upload,
        first: Body,
        source: str,
        expected: Any,
        expected_size: int | None,
        progress: Callback,
        limiter: Any,
    ):
        self.obj, self.remote, self.upload, self.body = obj, remote, upload, first
        self.source, self.expected, self.expected_size = source, expected, expected_size
        self.progress, self.limiter = progress, limiter
        self.received = 0
        self.restarts = 0
        #: What the source's listing or HEAD said (merged into the record), and what of
        #: the attributes the source compares (S3: not the date).
        self.known: ObjectAttrs | None = None
        self.compared: Callable[[ObjectAttrs], ObjectAttrs] | None = None
        self.retries = 5
        self.connections = 1
        self.segment_threshold = SEGMENT_THRESHOLD

    def _begin(self, body: Body) -> tuple[ObjectAttrs, str | None]:
        """The record a new upload is pinned to, from the first answer."""
        if _unasked_codings(body):
            body.close()
            raise ContentEncodingError(
                f"{self.source} came compressed ({body.encoding}) although it was not asked "
                "to be; compressed bytes are never stored as the object"
            )
        attrs = attrs_from_headers(self.source, object_headers(body))
        if self.compared is not None:
            attrs = self.compared(attrs)
        known = self.known
        if known is not None and known.size in (None, body.total):
            # what the listing or HEAD said is recorded (as the local path records it), so
            # that the next listing compares with it; an ETag that moved since (no sha256
            # naming the content) means another version: then the answer's own win
            base = self.compared(known) if self.compared else known
            moved = None not in (base.etag, attrs.etag) and base.etag != attrs.etag
            attrs = attrs.merged(base) if moved and base.sha256 is None else base.merged(attrs)
        if self.expected is not None and self.expected.algorithm in _RECORDED:
            attrs = replace(
                attrs,
                **{self.expected.algorithm: self.expected.hexdigest},
                verified=self.expected.algorithm,
            )
        else:
            attrs = replace(attrs, verified=None)
        if body.total is not None:
            attrs = replace(attrs, size=body.total)
        self.upload.start(attrs)
        return attrs, body.validator

    def _restart(self, why: str) -> tuple[Body, ObjectAttrs, str | None]:
        if self.restarts >= MAX_RESTARTS:
            raise RemoteChangedError(f"{self.source}: {why}, again after a restart from zero")
        self.restarts += 1
        self.known = None  # what was listed is of another version
        log.warning("%s: %s; restarting from zero", self.source, why)
        self.upload.discard()
        self.upload = self.obj.upload(ObjectAttrs())
        body = self.opened(0, None, {})
        attrs, validator = self._begin(body)
        return body, attrs, validator

    def _check_abort(self) -> None:
        timed_out(self.abort, self.source)  # the attempt's time limit ran out: not retried
        if self.abort is not None and self.abort.is_set():
            raise DownloadAborted(f"{self.source}: aborted")

    def run(self, offset: int, validator: str | None) -> int:
        body = self.body
        if offset:
            attrs = self.upload.pinned or ObjectAttrs()
            if _unasked_codings(body):
                body.close()
                raise ContentEncodingError(f"{self.source}: a range came compressed")
        else:
            attrs, validator = self._begin(body)
        hasher = new_hasher(self.expected.algorithm) if self.expected is not None else None
        if hasher is not None and offset:
            self._hash_prefix(hasher, offset, validator)
        position = offset
        total = body.total if body.total is not None else attrs.size
        self.progress.set_size(total)
        retries_left = self.retries
        in_order = True
        if hasher is None and self._in_parts(body, total, validator):
            assert total is not None and validator is not None
            try:
                self.received += send_in_parts(
                    self.upload, body, offset, total, validator,
                    opened=self.opened_range, source=self.source, connections=self.connections,
                    retries=self.retries, progress=self.progress, limiter=self.limiter,
                    abort=self.abort, classify=self.remote.classify,
                )  # fmt: skip
                position, in_order = total, False
            except VersionChanged as exc:
                body, attrs, validator = self._restart(str(exc))
                total, position = body.total, 0
        while in_order:
            limit = total if total is not None else self.expected_size
            if body.status == 206 and body.end is not None:
                limit = body.end + 1
            try:
                while True:
                    self._check_abort()
                    with watching(self.abort, body):
                        chunk = body.read(CHUNK)
                    if not chunk:
                        break
                    if limit is not None and position + len(chunk) > limit:
                        raise OverlongBodyError(
                            f"{self.source} sent more than its {limit} bytes; nothing was kept",
                            received=position + len(chunk),
                            expected=limit,
                        )
                    if self.limiter is not None:
                        self.limiter.acquire(len(chunk), abort=self.abort)
                    self.upload.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    position += len(chunk)
                    self.received += len(chunk)
                    self.progress.update(len(chunk))
            except (OverlongBodyError, DownloadAborted):
                raise
            except Exception as exc:  # noqa: BLE001 - a read that failed: resume it below
                self._check_abort()  # interrupted by an abort or the time limit: say so
                short = isinstance(exc, IncompleteDownloadError)  # the body ended early
                if not short and not self.remote.classify(exc)[0]:
                    raise
                log.info("%s: the body ended early at byte %d (%s)", self.source, position, exc)
            finally:
                body.close()
            if total is None or position >= total:
                break
            # short: ask for the rest of the same version, or start over once
            retries_left -= 1
            if retries_left < 0 or validator is None:
                raise IncompleteDownloadError(
                    f"{self.source}: {position} of {total} bytes arrived; nothing was stored",
                    received=position,
                    expected=total,
                )
            self._check_abort()
            body = self.opened(position, validator, {})
            if body.status == 206 and body.start == position and _same_version(body, validator):
                if body.total not in (None, total):
                    body.close()
                    raise RemoteChangedError(
                        f"{self.source} changed size while it was read ({total} -> {body.total})"
                    )
                continue
            body.close()
            body, attrs, validator = self._restart("the object changed while it was read")
            total = body.total
            position = 0
            hasher = new_hasher(self.expected.algorithm) if self.expected is not None else None
        if self.expected_size is not None and position != self.expected_size:
            raise SizeMismatchError(
                f"{self.source} has {position} bytes, not the expected {self.expected_size}; "
                "nothing was stored"
            )
        if hasher is not None:
            actual = hasher.hexdigest()
            if actual != self.expected.hexdigest:
                raise ChecksumMismatchError(
                    f"{self.source}: {self.expected.algorithm} is {actual}, not the expected "
                    f"{self.expected.hexdigest}; nothing was stored",
                    algorithm=self.expected.algorithm,
                    expected=self.expected.hexdigest,
                    actual=actual,
                )
        self.upload.commit(replace(attrs, size=position))
        return position

    def _in_parts(self, body: Body, total: int | None, validator: str | None) -> bool:
        """Whether the rest of the object comes as parts over several connections."""
        part = getattr(self.upload, "part_size", 0)
        return bool(
            self.upload.parallel
            and self.connections > 1
            and total is not None
            and validator is not None
            and body.accepts_ranges
            and body.status in (200, 206)
            and total >= max(self.segment_threshold, 2 * part)
            and body.start % part == 0
        )

    def _hash_prefix(self, hasher: Any, offset: int, validator: str | None) -> None:
        """Hash the first ``offset`` bytes again from the source: stored parts cannot be read
        back before the upload completes, and the checksum covers the whole object."""
        body = self.opened(0, validator, {})
        try:
            if body.status not in (200, 206) or body.start != 0:
                raise RemoteChangedError(f"{self.source}: cannot read its first bytes again")
            left = offset
            while left:
                self._check_abort()
                chunk = body.read(min(CHUNK, left))
                if not chunk:
                    raise IncompleteDownloadError(
                        f"{self.source}: its first {offset} bytes could not be read again",
                        received=offset - left,
                        expected=offset,
                    )
                hasher.update(chunk)
                left -= len(chunk)
        finally:
            body.close()
