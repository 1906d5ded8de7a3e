"""Open the files dlutils creates (``.part``, manifest, job store, logs) without following links.

A symbolic link, a hard link or a special file planted where dlutils keeps a working
file would let a download write outside its destination; every such entry is refused
with :class:`~dlutils.UnsafePathError`, naming the path and saying to remove it.
SQLite opens its files itself and cannot be asked not to follow links, so a database
is checked (with its ``-wal``, ``-shm`` and ``-journal`` companions) just before it is
opened and again just after: a link swapped in between those two moments is not seen
(a narrow race, open only to whoever can already write in that folder).
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import UnsafePathError

__all__ = ["open_working_file", "check_database", "confirm_database"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: The files SQLite keeps beside a database, besides the database itself.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _refusal(path: str, what: str, reason: str) -> UnsafePathError:
    return UnsafePathError(
        f"{what} {path!r} {reason}; dlutils writes only to files it created itself, so it "
        f"refuses to use this one: remove {path!r} (nothing was written through it) and try again"
    )


def _check(st: os.stat_result, path: str, what: str) -> None:
    """Refuse anything but a regular file with a single name."""
    if stat.S_ISLNK(st.st_mode):
        raise _refusal(path, what, "is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _refusal(path, what, "is not a regular file")
    if st.st_nlink > 1:
        raise _refusal(path, what, f"has {st.st_nlink} hard links (another name shares its bytes)")


def open_working_file(path: str, flags: int, mode: int = 0o644, *, what: str = "file") -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``, checked on the descriptor.

    Returns the descriptor of a regular file with one link.

    Raises
    ------
    dlutils.UnsafePathError
        ``path`` is a symbolic link, not a regular file, or has other hard links.
    OSError
        The file cannot be opened for another reason.

    Examples
    --------
    >>> import os, tempfile
    >>> from dlutils.workfiles import open_working_file
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     part = os.path.join(folder, "a.bin.part")
    ...     os.symlink("/tmp/elsewhere", part)
    ...     open_working_file(part, os.O_RDWR | os.O_CREAT)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dlutils.errors.UnsafePathError: file '.../a.bin.part' is a symbolic link; ...
    """
    if not _NOFOLLOW:  # pragma: no cover - Windows: no links to follow in practice
        _check_existing(path, what)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        # Linux and macOS say ELOOP for a link refused by O_NOFOLLOW, FreeBSD EMLINK.
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            _check_existing(path, what)
        raise
    try:
        _check(os.fstat(fd), path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_existing(path: str, what: str) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    _check(st, path, what)
    return st


def check_database(path: str, *, what: str = "database") -> os.stat_result | None:
    """Check a SQLite file and its companions before SQLite opens them.

    Returns the database's ``lstat`` (``None`` when it does not exist yet), to give
    to :func:`confirm_database` once the connection is open.

    Raises
    ------
    dlutils.UnsafePathError
        The database or one of its ``-wal``, ``-shm``, ``-journal`` files is a link or
        not a regular file.
    """
    found = _check_existing(path, what)
    for suffix in SQLITE_COMPANIONS:
        _check_existing(path + suffix, what)
    return found


def confirm_database(path: str, before: os.stat_result | None, *, what: str = "database") -> None:
    """After connecting: the database (and companions) are still what :func:`check_database` saw.

    Raises
    ------
    dlutils.UnsafePathError
        Something was swapped in meanwhile.
    """
    now = check_database(path, what=what)
    if before is not None and (
        now is None or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino)
    ):
        raise _refusal(path, what, "was replaced while it was being opened")
