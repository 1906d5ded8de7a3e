"""The ``.part`` file, the engine's whole write side: opened and locked by one process at a
time (:func:`_lock_part`), written, emptied, hashed, verified and placed under its final
name (:class:`_Writes`, a side of the transfer), or left for resume."""

from __future__ import annotations

import errno
import logging
import os
import time

from ..checksums import file_digest, new_hasher
from ..errors import (
    ChecksumMismatchError,
    DownloadAborted,
    DownloadError,
    IncompleteDownloadError,
    SizeMismatchError,
)
from ..workfiles import open_working_file
from .protocols import TransferResult, _Settings
from .retries import _quietly

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("dlutils")


def _check_placed_by_other(s: _Settings) -> None:
    """The file another process placed must have the size and checksum this caller expects."""
    if s.expected_size is not None:
        size = os.path.getsize(s.path)
        if size != s.expected_size:
            raise SizeMismatchError(
                f"{s.path!r} was placed by another process downloading {s.remote.display}, but "
                f"it is {size} bytes, not the expected {s.expected_size}"
            )
    if s.checksum is None:
        return
    actual = file_digest(s.path, s.checksum.algorithm)
    if actual != s.checksum.hexdigest:
        raise ChecksumMismatchError(
            f"{s.path!r} was placed by another process downloading {s.remote.display}, but "
            f"its {s.checksum.algorithm} is {actual}, not the expected {s.checksum.hexdigest}",
            algorithm=s.checksum.algorithm,
            expected=s.checksum.hexdigest,
            actual=actual,
        )


def _remove_if_empty(part: str, fd: int) -> None:
    """Leave no empty ``.part`` behind a failure: only one with bytes is worth resuming."""
    try:
        st = os.fstat(fd)
        if st.st_size == 0 and os.stat(part).st_ino == st.st_ino:
            os.unlink(part)
    except OSError:
        pass


def _open_part(s: _Settings) -> int:
    """Open (create) the ``.part``; its folder is created only when missing, so the objects
    of a folder that exists cost no ``mkdir``."""
    made = False
    while True:
        try:  # never through a link: a .part planted as a symlink would write elsewhere
            return open_working_file(s.part, os.O_RDWR | os.O_CREAT, what="partial file")
        except FileNotFoundError as exc:
            if made:
                raise DownloadError(f"cannot write {s.part!r}: {exc.strerror or exc}") from exc
            folder = os.path.dirname(s.path) or "."
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as made_exc:
                raise DownloadError(
                    f"cannot create the folder {folder!r} for {s.path!r}: "
                    f"{made_exc.strerror or made_exc}"
                ) from made_exc
            made = True
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:  # a file where a folder should be
                folder = os.path.dirname(s.path) or "."
                raise DownloadError(
                    f"cannot create the folder {folder!r} for {s.path!r}: {exc.strerror or exc}"
                ) from exc
            raise DownloadError(f"cannot write {s.part!r}: {exc.strerror or exc}") from exc


def _lock_part(s: _Settings, *, wait: bool = True) -> int | None:
    """Open and exclusively lock the ``.part`` file; ``None`` if another process placed it.

    With ``wait=False``, a ``.part`` another process holds raises :class:`BlockingIOError`
    at once instead of being waited for.
    """
    while True:
        fd = _open_part(s)
        if fcntl is None:
            return fd
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    raise
                if not waited:
                    log.debug("waiting for another process downloading %s", s.path)
                    waited = True
                if s.abort is not None and s.abort.wait(0.1):
                    os.close(fd)
                    raise DownloadAborted(f"aborted while waiting for {s.path!r}") from None
                if s.abort is None:
                    time.sleep(0.1)
        ino = os.fstat(fd).st_ino
        try:
            if os.lstat(s.part).st_ino == ino:
                return fd
        except FileNotFoundError:
            pass
        # The file we locked was renamed away by the process that held the lock.
        try:
            finished_elsewhere = os.stat(s.path).st_ino == ino
        except FileNotFoundError:
            finished_elsewhere = False
        os.close(fd)
        if finished_elsewhere:
            return None


def _check_still_ours(part: str, fd: int, path: str) -> None:
    """Refuse to place anything but the file this transfer opened and locked.

    Another file at ``part`` (a link, or another object's file moved there) is never
    moved to ``path``. The check and the rename are two steps: a file swapped in between
    them by another process is not caught (a narrow race).
    """
    ours = os.fstat(fd)
    try:
        found = os.lstat(part)
    except FileNotFoundError:
        found = None
    if found is None or (found.st_dev, found.st_ino) != (ours.st_dev, ours.st_ino):
        raise DownloadError(
            f"{part!r} is no longer the file dlutils wrote (it was "
            f"{'removed' if found is None else 'replaced'} during the download); nothing was "
            f"moved to {path!r}. Check what else writes in that folder, then download again."
        )


class _Writes:
    """The write side of :class:`~dlutils.transfer.engine._Transfer`: the one place bytes go
    into its ``.part`` (:meth:`_write`), it is emptied, hashed, verified and placed
    (:meth:`_finish`, ``os.replace``)."""

    def _truncate(self) -> None:
        if os.fstat(self.fd).st_size:
            self.discards += 1  # bytes thrown away: the attempt after this is no resume
        os.ftruncate(self.fd, 0)
        self._forget()
        self.hasher = None
        self.hashed = 0
        self.generation += 1

    def _write(self, data: bytes, position: int) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self.fd, view, position)
                view = view[written:]
                position += written
        except OSError as exc:
            raise DownloadError(f"cannot write {self.s.part!r}: {exc.strerror or exc}") from exc

    def _hash_file(self, start: int, stop: int) -> None:
        position = start
        while position < stop:
            block = os.pread(self.fd, min(self.s.tunables.chunk_size, stop - position), position)
            if not block:
                break
            self.hasher.update(block)
            position += len(block)
        self.hashed = position

    def _finish(self, total: int | None) -> TransferResult:
        s = self.s
        size = os.fstat(self.fd).st_size
        if total is not None and size != total:
            raise IncompleteDownloadError(
                f"{s.part!r} holds {size} bytes, {total} expected", received=size, expected=total
            )
        self._check_size(size)
        if s.checksum is not None:
            if self.hasher is None or self.hashed != size:
                self.hasher = new_hasher(s.checksum.algorithm)
                self.hashed = 0
                self._hash_file(0, size)
            actual = self.hasher.hexdigest()
            if actual != s.checksum.hexdigest:
                self._truncate()
                _quietly(lambda: os.unlink(s.part))
                raise ChecksumMismatchError(
                    f"{s.remote.display} does not have the expected {s.checksum.algorithm}: "
                    f"expected {s.checksum.hexdigest}, got {actual}; the file was not kept. "
                    "Check the checksum, or whether the server now holds another version.",
                    algorithm=s.checksum.algorithm,
                    expected=s.checksum.hexdigest,
                    actual=actual,
                )
        if s.fsync:
            os.fsync(self.fd)
        _check_still_ours(s.part, self.fd, s.path)
        os.replace(s.part, s.path)
        return TransferResult(
            path=s.path,
            size=size,
            received=self.received,
            resumed_from=self.resumed_from,
            segments=self.segments_used,
            validator=self.validator,
            headers=self.headers or {},
            checksum=s.checksum,
        )
