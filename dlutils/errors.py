"""The exceptions and warnings dlutils raises for its own failures."""

from __future__ import annotations

__all__ = [
    "DownloadError",
    "InvalidInputError",
    "UnsafePathError",
    "UnsupportedSchemeError",
    "IncompleteDownloadError",
    "ChecksumMismatchError",
    "RemoteChangedError",
    "SizeMismatchError",
    "OverlongBodyError",
    "ContentEncodingError",
    "DownloadAborted",
    "DownloadTimeoutError",
    "JobFailedError",
    "JobNotFoundError",
    "JobStateError",
    "CacheMismatchWarning",
]


class DownloadError(Exception):
    """Root of every error dlutils raises for its own failures.

    Errors of the source libraries (``requests.HTTPError``, botocore's
    ``ClientError``) pass through unchanged where their users expect them.
    """


class InvalidInputError(DownloadError, ValueError):
    """An argument was malformed: the message names the value and what would be right."""


class UnsafePathError(InvalidInputError):
    """A name or a path dlutils would write cannot be used safely.

    The name would land outside its destination folder (``..``, an absolute path, ``~/``,
    a symbolic link), would overwrite a working file of dlutils (``NAME.part``,
    ``.dlutils-manifest.sqlite``), or is longer than a file name can be; or a link, a
    hard link or a special file sits where dlutils keeps a working file.
    """


class UnsupportedSchemeError(InvalidInputError):
    """A link's scheme is not one dlutils reads."""


class IncompleteDownloadError(DownloadError):
    """The connection ended before all the bytes arrived; the ``.part`` file is kept for resume."""

    def __init__(self, message: str, *, received: int | None = None, expected: int | None = None):
        super().__init__(message)
        self.received = received
        self.expected = expected


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the expected checksum; nothing was placed."""

    def __init__(self, message: str, *, algorithm: str = "", expected: str = "", actual: str = ""):
        super().__init__(message)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class SizeMismatchError(DownloadError):
    """The object's size differs from the size it was expected to have; nothing was placed."""


class RemoteChangedError(DownloadError):
    """The remote object changed while it was being downloaded in pieces.

    Also raised when a range answer does not belong to the version a ``.part`` is
    pinned to (a server honouring ``Range`` but not ``If-Range``), or its
    ``Content-Range`` contradicts itself, again after a restart from zero.
    """


class OverlongBodyError(IncompleteDownloadError):
    """A response carried more bytes than it announced; none of its bytes were kept."""


class ContentEncodingError(DownloadError):
    """The server compressed the body with a ``Content-Encoding`` dlutils cannot undo.

    Nothing was placed: compressed bytes are never stored as if they were the object.
    """


class DownloadAborted(DownloadError):
    """The download was stopped on request; its ``.part`` file is kept for resume."""


class DownloadTimeoutError(DownloadError, TimeoutError):
    """An attempt at one object ran out of its time limit; its ``.part`` file is kept for resume."""


class JobFailedError(DownloadError):
    """Some objects of a job failed; the others finished. ``errors`` lists (name, error)."""

    def __init__(self, errors: list[tuple[str, str]] | tuple[tuple[str, str], ...], paths=()):
        self.errors = list(errors)
        self.paths = list(paths)
        shown = "\n".join(f"  {name}: {error}" for name, error in self.errors)
        super().__init__(f"{len(self.errors)} object(s) failed:\n{shown}")


class JobNotFoundError(DownloadError, LookupError):
    """No job has this id."""


class JobStateError(DownloadError):
    """The job's state does not allow this (removing a running job, waiting on an unstarted one)."""


class CacheMismatchWarning(UserWarning):
    """A file already on disk does not match the remote object and is being replaced."""
