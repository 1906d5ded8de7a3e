"""What an answer says of its object (version, headers, codings); errors seen twice."""

from __future__ import annotations

from collections.abc import Mapping

from ..codings import split_codings
from ..errors import IncompleteDownloadError, OverlongBodyError, RemoteChangedError
from .protocols import Body


class _Final:
    """Marks an integrity failure seen again after a restart from zero: not retried."""


class _FinalRemoteChanged(RemoteChangedError, _Final):
    pass


class _FinalOverlong(OverlongBodyError, _Final):
    pass


class _FinalIncomplete(IncompleteDownloadError, _Final):
    pass


# What messages and job statuses show (``type(exc).__name__``) is the public error; the
# qualified name, which pickle uses, stays this module's own.
for _kind in (_FinalRemoteChanged, _FinalOverlong, _FinalIncomplete):
    _kind.__name__ = _kind.__mro__[1].__name__
del _kind


def _unasked_codings(body: Body) -> list[str]:
    """The codings a body was compressed with although the request did not ask for them."""
    return [] if body.encoding_asked else split_codings(body.encoding)


#: Headers that describe a compressed body's bytes, not the object they decode to.
_OBJECT_HEADERS = frozenset(
    {"etag", "last-modified", "content-type", "content-disposition", "date"}
    | {"x-amz-version-id", "x-goog-generation", "ais-version"}
)


def object_headers(body: Body) -> Mapping[str, str]:
    """What ``body``'s headers say of the object itself, for freshness records.

    A body compressed although it was not asked to be (see :class:`Body`) is stored
    decoded: its ``Content-Length``, ``Content-MD5`` or digests describe the compressed
    bytes, so only the headers naming the version are kept.
    """
    if not _unasked_codings(body):
        return body.headers
    return {k: v for k, v in body.headers.items() if k.lower() in _OBJECT_HEADERS}


def _is_etag(validator: str) -> bool:
    return validator.startswith(('"', "W/"))


def _same_version(body: Body, validator: str) -> bool:
    """Whether ``body`` may belong to the version ``validator`` names (False: it does not).

    Like is compared with like: an ETag with the answer's ETag, a date with its
    Last-Modified; an answer that carries neither cannot be told apart by validator.
    """
    if body.validator is None or body.validator == validator:
        return True
    if _is_etag(body.validator) == _is_etag(validator):
        return False
    # One is an ETag, the other a date (an answer without a strong ETag, say).
    headers = {k.lower(): v for k, v in body.headers.items()}
    theirs = headers.get("etag") if _is_etag(validator) else headers.get("last-modified")
    return theirs is None or theirs == validator
