"""What every source does on the local side: is the file here current, record it.

Also the one way to wake a read blocked on a urllib3 response in another thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..checksums import Checksum, file_digest, parse_checksum
from ..errors import CacheMismatchWarning
from ..freshness import Manifest, ObjectAttrs, only_size_compares, same_object
from ..transfer import Fetched, TransferResult

__all__ = [
    "names_a_folder",
    "is_current",
    "verify_cached",
    "hit",
    "with_verified",
    "record",
    "interrupt",
    "shutdown",
]

log = logging.getLogger("dlutils")


def names_a_folder(local_filepath: str | os.PathLike) -> bool:
    """An existing folder, or a path written with a trailing separator, means "name it inside"."""
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
            record(manifest, target, remote)
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


def hit(path: str, verbose: bool, shown: str) -> Fetched:
    """A cache hit: say so when ``verbose`` (pyvo's words) and return it as skipped.

    Every source ends here for an object it keeps, so this is the one place that logs
    it (INFO); the one place that logs an object placed is :func:`dlutils.transfer.download`.
    """
    if verbose:
        print(f"Found cached file {shown}.")
    log.info("%s is current, skipped", path)
    return Fetched(shown, True, os.path.getsize(path), 0)


def with_verified(attrs: ObjectAttrs, result: TransferResult) -> ObjectAttrs:
    """Add what the transfer verified (size, checksum) to the attributes to record."""
    checksum = result.checksum
    if checksum is not None and checksum.algorithm in ("md5", "sha256", "crc32c"):
        if getattr(attrs, checksum.algorithm) is None:
            attrs = replace(attrs, **{checksum.algorithm: checksum.hexdigest})
    if attrs.size is None:
        attrs = replace(attrs, size=result.size)
    return attrs


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
