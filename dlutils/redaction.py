"""No credential leaves dlutils: redacted copies of exceptions, and a filter for its log."""

from __future__ import annotations

import copy
import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from .names import redact_text

__all__ = ["redacted", "redacting", "raise_clean", "RedactingFilter", "install_filter"]

F = TypeVar("F", bound=Callable[..., Any])

#: How deep a chain of causes is copied; the rest is cut.
_MAX_CHAIN = 8


def _clean(exc: BaseException, depth: int) -> bool:
    """Whether ``exc`` and its chain hold no text that redaction would change."""
    if depth > _MAX_CHAIN:
        return False
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an unprintable exception is copied, to be safe
        return False
    if redact_text(text) != text or redact_text(repr(exc.args)) != repr(exc.args):
        return False
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None and not _clean(linked, depth + 1):
            return False
    return True


def redacted(exc: BaseException, _depth: int = 0) -> BaseException:
    """``exc`` itself when it holds no credential, else a copy of the same type without them.

    The copy keeps the type (``except requests.ConnectionError`` still catches it), the
    attributes (``response``, ``request``...), the traceback, and redacted copies of its
    cause and context; its ``args`` become the one redacted message.

    Examples
    --------
    >>> import requests
    >>> from dlutils.redaction import redacted
    >>> clean = redacted(requests.ConnectionError("https://h/a.bin?X-Amz-Signature=abc refused"))
    >>> type(clean).__name__, str(clean)
    ('ConnectionError', 'https://h/a.bin?X-Amz-Signature=REDACTED refused')
    """
    if _clean(exc, _depth):
        return exc
    message = redact_text(str(exc))
    try:
        clone = copy.copy(exc)
    except Exception:  # noqa: BLE001 - a type that cannot be rebuilt from its args
        try:
            clone = type(exc).__new__(type(exc), message)
        except Exception:  # noqa: BLE001
            clone = RuntimeError(message)
    try:
        clone.args = (message,)
    except Exception:  # noqa: BLE001 - read-only args: keep the copy's own
        pass
    if redact_text(str(clone)) != str(clone):  # a __str__ of its own that ignores args
        clone = RuntimeError(f"{type(exc).__name__}: {message}")
    clone.__traceback__ = exc.__traceback__
    for name in ("__cause__", "__context__"):
        linked = getattr(exc, name)
        if linked is not None and linked is not exc:
            setattr(clone, name, redacted(linked, _depth + 1) if _depth < _MAX_CHAIN else None)
    clone.__suppress_context__ = exc.__suppress_context__
    return clone


def redacting(func: F) -> F:
    """Decorate a public function: whatever it raises leaves with its credentials removed."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            clean = redacted(exc)
            if clean is exc:
                raise
        raise_clean(clean)

    return wrapper  # type: ignore[return-value]


def raise_clean(clean: BaseException) -> NoReturn:
    """Raise a copy made by :func:`redacted` (call it outside any ``except`` block, so that
    Python does not set the original, unredacted exception as its context)."""
    raise clean


class RedactingFilter(logging.Filter):
    """Removes credentials from every record of the ``dlutils`` logger before any handler.

    The message is formatted and redacted (its ``args`` are then empty); an exception
    attached with ``exc_info`` is replaced by its redacted copy (:func:`redacted`) and its
    text rendered, redacted, into ``exc_text``, which formatters use as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format: log what was given
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact_text(message), ()
        info = record.exc_info
        if info and info[1] is not None:
            clean = redacted(info[1])
            record.exc_info = (type(clean), clean, info[2])
            text = "".join(traceback.format_exception(type(clean), clean, info[2]))
            record.exc_text = redact_text(text.rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_filter(logger: logging.Logger) -> None:
    """Add one :class:`RedactingFilter` to ``logger`` (a second call adds none)."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
