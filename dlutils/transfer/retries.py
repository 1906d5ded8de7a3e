"""Retrying a request before the engine takes over, and giving up with the count said."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ..control import AbortEvent, opening, timed_out
from ..errors import DownloadAborted, IncompleteDownloadError
from ..retry import AttemptBudget, RetryPolicy
from .protocols import Body

log = logging.getLogger("dlutils")


def _quietly(func: Callable[[], Any]) -> None:
    try:
        func()
    except Exception:  # noqa: BLE001 - closing a broken body may fail in many ways
        pass


def _give_up(exc: BaseException, attempts: int) -> None:
    """Raise what ends an object after ``attempts``: ``exc``, saying how many were made."""
    if type(exc) is IncompleteDownloadError:
        raise IncompleteDownloadError(
            f"{exc} (gave up after {attempts} attempts)",
            received=exc.received,
            expected=exc.expected,
        ) from exc
    if hasattr(exc, "add_note"):
        exc.add_note(f"dlutils gave up after {attempts} attempts")
    raise exc


def _interrupter(body: Body) -> Callable[[], None]:
    """What wakes a read of ``body`` blocked in another thread, without blocking."""
    return body.interrupt or (lambda: threading.Thread(target=body.close, daemon=True).start())


def call_with_retries(
    func: Callable[[], Any],
    *,
    classify: Callable[[BaseException], tuple[bool, float | None]],
    retry: RetryPolicy | None = None,
    abort: threading.Event | None = None,
    sleep: Callable[[float], Any] | None = None,
    rng: random.Random | None = None,
    what: str = "the request",
) -> Any:
    """Call ``func`` until it succeeds, retrying what ``classify`` calls retryable.

    For the requests a source makes before the engine takes over (a listing, a
    conditional GET); pauses follow ``retry`` and honour a server's ``Retry-After``.
    A refused connection or an unknown host is retried at most once, at once.
    With an :class:`AbortEvent`, setting it interrupts a request still connecting or
    waiting for its headers, and its ``time_limit`` starts for each call (a body the
    call returns goes on with the same clock, as the first part of the download).
    """
    budget = AttemptBudget(retry or RetryPolicy(), rng)
    timed = isinstance(abort, AbortEvent)
    while True:
        if abort is not None and abort.is_set():
            raise DownloadAborted("aborted before the request was made")
        if timed:
            abort.begin_attempt()
        try:
            with opening(abort):
                return func()
        except Exception as exc:
            if timed:
                abort.end_attempt()
            if abort is not None and abort.is_set():
                raise DownloadAborted(f"{what} was aborted") from exc
            timed_out(abort, what, exc)
            retryable, retry_after = classify(exc)
            delay = budget.delay(exc, retry_after) if retryable else None
            if delay is None:
                raise
            log.debug(
                "retry %d/%d in %.2fs after %s: %s",
                budget.attempts - 1,
                budget.policy.retries,
                delay,
                type(exc).__name__,
                exc,
            )
            if abort is not None:
                if abort.wait(delay):
                    raise DownloadAborted("aborted while waiting to retry") from exc
            else:
                (sleep or time.sleep)(delay)
        except BaseException:
            if timed:
                abort.end_attempt()
            raise
