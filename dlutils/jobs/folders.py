"""The folders of a job's objects: each checked and created once, checked again if it changes.

A task's path was checked when the task was made (:func:`dlutils.names.join_inside`),
but a job runs later: a link planted in the destination meanwhile would lead its
objects out of it. :class:`Folders` checks each folder again when its first object
runs, creates it, and remembers the directory it found (device and inode, links
followed); later objects cost one ``stat``, and a folder that is now another
directory (replaced, or a link planted along the way) is checked again from the
start. Objects directly in the destination need nothing: the destination is the
caller's choice.
"""

from __future__ import annotations

import os
import posixpath
import stat

from ..errors import DownloadError, UnsafePathError
from ..names import join_inside

__all__ = ["Folders"]


class Folders:
    """The checked folders under ``dest`` (thread-safe: at worst two threads check one twice)."""

    def __init__(self, dest: str):
        self.dest = dest
        #: folder path -> (st_dev, st_ino) of the directory it was checked to be
        self._seen: dict[str, tuple[int, int]] = {}

    def prepare(self, name: str, path: str) -> None:
        """Make the folder of ``path`` (the object ``name``) ready, inside ``dest``.

        Raises
        ------
        dlutils.UnsafePathError
            A link along the way now leads out of the destination.
        dlutils.DownloadError
            The folder cannot be created.
        """
        inner = posixpath.dirname(name)
        if not inner:
            return
        folder = os.path.dirname(path)
        seen = self._seen.get(folder)
        if seen is not None:
            try:
                st = os.stat(folder)
            except OSError:
                pass  # gone: checked and made again below
            else:
                if (st.st_dev, st.st_ino) == seen and stat.S_ISDIR(st.st_mode):
                    return
        join_inside(self.dest, inner, what="folder of object")  # never create through a link
        try:
            os.makedirs(folder, exist_ok=True)
            st = os.stat(folder)
        except OSError as exc:
            raise DownloadError(
                f"cannot create the folder {folder!r} for {path!r}: {exc.strerror or exc}"
            ) from exc
        # Checked again, now that it exists, and the directory it leads to unchanged since:
        # a link planted in between is refused, not remembered.
        join_inside(self.dest, inner, what="folder of object")
        again = os.stat(folder)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(
                f"folder {folder!r} of object {name!r} changed while it was being checked; "
                "check what else writes in the destination, then download again"
            )
        self._seen[folder] = (st.st_dev, st.st_ino)
