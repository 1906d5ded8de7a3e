"""From links to safe local names: derivation, validation, joining, and credential redaction."""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from email.message import Message
from email.utils import collapse_rfc2231_value
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .errors import InvalidInputError, UnsafePathError

__all__ = [
    "object_name",
    "name_from_url",
    "name_from_content_disposition",
    "check_name",
    "join_inside",
    "redact",
]

_BUCKET_SCHEMES = ("s3", "gs", "ais")

#: The suffix of the file an object's bytes gather in (``transfer.PART_SUFFIX``).
PART_SUFFIX = ".part"
#: Names dlutils gives its own files in a destination (the manifest and its journals).
WORKING_PREFIX = ".dlutils-"
#: Longest file or folder name, in bytes, that common filesystems take (ext4, xfs, btrfs, APFS).
NAME_MAX = 255
#: Longest path, in bytes, that a system call takes on Linux (the final NUL included).
PATH_MAX = 4096
#: How to download an object whose name cannot be used, said by every refusal.
_RENAME = (
    "give a dict {name: link} to a multi job, object_name= to a single one, or "
    "local_filepath= to a download function"
)

# Query parameters whose values are credentials (signed URLs of S3, GCS, Azure, CloudFront, ...).
_SECRET_PARAM = re.compile(
    r"(sig|signature|token|secret|password|passwd|credential|key|auth|session|policy)",
    re.IGNORECASE,
)


def redact(link: str) -> str:
    """Return ``link`` with its credentials removed, fit for messages, logs and descriptions.

    The password of ``user:password@host`` and the values of query (or fragment)
    parameters that carry secrets (``X-Amz-Signature``, ``X-Amz-Credential``, ``sig``, ``token``,
    ``access_token``, ``key``, ...) are replaced by ``REDACTED``.

    Examples
    --------
    >>> from dlutils.names import redact
    >>> redact("https://bob:hunter2@example.org/a.bin?X-Amz-Signature=abc&part=1")
    'https://bob:REDACTED@example.org/a.bin?X-Amz-Signature=REDACTED&part=1'
    >>> redact("s3://bucket/key.tgz")
    's3://bucket/key.tgz'
    """
    try:
        parts = urlsplit(link)
    except ValueError:
        return "<unparsable link>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:REDACTED@{hostport}" if ":" in userinfo else f"REDACTED@{hostport}"
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            _redact_params(parts.query),
            _redact_params(parts.fragment),
        )
    )


