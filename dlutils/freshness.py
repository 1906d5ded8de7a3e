"""Decide whether a local copy is still current, and keep a manifest of what came from where."""

from __future__ import annotations

import atexit
import json
import logging
import operator
import os
import re
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from email.utils import parsedate_to_datetime
from pathlib import PurePath
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .checksums import ALGORITHMS, b64_to_hex, new_hasher
from .errors import DownloadError, InvalidInputError, UnsafePathError
from .workfiles import check_database, confirm_database, open_working_file

__all__ = [
    "ObjectAttrs",
    "attrs_from_headers",
    "same_object",
    "only_size_compares",
    "file_attrs",
    "Manifest",
]

logger = logging.getLogger("dlutils")

#: Digest fields of :class:`ObjectAttrs` -> number of hex digits.
_DIGESTS: dict[str, int] = {"md5": 32, "crc32c": 8, "sha256": 64}
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:\d+\s*-\s*\d+|\*)\s*/\s*(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ObjectAttrs:
    """What is known about one object: size, version, validators and digests.

    Every field is optional (``None`` = unknown); empty strings become ``None`` and
    digests are stored as lowercase hex.

    Attributes
    ----------
    size : int or None
        Size in bytes.
    version : str or None
        S3 version id, GCS generation or HuggingFace commit.
    etag : str or None
        The ``ETag`` exactly as the server sent it (quotes and ``W/`` kept), ready to be
        sent back in ``If-None-Match`` or ``If-Range``.
    md5, crc32c, sha256 : str or None
        Lowercase hex digests (crc32c: 8 digits, big-endian value).
    last_modified : str or None
        The ``Last-Modified`` HTTP-date as sent.
    source : str or None
        Where the object came from, credentials removed (``"s3://bucket/key"``, a URL).
    verified : str or None
        In a :class:`Manifest` record: the digest field (``"sha256"``, ``"md5"`` or
        ``"crc32c"``) whose value dlutils checked against the bytes when it placed the
        file (a checksum given, or one the source sent and the bytes were found to
        have). A value only copied from a header is not verified. ``cache="verified"``
        trusts such a record without asking the server (see
        :func:`dlutils.sources._common.trusted`). Never compared by :func:`same_object`.

    Examples
    --------
    >>> from dlutils.freshness import ObjectAttrs
    >>> a = ObjectAttrs(size=3, etag='W/"abc"', md5="D41D8CD98F00B204E9800998ECF8427E")
    >>> a.md5, a.strong_etag
    ('d41d8cd98f00b204e9800998ecf8427e', None)
    >>> a.to_dict() == {"size": 3, "etag": 'W/"abc"', "md5": "d41d8cd98f00b204e9800998ecf8427e"}
    True
    >>> ObjectAttrs.from_dict(a.to_dict()) == a
    True
    """

    size: int | None = None
    version: str | None = None
    etag: str | None = None
    md5: str | None = None
    crc32c: str | None = None
    sha256: str | None = None
    last_modified: str | None = None
    source: str | None = None
    verified: str | None = None

    def __post_init__(self) -> None:
        if self.size is not None:
            try:
                size = -1 if isinstance(self.size, bool) else operator.index(self.size)
            except TypeError:
                size = -1
            if size < 0:
                raise InvalidInputError(
                    f"ObjectAttrs size {self.size!r} is not valid: give a byte count >= 0, or None"
                )
            object.__setattr__(self, "size", size)
        for name in _FIELDS[1:]:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidInputError(
                    f"ObjectAttrs {name} {value!r} is not valid: give a string, or None"
                )
            if value == "":
                object.__setattr__(self, name, None)
            elif name in _DIGESTS:
                width = _DIGESTS[name]
                if len(value) != width or not _HEX.match(value):
                    raise InvalidInputError(
                        f"ObjectAttrs {name} {value!r} is not valid: give {width} hex digits"
                    )
                object.__setattr__(self, name, value.lower())
        if self.verified is not None and (
            self.verified not in _DIGESTS or getattr(self, self.verified) is None
        ):
            raise InvalidInputError(
                f"ObjectAttrs verified={self.verified!r} is not valid: name a digest field "
                f"({', '.join(_DIGESTS)}) that holds a value, or None"
            )

    @property
    def strong_etag(self) -> str | None:
        """The ETag as sent when it is a strong validator (fit for ``If-Range``), else None."""
        if self.etag is None or self.etag.startswith("W/"):
            return None
        return self.etag

    def to_dict(self) -> dict[str, Any]:
        """The known fields as a JSON-ready ``dict`` (unknown fields left out)."""
        return {k: v for k in _FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectAttrs:
        """Build from :meth:`to_dict` output; keys this version does not know are ignored."""
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def merged(self, other: ObjectAttrs) -> ObjectAttrs:
        """A copy whose unknown fields are filled in from ``other`` (known fields win).

        ``verified`` is never taken from ``other``: it vouches for ``other``'s digest only.

        Examples
        --------
        >>> from dlutils.freshness import ObjectAttrs
        >>> ObjectAttrs(size=3).merged(ObjectAttrs(size=4, version="7"))
        ObjectAttrs(size=3, version='7', etag=None, md5=None, crc32c=None, sha256=None, \
last_modified=None, source=None, verified=None)
        """
        mine = self.to_dict()
        theirs = {k: v for k, v in other.to_dict().items() if k != "verified"}  # not for our value
        return ObjectAttrs(**{**theirs, **mine})

    def conditional_headers(self) -> dict[str, str]:
        """``If-None-Match`` / ``If-Modified-Since`` headers that let a server answer 304.

        Examples
        --------
        >>> from dlutils.freshness import ObjectAttrs
        >>> ObjectAttrs(etag='"v1"').conditional_headers()
        {'If-None-Match': '"v1"'}
        """
        headers = {}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        if self.last_modified is not None:
            headers["If-Modified-Since"] = self.last_modified
        return headers


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ObjectAttrs))  # "size" first


