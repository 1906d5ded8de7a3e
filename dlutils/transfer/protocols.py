"""What the engine speaks: a :class:`Remote` opens a :class:`Body`; a :class:`Journal`.

Also what a download gives back (:class:`TransferResult`, :class:`Fetched`) and where its
bytes gather (:func:`part_path`, :func:`resume_point`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..checksums import Checksum

PART_SUFFIX = ".part"


@dataclass
class Body:
    """An opened response body: where it starts in the object and how to read it.

    ``status`` is 200 (the object from its first byte) or 206 (a range starting at
    ``start``); ``end`` is the last byte's offset when the body is a range.
    ``total`` is the whole object's size when known; ``validator`` a strong ETag or
    a Last-Modified date usable to pin later range requests to this version.
    ``interrupt`` must make a read blocked in another thread return or raise at once,
    without blocking itself; the engine calls it when the download is aborted (by
    default it closes the body from a thread of its own).

    A remote reports these facts as the server sent them and decides nothing: the
    engine checks every range answer against what was asked and what the ``.part``
    is pinned to, never lets a body run past its announced or expected size, and
    decodes a ``Content-Encoding`` that was not asked for (refusing one it cannot
    decode) instead of storing it as the object.
    """

    status: int
    start: int
    total: int | None
    validator: str | None
    accepts_ranges: bool
    headers: Mapping[str, str]
    read: Callable[[int], bytes]
    close: Callable[[], None]
    end: int | None = None
    interrupt: Callable[[], None] | None = None
    #: ``Content-Length``: the bytes of this body as sent (encoded ones when encoded).
    length: int | None = None
    #: ``Content-Encoding`` as sent, lowercase; ``None`` for none (or ``identity``).
    encoding: str | None = None
    #: Whether the request asked for that encoding; its bytes are then stored as sent.
    encoding_asked: bool = False


class Remote(Protocol):
    """How a source opens its object; everything else is the engine's job."""

    #: The link with credentials removed, for messages and logs.
    display: str

    def open(self, start: int = 0, end: int | None = None, *, if_range: str | None = None) -> Body:
        """Open the object from byte ``start`` to ``end`` (inclusive; ``None``: to the end).

        With ``if_range``, a changed object must either come back whole (status 200)
        or raise :class:`~dlutils.RemoteChangedError`. A range the object cannot
        satisfy comes back as a body with status 416 (and ``total`` when known).
        HTTP-level failures raise the source library's own errors.
        """
        ...

    def classify(self, exc: BaseException) -> tuple[bool, float | None]:
        """Whether ``exc`` is worth a retry, and the delay the server asked for, if any."""
        ...


class Journal(Protocol):
    """Where partial downloads are recorded for resume (a :class:`dlutils.freshness.Manifest`)."""

    def get_partial(self, path: str) -> dict[str, Any] | None: ...

    def put_partial(self, path: str, info: dict[str, Any]) -> None: ...

    def drop_partial(self, path: str) -> None: ...


@dataclass
class TransferResult:
    """What :func:`download` did."""

    path: str
    size: int
    #: ``"downloaded"``, or ``"placed-by-other"`` when another process finished the same file.
    outcome: str = "downloaded"
    received: int = 0
    resumed_from: int = 0
    segments: int = 1
    validator: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    checksum: Checksum | None = None


@dataclass(frozen=True)
class Fetched:
    """What a source's fetch did for one object: the path, and whether it was skipped."""

    path: str
    #: True when the local copy was current and nothing was downloaded.
    skipped: bool
    #: Size of the local file.
    size: int | None = None
    #: Bytes received over the network for it.
    received: int = 0


def part_path(path: str | os.PathLike) -> str:
    """The ``.part`` file beside ``path`` where its bytes are gathered."""
    return os.fspath(path) + PART_SUFFIX


def resume_point(path: str | os.PathLike, journal: Journal | None) -> tuple[int, str] | None:
    """``(offset, validator)`` where a sequential partial download of ``path`` can resume.

    For sources that make the first request themselves: they add ``Range`` and
    ``If-Range`` to it and pass the answer to :func:`download` as ``first``.
    ``None`` when there is nothing to resume (or it was a segmented download,
    which :func:`download` resumes on its own).
    """
    if journal is None:
        return None
    try:
        size = os.path.getsize(part_path(path))
        info = journal.get_partial(os.path.abspath(path))
    except Exception:  # noqa: BLE001 - nothing to resume is always a safe answer
        return None
    if not size or not isinstance(info, dict) or not info.get("validator") or info.get("segments"):
        return None
    return size, info["validator"]


class _Settings:
    """Options shared by every piece of one download."""

    def __init__(self, **kw: Any):
        self.__dict__.update(kw)
