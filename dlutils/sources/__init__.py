"""Sources: one module per scheme, each a pure download function over the transfer engine.

:func:`fetch` sends a link to the source of its scheme; a Job calls nothing else.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError, UnsupportedSchemeError
from ..names import redact
from ..transfer import Fetched

__all__ = ["fetch", "scheme_of", "SCHEMES", "check_link"]

#: Schemes dlutils reads.
SCHEMES = ("http", "https")


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
    if scheme not in SCHEMES:
        raise UnsupportedSchemeError(
            f"link {redact(link)!r} has {'scheme ' + repr(scheme) if scheme else 'no scheme'}; "
            f"dlutils reads {', '.join(s + '://' for s in SCHEMES)} links"
        )
    return link


def fetch(link: str, path: str, **options: Any) -> Fetched:
    """Download ``link`` to the file ``path`` with the source of its scheme."""
    scheme = scheme_of(check_link(link))
    if scheme in ("http", "https"):
        from .http import fetch_http

        return fetch_http(link, path, **options)
    raise UnsupportedSchemeError(f"no source reads {scheme!r} links")  # pragma: no cover