# --------------------------------------------------------------------------- headers


def _collect(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Lowercased name -> every value (``http.client`` messages repeat names in items())."""
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        out.setdefault(name.lower(), []).append(str(value).strip())
    return out


def _parse_size(value: str | None) -> int | None:
    if value is None:
        return None
    parts = {p.strip() for p in value.split(",")}  # duplicates may arrive comma-joined
    if len(parts) != 1:
        return None
    text = parts.pop()
    return int(text) if text.isdigit() else None


def _b64_digest(value: str | None, field: str) -> str | None:
    if not value:
        return None
    digest = b64_to_hex(value)
    return digest if digest is not None and len(digest) == _DIGESTS[field] else None


def _opaque(etag: str) -> str:
    """The opaque tag of an ETag: ``W/`` and enclosing quotes removed."""
    tag = etag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    if len(tag) >= 2 and tag[0] == tag[-1] == '"':
        tag = tag[1:-1]
    return tag


def _strip_credentials(url: str) -> str:
    scheme, netloc, path, query, fragment = urlsplit(url)
    if "@" not in netloc:
        return url
    return urlunsplit((scheme, netloc.rpartition("@")[2], path, query, fragment))


def _is_s3(url: str, h: dict[str, list[str]]) -> bool:
    if any(name.startswith("x-amz-") for name in h):
        return True
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].partition(":")[0].lower()
    return parts.scheme == "s3" or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def attrs_from_headers(url: str, headers: Mapping[str, str]) -> ObjectAttrs:
    """Read an object's attributes from the headers of a HEAD or GET response.

    Parameters
    ----------
    url : str
        The object's link, recorded as ``source`` (a ``user:password@`` part is dropped;
        remove signed query strings before calling).
    headers : Mapping[str, str]
        Response headers; names are matched case-insensitively. ``requests`` and
        ``http.client`` header objects both work.

    Returns
    -------
    ObjectAttrs

    Notes
    -----
    - Everywhere: ``ETag`` (kept as sent), ``Last-Modified``, ``Content-MD5``. Size comes
      from the first present of ``X-Linked-Size``, ``x-goog-stored-content-length``, the
      total of ``Content-Range: bytes a-b/TOTAL`` (a ``*`` total means unknown) and
      ``Content-Length``.
    - S3 (``x-amz-*`` headers, ``s3://`` or an amazonaws host): ``x-amz-version-id``
      (but not ``"null"``) is the version; a strong ETag of 32 hex digits with no ``-N``
      multipart suffix is the md5, unless the object is SSE-KMS or SSE-C encrypted;
      full-object ``x-amz-checksum-sha256`` / ``x-amz-checksum-crc32c`` are digests.
    - GCS: ``x-goog-generation`` is the version; ``x-goog-hash`` gives crc32c and md5.
    - AIStore: ``ais-version`` is the version; ``ais-checksum-type`` / ``-value`` give the
      md5, crc32c or sha256 of a whole (not ranged) answer; xxhash is not used.
    - HuggingFace: ``X-Linked-Etag`` is the ETag and (64 hex digits) the sha256 of an LFS
      file, ``X-Linked-Size`` the size. ``X-Repo-Commit`` is not used: it names the
      commit of the whole repository, so it changes when any other file does.

    Examples
    --------
    >>> from dlutils.freshness import attrs_from_headers
    >>> a = attrs_from_headers("https://b.s3.amazonaws.com/k", {
    ...     "ETag": '"9e107d9d372bb6826bd81d3542a419d6"', "Content-Length": "43",
    ...     "x-amz-version-id": "3HL4kqtJlcpXroDTDmJ"})
    >>> a.size, a.version, a.md5
    (43, '3HL4kqtJlcpXroDTDmJ', '9e107d9d372bb6826bd81d3542a419d6')
    >>> a.etag  # kept as sent, for If-None-Match
    '"9e107d9d372bb6826bd81d3542a419d6"'
    >>> attrs_from_headers("https://x.org/f", {"content-range": "bytes 0-9/1000"}).size
    1000
    """
    h = _collect(headers)

    def first(name: str) -> str | None:
        values = h.get(name)
        return values[0] if values and values[0] else None

    found: dict[str, Any] = {"source": _strip_credentials(url)}
    found["etag"] = first("etag")
    found["last_modified"] = first("last-modified")
    found["md5"] = _b64_digest(first("content-md5"), "md5")

    # Size: the whole object's, not this response body's.
    size = _parse_size(first("content-length"))
    content_range = first("content-range")
    if content_range is not None:
        match = _CONTENT_RANGE.match(content_range)
        size = int(match.group(1)) if match and match.group(1) != "*" else None
    for name in ("x-goog-stored-content-length", "x-linked-size"):
        if first(name) is not None:
            size = _parse_size(first(name))
    found["size"] = size

    if _is_s3(url, h):
        version = first("x-amz-version-id")
        found["version"] = version if version != "null" else None
        etag = found["etag"]
        encrypted = first("x-amz-server-side-encryption") == "aws:kms" or (
            "x-amz-server-side-encryption-customer-algorithm" in h
        )
        if etag and not etag.startswith("W/") and not encrypted and found["md5"] is None:
            tag = _opaque(etag)
            if len(tag) == 32 and _HEX.match(tag):
                found["md5"] = tag.lower()
        if (first("x-amz-checksum-type") or "").upper() != "COMPOSITE":
            found["sha256"] = _b64_digest(first("x-amz-checksum-sha256"), "sha256")
            found["crc32c"] = _b64_digest(first("x-amz-checksum-crc32c"), "crc32c")

    if first("x-goog-generation") is not None:
        found["version"] = first("x-goog-generation")
    for value in h.get("x-goog-hash", []):  # repeated, or comma-joined
        for item in value.split(","):
            algorithm, _, b64 = item.strip().partition("=")
            algorithm = algorithm.strip().lower()
            if algorithm in ("md5", "crc32c"):
                found[algorithm] = _b64_digest(b64, algorithm) or found.get(algorithm)

    # AIStore: the object's version, and its checksum when it is one of ours; on a ranged
    # answer the checksum may be the range's own, so only a whole answer's counts.
    if first("ais-version") is not None:
        found["version"] = first("ais-version")
    ais_type = (first("ais-checksum-type") or "").lower()
    ais_value = (first("ais-checksum-value") or "").lower()
    if ais_type in ("md5", "crc32c", "sha256") and content_range is None:
        if len(ais_value) == ALGORITHMS[ais_type] and _HEX.match(ais_value):
            found[ais_type] = ais_value

    linked = first("x-linked-etag")
    if linked is not None:
        found["etag"] = linked
        tag = _opaque(linked)
        if len(tag) == 64 and _HEX.match(tag):
            found["sha256"] = tag.lower()

    return ObjectAttrs(**found)


# --------------------------------------------------------------------------- comparison


def _same_time(a: str, b: str) -> bool:
    try:
        return parsedate_to_datetime(a) == parsedate_to_datetime(b)
    except (TypeError, ValueError):
        return a.strip() == b.strip()


def _compare(local: ObjectAttrs, remote: ObjectAttrs) -> tuple[bool | None, str]:
    """``(verdict, reason)``; the reason names the deciding attribute.

    The verdict is True (current), False (an attribute known on both sides differs, or
    the evidence is not enough) or None (nothing differs, and nothing but the size, a
    weak ETag or Last-Modified could be compared).
    """
    if local.size is not None and remote.size is not None and local.size != remote.size:
        return False, f"size {local.size} != {remote.size} remote"

    matched: set[str] = set()  # values already counted, to count each piece of evidence once
    count = 0
    trusted = False
    for name in ("sha256", "md5", "crc32c"):
        mine, theirs = getattr(local, name), getattr(remote, name)
        if mine is None or theirs is None:
            continue
        if mine != theirs:
            return False, f"{name} {mine} != {theirs} remote"
        count += 1
        matched.add(mine)
        trusted = trusted or name != "crc32c"

    # version, ETag and Last-Modified are answers of one server about one object: they
    # say nothing when the two sides come from different known sources.
    if local.source is None or remote.source is None or local.source == remote.source:
        if local.version is not None and remote.version is not None:
            if local.version != remote.version:
                return False, f"version {local.version} != {remote.version} remote"
            if local.version.lower() not in matched:
                count += 1
                matched.add(local.version.lower())
        if local.last_modified is not None and remote.last_modified is not None:
            if not _same_time(local.last_modified, remote.last_modified):
                return False, f"last-modified {local.last_modified} != {remote.last_modified}"
        if local.etag is not None and remote.etag is not None:
            mine, theirs = _opaque(local.etag), _opaque(remote.etag)
            if mine != theirs:
                return False, f"ETag {local.etag} != {remote.etag} remote"
            strong = local.strong_etag is not None and remote.strong_etag is not None
            if strong and mine.lower() not in matched:
                count += 1
                trusted = trusted or (local.source is not None and local.source == remote.source)

    if trusted:
        return True, "a trusted checksum or ETag matches"
    if count >= 2:
        return True, f"{count} independent attributes match"
    if count == 0:
        return None, "nothing but the size could be compared"
    return False, f"only {count} independent attribute(s) match, and none is trusted alone"


def same_object(local: ObjectAttrs, remote: ObjectAttrs) -> bool:
    """True when the local copy is the remote object, by the AIStore downloader's rule.

    Parameters
    ----------
    local : ObjectAttrs
        What is known of the local copy (a :class:`Manifest` record, merged with
        :func:`file_attrs`).
    remote : ObjectAttrs
        What the remote says now (:func:`attrs_from_headers`, a listing).

    Returns
    -------
    bool
        ``False`` means download again.

    Notes
    -----
    An attribute counts only when known on both sides; known on both sides and
    different, it makes the answer ``False`` at once.

    1. **Size** is a gate, never evidence: known on both sides, it must agree. Unknown
       on either side (a chunked response), the gate is skipped, as in AIStore, and the
       other attributes decide alone.
    2. **Evidence**, each counted at most once:

       =============  ==================  ====================================================
       attribute      trusted alone       notes
       =============  ==================  ====================================================
       sha256, md5    yes                 content digests, compared whatever the sources
       crc32c         no                  a 32-bit CRC collides too easily to decide alone
       version        no                  S3 version id, GCS generation
       strong ETag    yes, if ``source``  not counted when its value equals a matched digest
                      is known and equal  or version (an S3 single-part ETag *is* the md5)
       weak ETag      never counted       different opaque tags still mean ``False``
       last_modified  never counted       a mismatch means ``False``; one-second resolution,
                                          and often the very input of the ETag
       =============  ==================  ====================================================

    3. **Current** when one trusted attribute matches, or two counted ones do.

    version, ETag and Last-Modified belong to one server's view of one object: when both
    ``source`` values are known and differ they are neither compared nor counted, and
    only content digests decide. ``source`` itself is never a conflict.

    Examples
    --------
    >>> from dlutils.freshness import ObjectAttrs, same_object
    >>> url = "https://example.org/a.bin"
    >>> same_object(ObjectAttrs(size=5, etag='"x1"', source=url),
    ...             ObjectAttrs(size=5, etag='"x1"', source=url))
    True
    >>> same_object(ObjectAttrs(size=5, crc32c="e3069283"), ObjectAttrs(size=5, crc32c="e3069283"))
    False
    >>> same_object(ObjectAttrs(size=5, crc32c="e3069283", version="7"),
    ...             ObjectAttrs(size=5, crc32c="e3069283", version="7"))
    True
    >>> same_object(ObjectAttrs(size=5, etag='"x1"', source=url),
    ...             ObjectAttrs(size=6, etag='"x1"', source=url))
    False
    """
    verdict, reason = _compare(local, remote)
    logger.debug("freshness of %s: %s (%s)", remote.source or local.source, verdict, reason)
    return verdict is True


def only_size_compares(local: ObjectAttrs, remote: ObjectAttrs) -> bool:
    """True when nothing differs and nothing but the size could be compared.

    That is the case of a server that sends only ``Content-Length`` (no ETag, no
    Last-Modified, no checksum), or of a record and a response that share no other
    attribute; a weak ETag and Last-Modified, never counted as evidence, may also
    match. :func:`same_object` then answers ``False`` (too little evidence);
    :func:`dlutils.sources._common.is_current` lets the size decide, as pyvo does for
    a file with no record.

    Examples
    --------
    >>> from dlutils.freshness import ObjectAttrs, only_size_compares, same_object
    >>> only_size = ObjectAttrs(size=5, source="https://example.org/a.bin")
    >>> same_object(only_size, only_size), only_size_compares(only_size, only_size)
    (False, True)
    >>> only_size_compares(only_size, ObjectAttrs(size=6))
    False
    >>> only_size_compares(ObjectAttrs(size=5, version="7"), ObjectAttrs(size=5, version="7"))
    False
    """
    verdict, _ = _compare(local, remote)
    return verdict is None


def file_attrs(path: str | os.PathLike, *, checksums: Iterable[str] = ()) -> ObjectAttrs:
    """Size of a local file plus the digests asked for, read in one pass.

    Parameters
    ----------
    path : str or os.PathLike
    checksums : iterable of str
        Any of ``"md5"``, ``"crc32c"``, ``"sha256"``.

    Returns
    -------
    ObjectAttrs
        With ``size`` and the requested digests; ``source`` is None.

    Raises
    ------
    dlutils.InvalidInputError
        For an algorithm :class:`ObjectAttrs` has no field for.
    OSError
        When the file cannot be read.

    Examples
    --------
    >>> import os, tempfile
    >>> from dlutils.freshness import file_attrs
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "f.txt")
    ...     _ = open(p, "wb").write(b"123456789")
    ...     file_attrs(p, checksums=["crc32c"])
    ObjectAttrs(size=9, version=None, etag=None, md5=None, crc32c='e3069283', sha256=None, \
last_modified=None, source=None, verified=None)
    """
    wanted = [checksums] if isinstance(checksums, str) else list(checksums)
    algorithms = list(dict.fromkeys(a.lower().replace("-", "") for a in wanted))
    for algorithm in algorithms:
        if algorithm not in _DIGESTS:
            raise InvalidInputError(
                f"checksum algorithm {algorithm!r} cannot be recorded in ObjectAttrs; "
                f"use some of {', '.join(_DIGESTS)}, for instance checksums=['sha256']"
            )
    hashers = {a: new_hasher(a) for a in algorithms}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while hashers and (block := f.read(1 << 20)):
            for hasher in hashers.values():
                hasher.update(block)
    return ObjectAttrs(size=size, **{a: h.hexdigest() for a, h in hashers.items()})


# --------------------------------------------------------------------------- manifest

_SCHEMA_VERSION = 1
_INHERITED: list[sqlite3.Connection] = []  # a forked child's copies of its parent's connections
_LIVE: weakref.WeakSet[Manifest] = weakref.WeakSet()  # flushed at exit, should close() be missed
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY NOT NULL,
    attrs TEXT NOT NULL,
    local_size INTEGER NOT NULL,
    local_mtime_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS partials (
    key TEXT PRIMARY KEY NOT NULL,
    info TEXT NOT NULL
) WITHOUT ROWID;
"""


