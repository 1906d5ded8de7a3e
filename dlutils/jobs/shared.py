"""What the job's runner and its Dask batches share about one task: the options it adds
to a fetch, the refusal of a task that cannot run, the transport's timeout under a job's
time limit, and an error as the job's status shows it (no credential)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import UnsafePathError
from ..names import redact, redact_text
from .tasks import _Task


def _transport_timeout(limit: float | None) -> tuple[float, float] | None:
    """The (connect, read) silence a transport allows under a job's time limit per attempt.

    The job's limit is enforced by the engine; the transport's own limits stay the
    sources' defaults (30 s to connect, 120 s of silence), lowered to just above the
    job's limit so that they never fire first and turn a timeout into a retry.
    """
    if limit is None:
        return None
    return (min(30.0, limit + 1.0), min(120.0, limit + 1.0))


def _raise_if_unusable(task: _Task) -> None:
    if task.error:
        raise task.error_type(task.error)
    if os.path.isdir(task.path):
        # The sources read an existing folder as "save inside it"; a job always means the
        # file itself, so two objects such as 'x' and 'x/x' must not share one file.
        raise UnsafePathError(
            f"object {task.name!r} would be saved at {task.path!r}, which is a folder "
            "(it holds other objects whose names start with this one)"
        )


def _task_extras(task: _Task) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if task.remote_attrs is not None:
        extras["remote_attrs"] = task.remote_attrs
    if task.checksum:
        extras["checksum"] = task.checksum
    if task.size is not None:
        extras["expected_size"] = task.size
    return extras


def _describe(exc: BaseException, link: str) -> str:
    """The error of one object as its status shows it: type, message, link; no credential."""
    message = f"{type(exc).__name__}: {exc}"
    if link and link in message:
        message = message.replace(link, redact(link))
    message = redact_text(message)  # whatever library wrote it, in whatever form
    shown = redact(link) if link else ""
    if shown and shown not in message:
        message = f"{message} ({shown})"
    return message
