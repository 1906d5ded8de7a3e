"""Retry policy: exponential backoff with jitter that honours ``Retry-After``."""

from __future__ import annotations

import errno
import random
import socket
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

from .errors import InvalidInputError

__all__ = [
    "RetryPolicy",
    "AttemptBudget",
    "parse_retry_after",
    "unreachable",
    "RETRYABLE_STATUS",
    "FATAL_STATUS",
    "UNREACHABLE_RETRIES",
]

#: HTTP statuses worth another try.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: HTTP statuses never retried: the answer will not change by asking again.
FATAL_STATUS = frozenset({400, 401, 403, 404, 405, 410, 411, 412, 413, 414, 415})
#: Retries left to a refused connection or an unknown host: one quick one, as a blip may pass.
UNREACHABLE_RETRIES = 1
#: The pause before that retry, in seconds.
UNREACHABLE_DELAY = 0.2


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed transfer.

    Parameters
    ----------
    retries : int
        Further attempts after the first one fails. A failed attempt that leaves
        bytes the next one resumes from gives the retries back, but an object (or
        a range of a segmented download) is never tried more than
        ``2 * (retries + 1)`` times, whatever each attempt received; a restart
        from zero (a server without ranges) is no progress. A
        refused connection or an unknown host gets at most one quick retry
        (:data:`UNREACHABLE_RETRIES`), and none with ``retries=0``.
    backoff : float
        Base pause in seconds; attempt ``n`` (from 0) waits between
        ``backoff * 2**n / 2`` and ``backoff * 2**n``, capped at ``max_backoff``.
    max_backoff : float
        Longest pause between attempts when the server gave no ``Retry-After``.
    max_retry_after : float
        Longest ``Retry-After`` honoured; a server asking for more is waited for this long.

    Examples
    --------
    >>> from dlutils.retry import RetryPolicy
    >>> import random
    >>> policy = RetryPolicy(retries=3, backoff=1.0)
    >>> 2.0 <= policy.delay(2, rng=random.Random(0)) <= 4.0
    True
    >>> policy.delay(0, retry_after=7.0, rng=random.Random(0))
    7.0
    """

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidInputError(f"retries={self.retries!r} is not valid: use an int >= 0")
        for name in ("backoff", "max_backoff", "max_retry_after"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise InvalidInputError(f"{name}={value!r} is not valid: use seconds >= 0")

    def delay(
        self, attempt: int, retry_after: float | None = None, *, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        cap = min(self.max_backoff, self.backoff * (2 ** min(attempt, 64)))
        return cap / 2 + (rng or random).uniform(0, cap / 2)


class AttemptBudget:
    """The attempts left to one object (or one range): :class:`RetryPolicy` made exact.

    Each failure costs a retry. A failure after which the next attempt resumes with
    more bytes than before gives the retries back first, but there are never more
    than ``2 * (retries + 1)`` attempts in all: whatever each attempt received, the
    attempts end. A refused connection or an unknown host gets at most one quick retry.
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None):
        self.policy = policy
        self.rng = rng
        self.attempts = 1
        self.charged = 0
        self.unreachable = 0

    def delay(
        self, exc: BaseException, retry_after: float | None, *, progress: bool = False
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when none is left."""
        retries = self.policy.retries
        if self.attempts >= 2 * (retries + 1):
            return None
        if unreachable(exc):
            if self.unreachable >= min(UNREACHABLE_RETRIES, retries):
                return None
            self.unreachable += 1
            self.attempts += 1
            return min(UNREACHABLE_DELAY, self.policy.backoff)
        if progress:
            self.charged = 0
        if self.charged >= retries:
            return None
        delay = self.policy.delay(self.charged, retry_after, rng=self.rng)
        self.charged += 1
        self.attempts += 1
        return delay


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the host cannot be reached at all: refused, or no such name.

    Looks through the chain of causes (requests wraps urllib3, which wraps the
    socket error), so it serves every source's library.

    Examples
    --------
    >>> import socket
    >>> from dlutils.retry import unreachable
    >>> unreachable(socket.gaierror(-2, "Name or service not known"))
    True
    >>> unreachable(ConnectionResetError(104, "Connection reset by peer"))
    False
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (ConnectionRefusedError, socket.gaierror)):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ECONNREFUSED,):
            return True
        if type(current).__name__ == "NameResolutionError":  # urllib3's, without importing it
            return True
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP-date).

    Examples
    --------
    >>> from dlutils.retry import parse_retry_after
    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # asctime dates and "-0000" carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
