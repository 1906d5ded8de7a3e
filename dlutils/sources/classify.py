"""What a source given to :func:`dlutils.download` is, decided once, in one place.

:func:`classify_source` reads a link, a template, a bucket, a hub link, a list or a
dict of links into one :class:`Source`; :func:`dlutils.download` and the command line
act on its ``kind`` and never ask again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import templates
from ..errors import InvalidInputError
from . import BUCKET_SCHEMES, scheme_of

if TYPE_CHECKING:
    from .hf import HfRef

__all__ = ["Source", "classify_source", "KINDS"]

#: The kinds of source, named as the Job constructors (and the AIStore request types).
KINDS = ("single", "multi", "range", "backend", "hf")

_LITERAL_BRACES = (
    "a link whose braces are meant literally can be written percent-encoded "
    "('%7B' for '{', '%7D' for '}')"
)


@dataclass(frozen=True)
class Source:
    """A source, classified.

    Attributes
    ----------
    kind : str
        ``"single"`` (one link), ``"multi"`` (a list or dict of links), ``"range"`` (a
        brace template), ``"backend"`` (a bucket or a folder of one) or ``"hf"`` (a
        HuggingFace repository, or a file of one).
    scheme : str
        The lowercase scheme of the link, template or bucket (``""`` for ``"multi"``).
    text : str or None
        The link, template or bucket as given (``None`` for ``"multi"``).
    objects : tuple or dict or None
        ``"multi"`` only: the links (a tuple), or a dict name -> link.
    hf : HfRef or None
        ``"hf"`` only: the repository, revision and path the link names.

    Examples
    --------
    >>> from dlutils.sources.classify import classify_source
    >>> [classify_source(s).kind for s in ("https://h/a.csv", "https://h/{0..9}.csv",
    ...                                    "s3://bucket/folder/", "hf://datasets/org/name")]
    ['single', 'range', 'backend', 'hf']
    >>> classify_source(["https://h/a", "https://h/b"]).objects
    ('https://h/a', 'https://h/b')
    """

    kind: str
    scheme: str = ""
    text: str | None = None
    objects: tuple[str, ...] | dict[str, str] | None = None
    hf: HfRef | None = None


def check_template(text: str) -> None:
    """Refuse a text with a brace that is not a well-formed template, before anything starts."""
    if "{" not in text and "}" not in text:
        return
    try:
        templates.parse(text)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}; {_LITERAL_BRACES}") from None


def names_a_bucket(text: str) -> bool:
    """``s3://bucket``, ``gs://bucket/folder/``, ``ais://host/bucket/``: a bucket, not a file."""
    scheme = scheme_of(text)
    if scheme not in BUCKET_SCHEMES or scheme == "hf":
        return False
    rest = text.split("://", 1)[1]
    depth = 2 if scheme == "ais" else 1
    return text.endswith("/") or rest.count("/") < depth


def check_link_type(link: Any, where: str = "link") -> str:
    """``link`` if it is a string; a clear error for a local path or anything else."""
    if isinstance(link, str):
        return link
    if isinstance(link, os.PathLike):
        raise InvalidInputError(
            f"{where} {link!r} is a local path, not a link: give links as strings such as "
            "'https://example.org/data.csv' (a local destination goes in dest=)"
        )
    raise InvalidInputError(
        f"{where} {link!r} is not valid: expected a string such as 'https://example.org/data.csv'"
    )


def classify_source(source: Any) -> Source:
    """Classify what :func:`dlutils.download` was given, once.

    A string with a brace is a template (a malformed one is refused with
    :class:`~dlutils.InvalidInputError`, never taken as a literal link); ``hf://`` is a
    hub repository; a bucket link (``s3://bucket``, or any bucket link ending in ``/``)
    is a bucket; any other string one link. A dict (name -> link) or any other iterable
    of links is a list. Local paths (``pathlib.Path``) are refused with a clear error.

    Examples
    --------
    >>> from dlutils.sources.classify import classify_source
    >>> [classify_source(s).kind for s in ("https://h/a.bin", "https://h/a-{0..9}.bin",
    ...                                     "s3://bucket/train/", "hf://datasets/org/set")]
    ['single', 'range', 'backend', 'hf']
    >>> classify_source({"a.bin": "https://h/x"}).kind
    'multi'
    """
    if isinstance(source, str):
        check_template(source)
        scheme = scheme_of(source)
        if scheme == "hf":
            from .hf import parse_hf

            return Source("hf", scheme, source, hf=parse_hf(source))
        if templates.has_template(source):
            return Source("range", scheme, source)
        if names_a_bucket(source):
            return Source("backend", scheme, source)
        return Source("single", scheme, source)
    if isinstance(source, Mapping):
        named = {}
        for name, link in source.items():
            named[name] = check_link_type(link, f"link of {name!r}")
        return Source("multi", objects=named)
    if isinstance(source, Iterable) and not isinstance(source, (bytes, os.PathLike)):
        return Source("multi", objects=tuple(check_link_type(link) for link in source))
    check_link_type(source, "source")
    raise AssertionError("unreachable")  # pragma: no cover
