"""The single-stream path: one body read into the ``.part``, decoded, checked as it comes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from ..checksums import new_hasher
from ..codings import CodingError, EndedEarly, decoder, known_codings
from ..errors import (
    ContentEncodingError,
    IncompleteDownloadError,
    OverlongBodyError,
    RemoteChangedError,
    SizeMismatchError,
)
from .checks import (
    _Final,
    _same_version,
    _unasked_codings,
    object_headers,
)
from .protocols import (
    Body,
)
from .retries import _quietly

log = logging.getLogger("dlutils")


class _Stream:
    """The single-stream side of :class:`~dlutils.transfer.engine._Transfer`."""

    def _consume(
        self,
        body: Body,
        offset: int,
        validator: str | None,
        pinned_total: int | None = None,
    ) -> int | None:
        s = self.s
        handle = self._watch(body)

        def restart() -> None:
            """Drop the .part and ask for the whole object, with no range to splice."""
            nonlocal body, handle, offset
            self._unwatch(handle)
            handle = None
            _quietly(body.close)
            self._truncate()
            body = self._open(0, None, None)
            handle = self._watch(body)
            offset = 0

        try:
            if body.status == 416 and offset:
                if body.total == offset and validator and pinned_total in (None, offset):
                    log.debug("%s was complete but not yet placed", s.part)
                    # Keep what the answer and the journal say of the object, for its record.
                    headers = dict(body.headers)
                    name = "ETag" if validator.startswith(('"', "W/")) else "Last-Modified"
                    headers.setdefault(name, validator)
                    self.headers, self.validator = headers, validator
                    return offset
                log.debug("%s cannot be resumed at byte %d; starting from zero", s.path, offset)
                restart()
            if body.status == 206 and offset:
                problem = self._range_problem(body, offset, None, pinned_total, validator)
                if problem is not None:
                    error = self._failure(RemoteChangedError, problem)
                    if isinstance(error, _Final):
                        raise error
                    log.warning("%s", error)
                    restart()
            if body.status == 206 and not offset:
                # A range where the whole object was asked for (or the restart's answer):
                # it must at least hold together, and it starts the object.
                problem = self._range_problem(body, 0, None, None, None)
                if problem is not None:
                    raise self._failure(RemoteChangedError, problem)
            elif body.status == 206:
                self.resumed_from = offset
                log.debug("resuming %s at byte %d", s.path, offset)
            elif body.status == 200:
                if offset:
                    log.debug(
                        "%s changed on the server; starting %s from zero", s.remote.display, s.path
                    )
                offset = 0
            else:
                raise RemoteChangedError(
                    f"{s.remote.display} answered a range request with bytes from "
                    f"{body.start} (status {body.status}) instead of {offset}"
                )
            if offset == 0 and os.fstat(self.fd).st_size:
                self._truncate()
            codings = _unasked_codings(body)
            if codings:
                return self._decode(body, codings)
            self.headers, self.validator = body.headers, body.validator
            total = body.total
            if total is not None and body.validator:
                self.known = (body.validator, total)
            elif self.known is not None and body.validator == self.known[0]:
                total = self.known[1]  # no length announced, but this version's is known
            if body.status == 200 and None not in (body.length, total) and body.length != total:
                raise self._failure(
                    RemoteChangedError,
                    f"announced a body of {body.length} bytes (Content-Length) for an object "
                    f"of {total} (Content-Range)",
                )
            self._check_size(total)
            s.progress.set_size(total)
            if (
                offset == 0
                and total is not None
                and total >= s.segment_threshold
                and s.segments > 1
                and body.accepts_ranges
                and body.validator
            ):
                self._unwatch(handle)
                handle = None
                return self._segmented(body, total)
            if (
                body.validator
                and (total is None or total > self.s.tunables.chunk_size)
                and not offset
            ):
                self._record({"validator": body.validator, "total": total})
            # A range may end before the object does; the rest is resumed.
            stop = body.end + 1 if body.status == 206 and body.end is not None else total
            self._stream_sequential(body, offset, total, stop)
            return total
        finally:
            self._unwatch(handle)
            _quietly(body.close)

    def _range_problem(
        self,
        body: Body,
        start: int,
        end: int | None,
        total: int | None,
        validator: str | None,
    ) -> str | None:
        """What is wrong with ``body`` as the answer to a range request, or ``None``.

        ``start``-``end`` is the range asked for; ``total`` and ``validator`` what the
        ``.part`` is pinned to (``None``: nothing to compare).
        """
        if body.status != 206:
            asked = f"{start}-{'' if end is None else end}"
            return f"answered status {body.status} to a request for bytes {asked}"
        shown = f"Content-Range: bytes {body.start}-{body.end}/{body.total or '*'}"
        if body.end is None:
            return "answered 206 without a usable Content-Range"
        if body.end < body.start or (body.total is not None and body.end >= body.total):
            return f"sent a Content-Range that contradicts itself ({shown})"
        if body.start != start:
            return f"sent bytes from {body.start} where bytes from {start} were asked ({shown})"
        if end is not None and body.end > end:
            return f"sent bytes up to {body.end} where bytes up to {end} were asked ({shown})"
        if total is not None and body.total != total:
            return (
                f"is now {body.total or 'of unknown size'} bytes, not the {total} its partial "
                f"download was begun with ({shown}): a range of another version"
            )
        if validator and not _same_version(body, validator):
            return (
                f"is now version {body.validator}, not {validator} its partial download was "
                "begun with: the server sent a range of another version (it ignored If-Range)"
            )
        if _unasked_codings(body):
            return f"sent a range compressed with Content-Encoding: {body.encoding}"
        span = body.end - body.start + 1
        if body.length is not None and body.length != span:
            return f"announced {body.length} bytes (Content-Length) for a range of {span} ({shown})"
        return None

    def _decode(self, body: Body, codings: list[str]) -> int:
        """Store the decoded bytes of a body compressed although it was not asked to be.

        Its sizes and digests describe the compressed bytes, so the size and checksum
        checks apply to what the decoding gives; it is never resumed nor segmented.
        """
        s = self.s
        unknown = [c for c in codings if c not in known_codings()]
        if unknown:
            raise ContentEncodingError(
                f"{s.remote.display} was sent compressed with Content-Encoding: "
                f"{body.encoding}, which was not asked for and cannot be decoded here "
                f"({', '.join(unknown)}); nothing was placed. Install "
                "'brotli' or 'zstandard' if it names br or zstd, or ask the server's operator"
            )
        log.debug("%s came compressed (%s) unasked; storing it decoded", s.remote.display, codings)
        self.headers, self.validator = object_headers(body), None
        s.progress.set_size(None)
        read = decoder(body.read, codings)

        def decoded(size: int) -> bytes:
            try:
                return read(size)
            except CodingError as exc:
                if isinstance(exc, EndedEarly):
                    raise self._failure(
                        IncompleteDownloadError, f"ended its {body.encoding} body early"
                    ) from exc
                raise ContentEncodingError(
                    f"{s.remote.display} sent a {body.encoding} body that cannot be decoded "
                    f"({exc}); nothing was placed"
                ) from exc

        return self._stream_sequential(body, 0, None, None, read=decoded)

    def _check_size(self, total: int | None) -> None:
        expected = self.s.expected_size
        if expected is not None and total is not None and total != expected:
            raise SizeMismatchError(
                f"{self.s.remote.display} is {total} bytes, but {expected} were expected"
            )

    def _stream_sequential(
        self,
        body: Body,
        offset: int,
        total: int | None,
        stop: int | None = None,
        *,
        read: Callable[[int], bytes] | None = None,
    ) -> int:
        """Write ``body`` at ``offset`` until it ends; returns the position reached.

        ``stop`` is where the body announced it ends (``total`` when not given). No byte
        past ``stop`` or the expected size is ever written: at most one byte more is read.
        """
        s = self.s
        read = read or body.read
        stop = total if stop is None else stop
        expected = s.expected_size
        limit = min((n for n in (stop, expected) if n is not None), default=None)
        if s.checksum is not None and self.hasher is None:
            self.hasher = new_hasher(s.checksum.algorithm)
            self.hashed = 0
        if self.hasher is not None and self.hashed < offset:
            self._hash_file(self.hashed, offset)
        position = offset
        while True:
            self._check_abort()
            want = (
                self.s.tunables.chunk_size
                if limit is None
                else max(1, min(self.s.tunables.chunk_size, limit - position + 1))
            )
            data = read(want)
            if not data:
                break
            if limit is not None and position + len(data) > limit:
                self._truncate()  # its bytes cannot be trusted: none is kept
                if stop is not None and position + len(data) > stop:
                    raise self._failure(
                        OverlongBodyError,
                        f"sent more than the {stop - (body.start if body.status == 206 else 0)} "
                        "bytes it announced",
                        received=position + len(data),
                        expected=stop,
                    )
                raise SizeMismatchError(
                    f"{s.remote.display} sent more than the {expected} bytes expected of it; "
                    "the download was stopped there and nothing was placed"
                )
            if s.limiter is not None:
                s.limiter.acquire(len(data), abort=s.abort)
            self._write(data, position)
            position += len(data)
            self.received += len(data)
            if self.hasher is not None:
                self.hasher.update(data)
                self.hashed = position
            s.progress.update(len(data))
        if stop is not None and position != stop:
            raise IncompleteDownloadError(
                f"{s.remote.display} ended after {position} of {stop} bytes; "
                f"{s.part!r} is kept for resume",
                received=position,
                expected=stop,
            )
        if total is not None and position != total:
            raise IncompleteDownloadError(
                f"{s.remote.display} sent bytes up to {position} of {total}; "
                f"{s.part!r} is kept for resume",
                received=position,
                expected=total,
            )
        return position
