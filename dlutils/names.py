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
    "redact_text",
    "forwardable",
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

    A link written without its scheme is read as one, as the AIStore downloader does:

    >>> redact("bob:hunter2@example.org/a.bin")
    'bob:REDACTED@example.org/a.bin'
    """
    if "://" not in link and "@" in link.split("/", 1)[0]:
        return redact("//" + link)[2:]  # host part first: 'user:password@host/...'
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


#: Whether this system's paths take a backslash for a separator (Windows): there a bucket
#: key's backslash must separate folders too, since it cannot be part of a file's name.
BACKSLASH_SEPARATES = "\\" in (os.sep, os.altsep)


def check_name(name: str, *, what: str = "name", local: bool = True, backslash: bool = True) -> str:
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
    not applied. With ``backslash=False`` (bucket keys, where ``a/b`` and ``a\\b``
    are two objects) a ``\\`` is part of a name, not a separator, on a system whose
    paths do not use it (:data:`BACKSLASH_SEPARATES`), as ``aws s3 sync`` keeps it.

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
    seps = "/\\" if backslash or BACKSLASH_SEPARATES else "/"
    if name.endswith(tuple(seps)):
        raise bad("it ends with a separator, so it names a folder, not a file")
    if name.startswith(tuple(seps)) or re.match(r"^[A-Za-z]:", name):
        raise bad("it is an absolute path")
    if name.startswith("~"):
        raise bad("it starts with '~'")
    segments = re.split(r"[/\\]", name) if len(seps) == 2 else name.split("/")
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


def join_inside(
    folder: str | os.PathLike, name: str, *, what: str = "name", backslash: bool = True
) -> str:
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
    clean = check_name(name, what=what, backslash=backslash)
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


# ------------------------------------------------------------------- secrets in any text

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LINK = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_SECRET_WORD = _SECRET_PARAM.pattern[1:-1]  # sig|signature|token|...
# ``name=value`` in a query, a fragment or prose; the value ends at the next separator.
# Replaced when the name looks secret; the weak words (key, session, policy, auth), which
# name object keys and sessions in ordinary messages, only in a query (after ? & # ;).
_NAME_CHARS = r"[\w.\-%\[\]]"
_PAIR = re.compile(
    rf"(?<!{_NAME_CHARS})(?P<name>{_NAME_CHARS}+)(?P<eq>=|%3D)"
    r"(?P<value>[^\s&'\"<>#;,)\]}]+)",
    re.IGNORECASE,
)
_STRONG_PARAM = re.compile("sig|signature|token|secret|password|passwd|credential", re.I)
_QUOTED_PAIR = re.compile(
    r"(?<![\w.\-])(?P<name>[\w.\-]+)(?P<eq>\s*[=:]\s*)(?P<q>['\"])(?P<value>[^'\"]*)(?P=q)"
)
#: Words without which a text holds nothing :func:`redact_text` would change.
_ANY_SECRET = re.compile(rf"://|{_SECRET_WORD}|cookie|bearer|hf_|ya29\.|gh[pousr]_", re.I)
# ``'X-Api-Key': 'value'`` in a dict's repr (headers; ``b'value'`` in botocore's), ``"token":
# "value"`` in JSON.
_QUOTED_ITEM = re.compile(
    r"(?P<name>(?P<q1>['\"])(?P<key>[\w.\-]+)(?P=q1)\s*:\s*b?)(?P<q>['\"])(?P<value>[^'\"]*)(?P=q)"
)
# Header lines: ``Authorization: Bearer x``, ``Cookie: a=b``, ``X-Api-Key: x``: a name and a
# colon (found first, so that ``https:`` or ``failed:`` never swallow what follows), then a value.
_HEADER_NAME = re.compile(r"(?<![\w-])(?P<name>[\w-]+)[ \t]*:[ \t]*")
_HEADER_VALUE = re.compile(r"[^\r\n'\",}]+")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_HEADER_END = re.compile(r"-(?:key|token|secret|signature|password)$", re.I)


def _secret_header(name: str) -> bool:
    """Whether a header of this name carries a credential."""
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS
        or bool(_SECRET_HEADER_END.search(lowered))
        or (lowered.startswith("x-") and bool(_SECRET_PARAM.search(lowered)))
    )


_AUTH_SCHEME = re.compile(r"^(basic|bearer|token|digest|aws4-hmac-sha256|negotiate)\s+", re.I)
_BEARER = re.compile(r"\b(Bearer|token)\s+(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{12,}")
_KNOWN_TOKENS = re.compile(r"\bhf_[A-Za-z0-9]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bya29\.[\w.-]+")
# botocore.auth logs "Signature:" and the hex signature on the next line: a request's
# SigV4 signature can be replayed for that request until it expires.
_SIGNATURE_LINE = re.compile(r"\b(Signature)[ \t]*:\s*[0-9a-fA-F]{32,}")


def _redact_headers(text: str) -> str:
    """Replace the values of header-like ``Name: value`` text whose name carries a credential."""
    parts, done = [], 0
    for match in _HEADER_NAME.finditer(text):
        if match.start() < done or not _secret_header(match.group("name")):
            continue
        value = _HEADER_VALUE.match(text, match.end())
        if value is None:
            continue
        scheme = _AUTH_SCHEME.match(value.group(0))
        parts += [text[done : match.end()], scheme.group(0) if scheme else "", "REDACTED"]
        done = value.end()
    return "".join(parts) + text[done:] if parts else text


def _quoted_item(match: re.Match) -> str:
    key = match.group("key")
    if not (_SECRET_PARAM.search(key) or _secret_header(key)):
        return match.group(0)
    return f"{match.group('name')}{match.group('q')}REDACTED{match.group('q')}"


def _pair(match: re.Match) -> str:
    name, start = match.group("name"), match.start()
    in_query = start > 0 and match.string[start - 1] in "?&#;"
    # a signature, token, password... wherever it stands; key=, session=, auth=, policy=
    # only as a query parameter
    if _STRONG_PARAM.search(name) or (in_query and _SECRET_PARAM.search(name)):
        return f"{name}{match.group('eq')}REDACTED"
    return match.group(0)


def _quoted_pair(match: re.Match) -> str:
    if not _STRONG_PARAM.search(match.group("name")):
        return match.group(0)
    quote = match.group("q")
    return f"{match.group('name')}{match.group('eq')}{quote}REDACTED{quote}"


def redact_text(text: str) -> str:
    """Return ``text`` with every credential found in it replaced by ``REDACTED``.

    Meant for any message that leaves dlutils, whoever wrote it (requests, urllib3,
    botocore or dlutils itself): whole links (see :func:`redact`), bare paths with a
    query (``/a.bin?X-Amz-Signature=...``, as urllib3 quotes them), ``name=value`` pairs
    whose name looks secret (``token=``, ``sig=``, ``password=``...), header text
    (``Authorization: Bearer ...``, ``Cookie: ...``, ``X-Api-Key: ...``) and tokens of
    known forms (``hf_...``). Applying it twice changes nothing more.

    Examples
    --------
    >>> from dlutils.names import redact_text
    >>> redact_text("Max retries exceeded with url: /a.bin?X-Amz-Signature=abc&part=1")
    'Max retries exceeded with url: /a.bin?X-Amz-Signature=REDACTED&part=1'
    >>> redact_text("GET https://bob:hunter2@host/x failed; Authorization: Bearer abc.def")
    'GET https://bob:REDACTED@host/x failed; Authorization: Bearer REDACTED'
    """
    if not isinstance(text, str):
        text = str(text)
    if not _ANY_SECRET.search(text):
        return text
    if "://" in text:
        text = _LINK.sub(lambda m: redact(m.group(0)), text)
    text = _QUOTED_ITEM.sub(_quoted_item, text)
    text = _redact_headers(text)
    text = _QUOTED_PAIR.sub(_quoted_pair, text)
    text = _PAIR.sub(_pair, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} REDACTED", text)
    text = _SIGNATURE_LINE.sub(lambda m: f"{m.group(1)}: REDACTED", text)
    return _KNOWN_TOKENS.sub("REDACTED", text)


#: What makes parsers disagree on a link's host: ``http://other\@own/`` is ``own`` to urlsplit
#: but ``other`` to urllib3, curl and browsers (a backslash ends the authority there).
_AMBIGUOUS_AUTHORITY = re.compile(r"[\\\s\x00-\x1f\x7f]")


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or not parts.hostname or _AMBIGUOUS_AUTHORITY.search(parts.netloc):
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or _DEFAULT_PORTS.get(scheme)


def forwardable(from_url: str, to_url: str) -> bool:
    """Whether credentials given for ``from_url`` may be sent to ``to_url`` (a redirect).

    Only to the same origin: the same scheme, host and port (default ports count as
    given). Another host, another port, or any change of scheme (``https`` down to
    ``http`` above all) forbids them: custom headers, ``Authorization``, ``auth=``,
    a ``Cookie`` header and tokens then stay behind, as curl does. Pure and independent
    of the transport: every transport asks it at every hop.

    Examples
    --------
    >>> from dlutils.names import forwardable
    >>> forwardable("https://host/a", "https://HOST:443/b?x=1")
    True
    >>> forwardable("https://host/a", "http://host/a")
    False
    >>> forwardable("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/a")
    False
    """
    origin = _origin(from_url)
    return origin is not None and origin == _origin(to_url)
