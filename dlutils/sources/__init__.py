"""Sources: one module per scheme, each a pure download function over the transfer engine.

:func:`fetch` sends a link to the source of its scheme and :func:`list_objects`
lists a bucket; a Job calls nothing else. Source modules are imported on first use,
so ``import dlutils`` never imports boto3.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from ..destinations import is_store
from ..errors import InvalidInputError, UnsupportedSchemeError
from ..freshness import ObjectAttrs
from ..names import redact
from ..transfer import Fetched, TransferOptions

__all__ = [
    "fetch",
    "list_objects",
    "scheme_of",
    "check_link",
    "require",
    "SCHEMES",
    "BUCKET_SCHEMES",
]

#: scheme -> (module, fetch function, lister or None)
_SOURCES: dict[str, tuple[str, str, str | None]] = {
    "http": ("http", "fetch_http", None),
    "https": ("http", "fetch_http", None),
    "s3": ("aws", "fetch_s3", "list_s3"),
    "gs": ("gcs", "fetch_gcs", "list_gcs"),
    "ais": ("ais", "fetch_ais", "list_ais"),
    "hf": ("hf", "fetch_hf", "list_hf"),
}

#: Options only one scheme understands; the others ignore them, so one job can mix
#: ``https://`` and ``s3://`` links and still pass ``aws_profile=``. ``transport`` is
#: every source's: S3, GCS, AIS and Hub objects are all fetched over http.
SOURCE_OPTIONS: dict[str, frozenset[str]] = {
    "s3": frozenset({"aws_profile", "endpoint_url", "region"}),
    "gs": frozenset({"token"}),
    "hf": frozenset({"token"}),
}

#: scheme -> (source module, its function importing the libraries that scheme needs):
#: a job checks them once, before it starts, not once per object.
_REQUIRES: dict[str, tuple[str, str]] = {"s3": ("aws", "_boto")}

#: Schemes dlutils reads.
SCHEMES = tuple(_SOURCES)
#: Schemes whose buckets can be listed (backend jobs).
BUCKET_SCHEMES = tuple(scheme for scheme, (_, _, lister) in _SOURCES.items() if lister)


def scheme_of(link: str) -> str:
    """The lowercase scheme of ``link`` (``""`` when it has none)."""
    head, sep, _ = link.partition("://")
    return head.lower() if sep else ""


def check_link(link: Any) -> str:
    """Return ``link`` if dlutils can read it, else raise an error naming it."""
    if not isinstance(link, str) or not link.strip():
        raise InvalidInputError(
            f"link {link!r} is not valid: expected a link such as 'https://example.org/data.csv'"
        )
    scheme = scheme_of(link)
    if scheme not in _SOURCES:
        raise UnsupportedSchemeError(
            f"link {redact(link)!r} has {'scheme ' + repr(scheme) if scheme else 'no scheme'}; "
            f"dlutils reads {', '.join(s + '://' for s in SCHEMES)} links"
        )
    return link


def _function(scheme: str, which: int) -> Any:
    module_name, *names = _SOURCES[scheme]
    name = names[which - 1]
    if name is None:
        raise UnsupportedSchemeError(
            f"{scheme}:// links name single files, not buckets: list a bucket with "
            f"{', '.join(s + '://' for s in BUCKET_SCHEMES)}"
        )
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, name)


def _for_scheme(scheme: str, options: dict[str, Any]) -> dict[str, Any]:
    own = SOURCE_OPTIONS.get(scheme, frozenset())
    foreign = {key for s, keys in SOURCE_OPTIONS.items() if s != scheme for key in keys} - own
    return {key: value for key, value in options.items() if key not in foreign}


def require(scheme: str) -> None:
    """Import what links of ``scheme`` need; an :class:`ImportError` with the install hint.

    Examples
    --------
    >>> from dlutils.sources import require
    >>> require("https")  # nothing beyond requests
    """
    if scheme in _REQUIRES:
        module_name, function = _REQUIRES[scheme]
        getattr(importlib.import_module(f".{module_name}", __name__), function)()


def fetch(link: str, path: str, options: TransferOptions | None = None) -> Fetched:
    """Download ``link`` to the file ``path`` with the source of its scheme.

    Each source reads the ``options`` it understands (see :data:`SOURCE_OPTIONS`).
    """
    scheme = scheme_of(check_link(link))
    if is_store(path):  # streamed into an object store (see dlutils.stores)
        from ..stores import fetch_to_store

        return fetch_to_store(link, path, options)
    return _function(scheme, 1)(link, path, options)


#: scheme -> the module whose ``source_object`` opens its objects for the store path.
_STORE_SOURCES = {"s3": "aws", "gs": "gcs", "ais": "ais", "hf": "hf.download"}


def source_object(link: str, options: TransferOptions | None = None) -> Any:
    """The :class:`~dlutils.sources._common.SourceObject` of a non-http(s) ``link``: what
    :mod:`dlutils.stores` streams into a store, opened by the link's own source."""
    scheme = scheme_of(check_link(link))
    module = importlib.import_module(f".{_STORE_SOURCES[scheme]}", __name__)
    return module.source_object(link, options)


def list_objects(
    uri: str, prefix: str = "", suffix: str = "", **options: Any
) -> Iterator[tuple[str, ObjectAttrs]]:
    """List a bucket (``s3://``, ``gs://``, ``ais://``) under ``prefix``, ending in ``suffix``.

    Yields ``(object name, ObjectAttrs)`` page by page, as the listing arrives.
    """
    scheme = scheme_of(check_link(uri))
    return _function(scheme, 2)(uri, prefix, suffix, **_for_scheme(scheme, options))
