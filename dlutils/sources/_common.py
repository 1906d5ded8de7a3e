"""What every source does on the local side: is the file here current, record it.

Also the one way to wake a read blocked on a urllib3 response in another thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..checksums import Checksum, file_digest, parse_checksum
from ..destinations import check_local, is_store, resolve
from ..errors import CacheMismatchWarning, InvalidInputError
from ..freshness import Manifest, ObjectAttrs, only_size_compares, same_object
from ..progress import TqdmCallback
from ..transfer import Fetched, TransferOptions, TransferResult

__all__ = [
    "VERIFIED",
    "cache_mode",
    "trusted",
    "names_a_folder",
    "is_current",
    "verify_cached",
    "hit",
    "with_verified",
    "record",
    "keeping",
    "interrupt",
    "shutdown",
    "SourceObject",
    "place",
]

log = logging.getLogger("dlutils")

#: ``cache="verified"``: a file whose checksum is known good is kept with no request at all.
VERIFIED = "verified"
#: Digests a manifest record can hold, strongest first.
_RECORDED = ("sha256", "md5", "crc32c")


@dataclass
class SourceObject:
    """One object of a source, as the store path (:mod:`dlutils.stores`) streams it.

    Each source builds it with the same function its own ``fetch_*`` uses to open the
    object, so one place per source knows how: ``remote(attrs)`` is the
    :class:`~dlutils.transfer.Remote` (pinned to ``attrs`` where the source can pin),
    ``stat()`` asks the source for the object's attributes (one HEAD or metadata
    request), ``checksum(attrs)`` is the digest the source vouches for (``"md5:..."``,
    or ``None``), and ``compared(attrs)`` what of them is compared and recorded.
    """

    #: The link as records name it (no credential).
    source: str
    #: The object's own name (last path element): its name in a destination folder.
    name: str
    #: What a listing said of it (``None``: unknown until :attr:`stat` is called).
    known: ObjectAttrs | None
    stat: Callable[[], ObjectAttrs]
    remote: Callable[[ObjectAttrs | None], Any]
    checksum: Callable[[ObjectAttrs | None], str | None] = lambda attrs: None
    compared: Callable[[ObjectAttrs], ObjectAttrs] = lambda attrs: attrs
    #: Whether the remote must be pinned to attributes asked first (a GCS generation).
    needs_attrs: bool = False


def place(
    link: str,
    local_filepath: Any,
    options: TransferOptions,
    fetch_local: Callable[[str, Any, TransferOptions], Fetched],
) -> str:
    """What a pure function (``aws_download``...) returns: ``link`` fetched by its source's
    ``fetch_local`` into a local path (a ``file://`` URL is its path), or streamed into an
    object store (:func:`dlutils.stores.fetch_to_store`) when ``local_filepath`` is one."""
    where = resolve(local_filepath, "local_filepath")
    if is_store(where):
        from ..stores import fetch_to_store

        return fetch_to_store(link, where, options).path
    return fetch_local(link, where, options).path


def cache_mode(cache: Any) -> bool | str:
    """``cache`` as dlutils reads it: ``True``, ``False`` or :data:`VERIFIED`.

    Any value that is not a string counts by its truth, as in pyvo (``cache=1``,
    ``cache=None``); of strings only ``"verified"`` is read, so a misspelt mode fails
    before any request instead of meaning ``True``.

    Examples
    --------
    >>> cache_mode(1), cache_mode(None), cache_mode("Verified")
    (True, False, 'verified')
    >>> cache_mode("offline")
    Traceback (most recent call last):
    ...
    dlutils.errors.InvalidInputError: cache='offline' is not valid: use True (ask the server \
whether a file already here is current), False (always download) or 'verified' (keep a file \
whose checksum is known good, with no request)
    """
    if not isinstance(cache, str):
        return bool(cache)
    if cache.strip().lower() == VERIFIED:
        return VERIFIED
    raise InvalidInputError(
        f"cache={cache!r} is not valid: use True (ask the server whether a file already here "
        "is current), False (always download) or 'verified' (keep a file whose checksum is "
        "known good, with no request)"
    )


def trusted(
    cache: Any,
    path: str | os.PathLike | None,
    checksum: str | Checksum | None,
    manifest: Manifest | None,
    *,
    listed: bool = False,
) -> bool:
    """Whether ``cache="verified"`` keeps the file at ``path`` without any request.

    Every source asks this first (it also checks ``cache``, so a bad value fails before
    any request). The file is known good when

    - the caller gave ``checksum`` and the file has it: it is hashed (in C, 1 MiB
      reads), as pooch does with a known hash; a mismatch is not trusted, and the
      usual path (server, warning, download) follows;
    - no checksum was given, and the folder's manifest holds a valid record (the file
      still has the size and modification time, in ns, it had when recorded) marked
      ``verified`` (:class:`~dlutils.freshness.ObjectAttrs`): dlutils checked that
      digest against the bytes when it placed the file. It is not hashed again;
    - or the valid record holds a digest the source sent that was never checked (a
      download made with ``cache=True``, a file kept by its size): the file is hashed
      once, and when it has that digest the record is marked ``verified``.

    A record with no digest (a server that sends only ``ETag`` and ``Last-Modified``),
    a file changed since it was recorded (size or mtime) or any other ``cache`` is not
    trusted: the server is asked, as with ``cache=True``. ``listed`` (attributes
    from a bucket listing are at hand) is not trusted either: the listing, fresher than
    the record and already paid for, decides as with ``cache=True``.
    """
    if cache_mode(cache) != VERIFIED or listed or path is None:
        return False
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    expected = parse_checksum(checksum)
    if expected is not None:
        try:
            known = file_digest(path, expected.algorithm) == expected.hexdigest
        except OSError:
            return False
        log.debug("%s: the given %s %s", path, expected.algorithm, "holds" if known else "differs")
        return known
    found = manifest.get(os.path.abspath(path)) if manifest is not None else None
    if found is None:
        log.debug("%s: no valid record; asking the server", path)
        return False
    if found.verified is not None:
        return True
    confirmed = _confirmed(found, path)  # a digest the source sent, never checked: check it now
    if confirmed.verified is None:
        log.debug("%s: no checksum on record holds for it; asking the server", path)
        return False
    record(manifest, path, confirmed)  # type: ignore[arg-type]
    return True


def names_a_folder(local_filepath: str | os.PathLike) -> bool:
    """An existing folder, or a path written with a trailing separator, means "name it inside".

    Every source asks this of a ``local_filepath`` first, so a URL given as one
    (``s3://bucket/x``) is refused here (:func:`dlutils.destinations.check_local`).
    """
    check_local(local_filepath, "local_filepath")
    text = os.fspath(local_filepath)
    return os.path.isdir(text) or text.endswith(("/", os.sep))


def is_current(target: str, remote: ObjectAttrs, manifest: Manifest | None, source: str) -> bool:
    """Whether the file at ``target`` is the object ``remote`` describes.

    With a valid manifest record, :func:`dlutils.freshness.same_object` decides (an
    ETag, version, checksum or Last-Modified that differs means fetch again), except
    when the record and the remote share nothing but a size (a server that sends only
    ``Content-Length``, :func:`dlutils.freshness.only_size_compares`): then the size
    decides, as for a file with no record. A record of another source (another link
    saved at the same path) that no checksum shows to be the same bytes means not
    current, with a :class:`~dlutils.CacheMismatchWarning` naming both. With no record,
    the sizes are compared as pyvo does: equal (or unknown) is current, and is
    recorded; different warns :class:`~dlutils.CacheMismatchWarning` in pyvo's words.
    """
    found = manifest.get(os.path.abspath(target)) if manifest is not None else None
    if found is not None:
        if same_object(found, remote):
            return True
        if found.source and remote.source and found.source != remote.source:
            # Placed here for another link (the same name, or the same explicit path):
            # only a matching checksum makes it current; never replaced silently.
            warnings.warn(
                f"{target} was downloaded from {found.source}, not from {remote.source}. "
                "Overwriting ...",
                CacheMismatchWarning,
                stacklevel=4,
            )
            return False
        if not only_size_compares(found, remote):
            log.debug("%s: %s is not known to be current; fetching it again", source, target)
            return False
    local_size = os.path.getsize(target)
    if remote.size is None or remote.size == local_size:
        if manifest is not None and found is None:
            record(manifest, target, replace(remote, verified=None))  # kept by size: unchecked
        return True
    warnings.warn(
        f"Found cached file but it has the wrong size. Overwriting ... ({target} has "
        f"{local_size} bytes, {source} has {remote.size})",
        CacheMismatchWarning,
        stacklevel=4,
    )
    return False


def verify_cached(path: str, checksum: str | Checksum | None) -> bool:
    """Whether the file at ``path`` has the ``checksum`` the caller gave (``None``: yes).

    A file already there is returned only when the expected checksum holds for it,
    whatever the manifest or the sizes say, as pooch does: it is hashed (1 MiB reads,
    the hashing in C). A mismatch warns :class:`~dlutils.CacheMismatchWarning`, and
    the caller downloads it again (then the engine checks the new bytes).

    Examples
    --------
    >>> import hashlib, os, tempfile, warnings
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"data")
    >>> verify_cached(path, "sha256:" + hashlib.sha256(b"data").hexdigest())
    True
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     verify_cached(path, "md5:" + hashlib.md5(b"other").hexdigest())
    False
    >>> caught[0].category.__name__
    'CacheMismatchWarning'
    """
    checksum = parse_checksum(checksum)
    if checksum is None:
        return True
    actual = file_digest(path, checksum.algorithm)
    if actual == checksum.hexdigest:
        return True
    warnings.warn(
        f"Found cached file {path} but its {checksum.algorithm} is {actual}, not the expected "
        f"{checksum.hexdigest}. Downloading it again ...",
        CacheMismatchWarning,
        stacklevel=4,
    )
    return False


def hit(path: str, verbose: bool, shown: str, *, how: str = "is current") -> Fetched:
    """A cache hit: say so when ``verbose`` (pyvo's words) and return it as skipped.

    Every source ends here for an object it keeps, so this is the one place that logs
    it (INFO); the one place that logs an object placed is :func:`dlutils.transfer.download`.
    ``how`` says why it is kept (``"is known good"``: by :func:`trusted`, no request).
    """
    if verbose:
        print(f"Found cached file {shown}.")
    log.info("%s %s, skipped", path, how)
    return Fetched(shown, True, os.path.getsize(path), 0)


def with_verified(
    attrs: ObjectAttrs,
    result: TransferResult,
    *,
    path: str | None = None,
    confirm: bool = False,
) -> ObjectAttrs:
    """Add what the transfer verified (size, checksum) to the attributes to record.

    The checksum the engine checked the bytes against (given, or the source's) is
    recorded with ``verified`` naming it. Any other digest in ``attrs`` is only what the
    source said; with ``confirm`` (``cache="verified"``) the strongest of them is checked
    now against the file placed at ``path`` (hashed in C, page cache hot) and marked
    ``verified`` when it holds, so that a re-run can trust the file with no request
    (:func:`trusted`). A digest that does not hold is logged and left unmarked.
    """
    attrs = replace(attrs, verified=None)  # vouched for here, or not at all
    checksum = result.checksum
    if checksum is not None and checksum.algorithm in _RECORDED:
        attrs = replace(
            attrs, **{checksum.algorithm: checksum.hexdigest}, verified=checksum.algorithm
        )
    elif confirm and path is not None:
        attrs = _confirmed(attrs, path)
    if attrs.size is None:
        attrs = replace(attrs, size=result.size)
    return attrs


def _confirmed(attrs: ObjectAttrs, path: str) -> ObjectAttrs:
    """``attrs`` with its strongest digest marked verified if the file at ``path`` has it."""
    algorithm = next((a for a in _RECORDED if getattr(attrs, a) is not None), None)
    if algorithm is None:
        return attrs
    try:
        actual = file_digest(path, algorithm)
    except OSError as exc:
        log.warning("cannot hash %s to confirm its %s: %s", path, algorithm, exc)
        return attrs
    if actual != getattr(attrs, algorithm):
        log.warning(
            "%s: its %s is %s, not the %s %s said; it will not be trusted without asking",
            path,
            algorithm,
            actual,
            getattr(attrs, algorithm),
            attrs.source or "the source",
        )
        return attrs
    return replace(attrs, verified=algorithm)


def record(manifest: Manifest, path: str, attrs: ObjectAttrs) -> None:
    """Record ``path`` in ``manifest``; a failure is logged, never raised."""
    try:
        manifest.put(os.path.abspath(path), attrs)
    except Exception:  # noqa: BLE001 - a download stays good without its record
        log.warning("cannot record %s in %s", path, manifest.root, exc_info=True)


def interrupt(raw: Any, close: Callable[[], Any]) -> None:
    """Wake a read blocked on urllib3 response ``raw`` in another thread; never block.

    The reader, woken, closes the response itself. Only when no socket can be found is
    ``close`` called, in a thread of its own: closing a response that another thread is
    reading waits for that read, and an abort must never hang the caller.
    """
    if not shutdown(raw):
        threading.Thread(target=close, name="dlutils-close", daemon=True).start()


def shutdown(raw: Any) -> bool:
    """Wake a read blocked on urllib3 response ``raw`` in another thread; True if done.

    Closing a socket does not wake a ``recv`` blocked on it in another thread;
    shutting it down does. The socket hangs off the pooled connection, or, once
    ``http.client`` took it over (``Connection: close``, HTTP/1.0), off the response.
    """
    buffered = getattr(getattr(raw, "_fp", None), "fp", None)
    sockets = (
        getattr(getattr(raw, "_connection", None), "sock", None),
        getattr(getattr(buffered, "raw", None), "_sock", None),
    )
    done = False
    for sock in sockets:
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
                done = True
            except OSError:
                pass
    return done


@contextlib.contextmanager
def keeping(
    options: TransferOptions, folder: str, source: str
) -> Iterator[tuple[Manifest | None, Any]]:
    """The manifest and progress bar of one fetch, closed after it when made here.

    The manifest is ``options.manifest`` (``False``: none), or the folder's own when it
    is ``None``; the bar is ``options.progress``, or a bar named ``source`` when
    ``options.verbose``.
    """
    own = options.manifest is None
    manifest = Manifest(folder or ".") if own else options.manifest
    keeper = manifest if isinstance(manifest, Manifest) else None
    progress = options.progress
    bar = progress if progress is not None else (TqdmCallback(source) if options.verbose else None)
    try:
        yield keeper, bar
    finally:
        if bar is not None and progress is None:
            bar.close()
        if own and keeper is not None:
            keeper.close()