def _redact_params(text: str) -> str:
    """Replace the values of secret-looking ``key=value`` parameters (query or fragment)."""
    if not text or "=" not in text:
        return text
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(_SECRET_PARAM.search(k) for k, _ in pairs):
        return text
    return urlencode(
        [(k, "REDACTED" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="/"
    )


def object_name(link: str) -> str:
    """An object's name in a job: the last element of its link's path, percent-decoded.

    Query and fragment are removed; the name is not yet checked (see :func:`check_name`).
    Keys of ``s3://``, ``gs://`` and ``ais://`` links are taken literally, as their
    own tools do: ``%``, ``?`` and ``#`` are part of the name there.

    Examples
    --------
    >>> from dlutils.names import object_name
    >>> object_name("https://host/data/train-0001.tar?sig=x#frag")
    'train-0001.tar'
    >>> object_name("s3://bucket/dir/")
    ''
    """
    scheme, sep, rest = link.partition("://")
    if sep and scheme.lower() in _BUCKET_SCHEMES:
        return rest.rsplit("/", 1)[-1]  # bucket keys are literal: no decoding, no query
    return unquote(urlsplit(link).path.rsplit("/", 1)[-1])


def name_from_url(url: str) -> str:
    """Derive a file name from a link, as pyvo does, percent-decoded.

    The last element of the link's path, query and fragment removed; when it has
    no ``.``, the base name of the first query value that has one. The result may
    be empty (``http://host/``) and is not yet checked: see :func:`check_name`.

    Examples
    --------
    >>> from dlutils.names import name_from_url
    >>> name_from_url("https://example.com/files/my%20file.pdf?user_id=123#top")
    'my file.pdf'
    >>> name_from_url("http://x/service?file=/location/myfile.pdf&size=large")
    'myfile.pdf'
    >>> name_from_url("https://example.com/files/README")
    'README'
    """
    parts = urlsplit(url)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if "." not in name and parts.query:
        for _, value in parse_qsl(parts.query, keep_blank_values=False):
            candidate = posixpath.basename(value.replace("\\", "/"))
            if "." in candidate.strip("."):
                return candidate
    return name


def name_from_content_disposition(value: str | None) -> str | None:
    """The file name a ``Content-Disposition`` header proposes, or ``None``.

    ``filename*`` (RFC 5987, e.g. ``UTF-8''na%C3%AFve.txt``) wins over ``filename``.
    The name is returned as the server sent it; callers check it with :func:`check_name`.

    Examples
    --------
    >>> from dlutils.names import name_from_content_disposition
    >>> name_from_content_disposition('attachment; filename="data.csv"')
    'data.csv'
    >>> name_from_content_disposition("attachment; filename*=UTF-8''na%C3%AFve.txt")
    'naïve.txt'
    """
    if not value:
        return None
    msg = Message()
    msg["content-disposition"] = value
    # The email package folds ``filename*`` into ``filename`` as a (charset, lang, value)
    # tuple; that encoded form is the one RFC 6266 says wins.
    params = msg.get_params(header="content-disposition") or []
    names = [value for key, value in params[1:] if key.lower() == "filename"]
    extended = [value for value in names if isinstance(value, tuple)]
    chosen = extended[0] if extended else (names[0] if names else None)
    name = collapse_rfc2231_value(chosen) if chosen else None
    return name or None


def check_name(name: str, *, what: str = "name", local: bool = True) -> str:
    """Check that ``name`` is a safe relative path and return it with ``/`` separators.

    Rejected, with :class:`~dlutils.UnsafePathError` (a ``ValueError``): an empty
    name, one ending in ``/``, an absolute path, one starting with ``~``, a drive
    letter, a NUL byte, or any ``.`` or ``..`` segment (``\\`` counts as a
    separator too, so Windows-style traversal is caught everywhere). Also refused,
    so that no object can overwrite a working file of dlutils: a segment ending in
    ``.part`` (where another object's bytes gather) or starting with ``.dlutils-``
    (the manifest and its journals). And a name no filesystem would take: a segment
    longer than 255 bytes in UTF-8 (250 for the file's own, which needs room for
    ``.part``), or a whole name longer than a path may be. With ``local=False`` (a
    path on a remote, saved under a name given elsewhere) these last two rules are
    not applied.

    Examples
    --------
    >>> from dlutils.names import check_name
    >>> check_name("train/shard-0001.tar")
    'train/shard-0001.tar'
    >>> check_name("../etc/passwd")
    Traceback (most recent call last):
    ...
    dlutils.errors.UnsafePathError: name '../etc/passwd' is not safe: it has a '..' segment; \
a name must be a relative path inside the destination, such as 'train/shard-0001.tar'
    >>> check_name("model.bin.part")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dlutils.errors.UnsafePathError: name 'model.bin.part' is not safe: it ends with '.part', \
the suffix of the file where the bytes of 'model.bin' gather...
    """
    example = (
        "a name must be a relative path inside the destination, such as 'train/shard-0001.tar'"
    )
    if not isinstance(name, str):
        raise InvalidInputError(f"{what} {name!r} is not valid: expected a string; {example}")

    def bad(reason: str) -> UnsafePathError:
        return UnsafePathError(f"{what} {name!r} is not safe: {reason}; {example}")

    if not name:
        raise bad("it is empty")
    if "\x00" in name:
        raise bad("it contains a NUL byte")
    if name.endswith(("/", "\\")):
        raise bad("it ends with a separator, so it names a folder, not a file")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise bad("it is an absolute path")
    if name.startswith("~"):
        raise bad("it starts with '~'")
    segments = re.split(r"[/\\]", name)
    for segment in segments:
        if segment == "..":
            raise bad("it has a '..' segment")
        if segment == ".":
            raise bad("it has a '.' segment")
        if segment == "":
            raise bad("it has an empty segment ('//')")
    if local:
        _check_working_names(name, segments, what)
        _check_lengths(name, segments, what)
    return "/".join(segments)


def _check_working_names(name: str, segments: list[str], what: str) -> None:
    """Refuse a name that a working file of dlutils has, or may have."""
    rename = f"to download it anyway, save it under another name: {_RENAME}"
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        folded = segment.lower()  # a case-insensitive filesystem (macOS) sees 'A.PART' as 'a.part'
        if folded.endswith(PART_SUFFIX):
            if index == last:
                reason = (
                    f"it ends with {PART_SUFFIX!r}, the suffix of the file where the bytes of "
                    f"{segment[: -len(PART_SUFFIX)]!r} gather while they download, so the two "
                    "would overwrite each other"
                )
            else:
                reason = f"its folder {segment!r} ends with {PART_SUFFIX!r}, as partial files do"
            raise UnsafePathError(f"{what} {name!r} is not safe: {reason}; {rename}")
        if folded.startswith(WORKING_PREFIX):
            raise UnsafePathError(
                f"{what} {name!r} is not safe: {segment!r} starts with {WORKING_PREFIX!r}, "
                "which names dlutils' own files (the manifest of the folder and its journals); "
                f"{rename}"
            )


def _check_lengths(name: str, segments: list[str], what: str) -> None:
    """Refuse a name the filesystem would refuse with "File name too long"."""
    rename = f"save it under a shorter name: {_RENAME}"
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        size = len(os.fsencode(segment))
        limit = NAME_MAX - len(PART_SUFFIX) if index == last else NAME_MAX
        if size > limit:
            kind = "its file name" if index == last else "a folder in it"
            raise UnsafePathError(
                f"{what} {_short(name)!r} is not safe: {kind} {_short(segment)!r} is {size} bytes "
                f"long in UTF-8, more than {limit} "
                f"(a name has at most {NAME_MAX} bytes, and {PART_SUFFIX!r} must fit); {rename}"
            )
    size = len(os.fsencode(name)) + len(PART_SUFFIX)
    if size >= PATH_MAX:
        raise UnsafePathError(
            f"{what} {_short(name)!r} is not safe: it is {size - len(PART_SUFFIX)} "
            f"bytes long, more than a path can be ({PATH_MAX - 1} bytes with {PART_SUFFIX!r}); "
            f"{rename}"
        )


def _short(text: str) -> str:
    """``text``, its middle cut out when long, for messages."""
    return text if len(text) <= 80 else f"{text[:50]}...{text[-20:]}"


def join_inside(folder: str | os.PathLike, name: str, *, what: str = "name") -> str:
    """Join a checked ``name`` under ``folder``; refuse anything that would land outside it.

    Besides :func:`check_name`, existing symbolic links along the way are resolved
    and must stay inside ``folder``, so a link planted in the destination cannot
    redirect a download elsewhere. Returns ``os.path.join(folder, name)`` (not
    resolved), so relative folders give relative paths.

    Examples
    --------
    >>> from dlutils.names import join_inside
    >>> join_inside("data", "train/a.bin")
    'data/train/a.bin'
    """
    clean = check_name(name, what=what)
    folder = os.fspath(folder)
    parts = clean.split("/")
    path = os.path.join(folder, *parts)
    # Only the components below ``folder`` can lead out of it, and only through a symbolic
    # link: one lstat each, and a full resolution only when a link is found.
    current = folder
    for part in parts:
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            break  # nothing deeper exists yet
        except OSError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):
                raise UnsafePathError(
                    f"{what} {name!r} is not safe under {folder!r}: {exc.strerror}"
                ) from exc
            raise
        if stat.S_ISLNK(mode):
            root = os.path.realpath(folder)
            resolved = os.path.realpath(current)
            if resolved != root and not resolved.startswith(root.rstrip(os.sep) + os.sep):
                raise UnsafePathError(
                    f"{what} {name!r} is not safe: through a symbolic link it resolves to "
                    f"{resolved!r}, outside the destination {folder!r}"
                )
    size = len(os.fsencode(path)) + len(PART_SUFFIX)
    if size >= PATH_MAX:
        raise UnsafePathError(
            f"{what} {name!r} is not safe under {folder!r}: the path would be {size} bytes "
            f"long with {PART_SUFFIX!r}, more than the {PATH_MAX - 1} a path can be; choose a "
            "destination with a shorter path, or a shorter name"
        )
    return path