#: A batched record: the attrs, as JSON, and the file's size and mtime (ns) when put.
_Row = tuple[ObjectAttrs, str, int, int]


def _flush_at_exit() -> None:
    for manifest in list(_LIVE):
        if manifest._owner == os.getpid() and manifest._pid == os.getpid():
            try:
                manifest.flush()
            except Exception:  # noqa: BLE001 - nothing left to tell but the log
                logger.warning("cannot write records to %s", manifest.path, exc_info=True)


atexit.register(_flush_at_exit)


def _prefix_end(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if code == 0xD800:  # surrogates cannot be stored; skip them
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


class Manifest:
    """A record, kept beside the data, of what was downloaded from where.

    One SQLite file, :attr:`FILENAME`, directly in ``root``, created by the first write.
    Keys are paths relative to ``root`` with ``/`` separators; every method takes an
    absolute path or one relative to ``root``.

    Safe from many threads and processes at once. Each thread reads on its own
    connection, so readers never wait on a Python lock and no connection is shared
    mid-statement; this process writes on one connection, one writer at a time, so
    writers never meet in SQLite's busy handler, whose sleeps of many milliseconds make
    tail latency erratic; other processes wait on SQLite's own lock (WAL journal,
    ``synchronous=NORMAL``, a busy timeout of ``timeout`` seconds).

    :meth:`put` records are written in batches: one transaction per :attr:`BATCH`
    records or :attr:`DELAY` seconds, whichever comes first (by the thread whose put
    fills the batch, else by a short-lived writer thread). Reads see them at once
    (:meth:`get` looks at the batch first; :meth:`records` flushes it), and every other
    write (:meth:`remove`, the partial-download journal) goes out at once, in one
    transaction with the batch before it, so writes keep their order. :meth:`close`
    and :meth:`flush` write the batch; so does the interpreter's exit, should a
    manifest not be closed. A crash loses at most the batch: a file without its
    record is judged by its size next time, as pyvo does, and a stale record of an
    earlier file at that path is no longer valid (the size or mtime differs). A
    forked child, or a copy unpickled in another process (a process executor's
    worker), writes every record at once: nothing there would flush at exit.
    :meth:`close` closes every connection opened, in any thread; call it once those
    threads are done.

    Parameters
    ----------
    root : str or os.PathLike
        The destination folder the manifest describes.
    timeout : float
        Seconds to wait for another process's write before giving up.

    Raises
    ------
    dlutils.UnsafePathError
        (a ``ValueError``) from any method given a path outside ``root``.

    Examples
    --------
    >>> import os, tempfile
    >>> from dlutils.freshness import Manifest, ObjectAttrs
    >>> with tempfile.TemporaryDirectory() as root, Manifest(root) as manifest:
    ...     print(manifest.get("data.bin"), os.listdir(root))
    ...     _ = open(os.path.join(root, "data.bin"), "wb").write(b"abc")
    ...     manifest.put("data.bin", ObjectAttrs(size=3, etag='"v1"', source="https://x.org/d"))
    ...     print(manifest.get(os.path.join(root, "data.bin")).etag, "data.bin" in manifest)
    ...     _ = open(os.path.join(root, "data.bin"), "ab").write(b"d")  # edited by hand
    ...     print(manifest.get("data.bin"))
    None []
    "v1" True
    None
    """

    FILENAME: ClassVar[str] = ".dlutils-manifest.sqlite"
    #: Records written in one transaction, at most.
    BATCH: ClassVar[int] = 100
    #: Seconds a record may wait for its batch's transaction, at most (give or take a
    #: transaction already under way).
    DELAY: ClassVar[float] = 0.1
    _PAGE: ClassVar[int] = 512
    _LINGER: ClassVar[float] = 1.0  # seconds the writer thread waits for more before it ends

    def __init__(self, root: str | os.PathLike, *, timeout: float = 60.0) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.path = os.path.join(self.root, self.FILENAME)
        self.timeout = timeout
        self._owner: int | None = os.getpid()  # the one process that batches
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards _conns and _ready
        self._write_lock = threading.Lock()  # one writer at a time in this process
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._ready = False
        self._writer_conn: sqlite3.Connection | None = None  # used under _write_lock only
        self._batch_lock = threading.Lock()  # guards the four below
        self._pending: dict[str, _Row] = {}  # put, not yet written
        self._writing: dict[str, _Row] = {}  # in the transaction under way
        self._due = 0.0  # time.monotonic() by which _pending must be written
        self._flusher: threading.Thread | None = None

    def _here(self) -> None:
        """In a forked child, drop the parent's connections, locks and batch."""
        if self._pid != os.getpid():  # inherited connections must not be used
            _INHERITED.extend(self._conns)  # ... nor closed, so keep them from the collector
            self._reset()  # the parent writes its own batch

    def __reduce__(self):
        try:  # the copy, maybe in another process, reads what was put here
            self.flush()
        except Exception:  # noqa: BLE001 - the copy then judges those files by their size
            logger.warning("cannot write records to %s", self.path, exc_info=True)
        return (type(self), (self.root,), {"timeout": self.timeout})

    def __setstate__(self, state: dict) -> None:
        self.timeout = state["timeout"]
        self._owner = None  # a copy: maybe in a process that never runs atexit
        _LIVE.discard(self)

    def __repr__(self) -> str:
        return f"Manifest({self.root!r})"

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the batch, then close every connection opened, in any thread.

        A batch that cannot be written is logged, not raised (its files are judged by
        their size next time). The manifest stays usable: connections are opened again
        on next use.
        """
        self._here()
        with self._write_lock:
            try:
                self._flush_locked()
            except Exception:  # noqa: BLE001 - a download stays good without its record
                logger.warning("cannot write records to %s", self.path, exc_info=True)
            finally:
                with self._lock:
                    conns, self._conns = self._conns, []
                    self._local = threading.local()
                    self._ready = False
                    self._writer_conn = None
                for conn in conns:
                    conn.close()

    def flush(self) -> None:
        """Write the records :meth:`put` has batched, in one transaction."""
        self._here()
        with self._write_lock:
            self._flush_locked()

    def check(self) -> None:
        """Refuse a manifest that could write elsewhere; nothing is created.

        Raises
        ------
        dlutils.UnsafePathError
            The manifest, or its ``-wal``, ``-shm`` or ``-journal`` file, is a symbolic
            link, a hard link or not a regular file: SQLite would write through it.
        """
        check_database(self.path, what="manifest")

    # -- plumbing

    def _key(self, path: str | os.PathLike) -> str:
        self._here()
        given = os.fsdecode(os.fspath(path))
        full = os.path.normpath(os.path.join(self.root, given))
        inside = self.root if self.root.endswith(os.sep) else self.root + os.sep
        if len(full) > len(inside) and full.startswith(inside) and full[len(inside)] != os.sep:
            rel = full[len(inside) :]  # the usual case, without relpath's cost
            return rel if os.sep == "/" else PurePath(rel).as_posix()
        try:
            rel = os.path.relpath(full, self.root)
        except ValueError:  # another drive, on Windows
            rel = os.pardir
        if rel == os.curdir:
            raise UnsafePathError(
                f"path {given!r} is the manifest root itself, not a file under it; give a file "
                f"path under {self.root!r}, absolute or relative to it, such as 'sub/file.bin'"
            )
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise UnsafePathError(
                f"path {given!r} is outside the manifest root {self.root!r}; give a file path "
                f"under that folder, absolute or relative to it, such as 'sub/file.bin'"
            )
        return PurePath(rel).as_posix()

    def _connect(self) -> sqlite3.Connection | None:
        """This thread's connection, for reading; None when the manifest does not exist."""
        self._here()
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None:
            if not os.path.lexists(self.path):
                return None
            conn = self._open()
            with self._lock:
                self._conns.append(conn)
            local.conn = conn
            self._check_version(conn)
        return conn

    def _writer(self, create: bool) -> sqlite3.Connection | None:
        """This process's writing connection (hold ``_write_lock``); None: nothing to write to."""
        conn = self._writer_conn
        if conn is None:
            if not create and not os.path.lexists(self.path):
                return None
            conn = self._open()
            with self._lock:
                self._conns.append(conn)
            self._check_version(conn)
            try:  # persistent in the file; a no-op once any connection has set it
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:  # e.g. no shared memory (network filesystem)
                logger.debug("manifest %s keeps the default journal: %s", self.path, exc)
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                conn.execute("PRAGMA synchronous = NORMAL")  # durable in WAL, and no fsync per put
            check_database(self.path, what="manifest")  # the -wal and -shm now exist
            self._writer_conn = conn
        if create and not self._ready:
            self._create_schema(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        """A new connection, never through a link planted at the manifest or its journals.

        SQLite follows links, so the files are checked before and after it opens them.
        """
        before = check_database(self.path, what="manifest")
        if before is None:  # created here, not by SQLite: O_NOFOLLOW
            os.close(open_working_file(self.path, os.O_RDWR | os.O_CREAT, what="manifest"))
            before = check_database(self.path, what="manifest")
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            confirm_database(self.path, before, what="manifest")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the tables if absent (hold ``_write_lock``); safe from several processes."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_version(conn)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._ready = True

    def _check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise DownloadError(
                f"manifest {self.path!r} has schema version {version}, newer than the "
                f"{_SCHEMA_VERSION} this dlutils reads; upgrade dlutils"
            )

    def _write(self, *statements: tuple[str, tuple], create: bool = True) -> None:
        """Run ``(sql, params)`` statements in one short transaction, after the batch.

        With ``create=False`` (removals) a missing manifest is left missing.
        """
        with self._write_lock:
            self._flush_locked(statements, create)

    def _flush_locked(
        self, statements: Iterable[tuple[str, tuple]] = (), create: bool = False
    ) -> None:
        """Write the batch, then ``statements``, in one transaction (hold ``_write_lock``)."""
        with self._batch_lock:
            batch, self._pending = self._pending, {}
            self._writing = batch
        statements = tuple(statements)
        if not batch and not statements:
            return
        try:
            conn = self._writer(create or bool(batch))
            if conn is None:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                for key, (_, data, size, mtime_ns) in batch.items():
                    conn.execute(
                        "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)",
                        (key, data, size, mtime_ns),
                    )
                    conn.execute("DELETE FROM partials WHERE key = ?", (key,))
                for sql, params in statements:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                missing = isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)
                if not (missing and not batch and not create):  # made elsewhere, no tables yet
                    raise
        finally:
            with self._batch_lock:
                self._writing = {}  # written, or lost (a failed batch costs a size comparison)

    def _flush_later(self) -> None:
        """The writer thread: write the batch when it is due; end after a second with none.

        Staying a while spares a job's puts a thread start per batch.
        """
        idle_since: float | None = None
        while True:
            with self._batch_lock:
                now = time.monotonic()
                if self._pending:
                    idle_since, wait = None, self._due - now
                elif idle_since is not None and now - idle_since >= self._LINGER:
                    self._flusher = None
                    return
                else:
                    idle_since, wait = idle_since or now, self.DELAY
            if wait > 0:
                time.sleep(wait)
                continue
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a download stays good without its record
                logger.warning("cannot write records to %s", self.path, exc_info=True)

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # file created, tables not yet
            if "no such table" in str(exc):
                return []
            raise

    def _valid(self, key: str, size: int, mtime_ns: int) -> bool:
        try:
            st = os.stat(os.path.join(self.root, key))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns == mtime_ns

    # -- records

    def put(self, path: str | os.PathLike, attrs: ObjectAttrs) -> None:
        """Record ``attrs`` for the file at ``path`` as it is now (size and mtime).

        Also drops the partial-download record of ``path``, in the same transaction.

        Raises
        ------
        FileNotFoundError
            When the file is not there.
        """
        key = self._key(path)
        st = os.stat(os.path.join(self.root, key))
        data = json.dumps(attrs.to_dict(), separators=(",", ":"), sort_keys=True)
        if not self._ready:  # the file, checked and with its tables, before the first record
            with self._write_lock:
                self._writer(True)
        with self._batch_lock:
            if not self._pending:
                self._due = time.monotonic() + self.DELAY
            self._pending[key] = (attrs, data, st.st_size, st.st_mtime_ns)
            full = len(self._pending) >= self.BATCH or self._owner != self._pid
            start = not full and self._flusher is None
            if start:
                self._flusher = threading.Thread(
                    target=self._flush_later, name="dlutils-manifest", daemon=True
                )
        if full:
            with self._write_lock:
                with self._batch_lock:  # another thread may have written it meanwhile
                    full = len(self._pending) >= self.BATCH or self._owner != self._pid
                if full:
                    self._flush_locked()
        elif start:
            try:
                self._flusher.start()
            except RuntimeError:  # no new threads (interpreter shutdown): write it now
                with self._batch_lock:
                    self._flusher = None
                self.flush()

    def get(self, path: str | os.PathLike) -> ObjectAttrs | None:
        """The recorded attrs, or None when there is none or the file changed since.

        A file whose size or mtime (ns) differs from what :meth:`put` saw, or that is
        gone, has no valid record.
        """
        key = self._key(path)
        with self._batch_lock:
            row = self._pending.get(key) or self._writing.get(key)
        if row is not None:
            attrs, _, size, mtime_ns = row
            return attrs if self._valid(key, size, mtime_ns) else None
        rows = self._query(
            "SELECT attrs, local_size, local_mtime_ns FROM objects WHERE key = ?", (key,)
        )
        if not rows or not self._valid(key, rows[0][1], rows[0][2]):
            return None
        return ObjectAttrs.from_dict(json.loads(rows[0][0]))

    def __contains__(self, path: str | os.PathLike) -> bool:
        return self.get(path) is not None

    def remove(self, path: str | os.PathLike) -> None:
        """Forget ``path`` (its record and any partial-download record)."""
        key = self._key(path)
        self._write(
            ("DELETE FROM objects WHERE key = ?", (key,)),
            ("DELETE FROM partials WHERE key = ?", (key,)),
            create=False,
        )

    def records(self, prefix: str = "") -> Iterator[tuple[str, ObjectAttrs]]:
        """Yield ``(key, attrs)``, in key order, for the valid records under ``prefix``.

        ``prefix`` is a plain string prefix of keys, as a bucket prefix is (``"a/b"``
        matches ``"a/bc"``). Records of files changed by hand since are skipped, as in
        :meth:`get`. Reads a page at a time: memory stays flat however many records there
        are, no read lock is held between pages, and writing while iterating is fine.

        Examples
        --------
        >>> import tempfile
        >>> from dlutils.freshness import Manifest
        >>> with tempfile.TemporaryDirectory() as root:
        ...     list(Manifest(root).records("train/"))
        []
        """
        end = _prefix_end(prefix)
        last: str | None = None
        while True:
            self.flush()  # each page sees every record put so far
            sql = "SELECT key, attrs, local_size, local_mtime_ns FROM objects WHERE key >= ?"
            params: list[Any] = [prefix]
            if end is not None:
                sql += " AND key < ?"
                params.append(end)
            if last is not None:
                sql += " AND key > ?"
                params.append(last)
            rows = self._query(sql + " ORDER BY key LIMIT ?", (*params, self._PAGE))
            for key, data, size, mtime_ns in rows:
                if self._valid(key, size, mtime_ns):
                    yield key, ObjectAttrs.from_dict(json.loads(data))
            if len(rows) < self._PAGE:
                return
            last = rows[-1][0]

    # -- partial-download journal, keyed by the final path (not the .part name)

    def put_partial(self, path: str | os.PathLike, info: Mapping[str, Any]) -> None:
        """Save the resume state of the download that will end at ``path``.

        ``info`` must be JSON-serialisable, e.g. ``{"validator": '"etag"', "total": 123,
        "segments": [[start, end, done], ...]}``.
        """
        key = self._key(path)
        try:
            data = json.dumps(dict(info), separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"partial-download info for {key!r} must be JSON-serialisable: {exc}"
            ) from exc
        self._write(("INSERT OR REPLACE INTO partials VALUES (?, ?)", (key, data)))

    def get_partial(self, path: str | os.PathLike) -> dict[str, Any] | None:
        """The resume state saved by :meth:`put_partial`, or None."""
        key = self._key(path)
        with self._batch_lock:
            if key in self._pending or key in self._writing:
                return None  # put, which drops it
        rows = self._query("SELECT info FROM partials WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def drop_partial(self, path: str | os.PathLike) -> None:
        """Forget the resume state of ``path``."""
        self._write(("DELETE FROM partials WHERE key = ?", (self._key(path),)), create=False)
