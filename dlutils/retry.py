"""Retry policy: exponential backoff with jitter that honours ``Retry-After``."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime

from .errors import InvalidInputError

__all__ = ["RetryPolicy", "parse_retry_after", "RETRYABLE_STATUS", "FATAL_STATUS"]

#: HTTP statuses worth another try.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: HTTP statuses never retried: the answer will not change by asking again.
FATAL_STATUS = frozenset({400, 401, 403, 404, 405, 410, 411, 412, 413, 414, 415})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a failed transfer.

    Parameters
    ----------
    retries : int
        Further attempts after the first one fails without progress. An attempt
        that received bytes before failing does not use up a retry: the next one
        resumes where it stopped.
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
