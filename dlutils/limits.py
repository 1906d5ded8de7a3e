"""Job limits: a smooth shared bandwidth limiter, and sizes and durations as people write them."""

from __future__ import annotations

import datetime
import math
import re
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .errors import DownloadAborted, InvalidInputError

__all__ = [
    "TokenBucket",
    "parse_size",
    "format_size",
    "parse_duration",
    "parse_timeout",
    "format_duration",
]

_MiB = 1 << 20

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

#: Size units, upper-cased: SI letters are powers of 1000, the ``i`` forms powers of 1024.
_SIZE_UNITS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    _SIZE_UNITS[_letter] = _SIZE_UNITS[_letter + "B"] = 1000**_power
    _SIZE_UNITS[_letter + "I"] = _SIZE_UNITS[_letter + "IB"] = 1024**_power
_SIZE_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)")
_SIZE_EXAMPLE = "write it like '1GiB', '500MB', '1.5 GiB' or '1048576'"
_IEC_NAMES = ("KiB", "MiB", "GiB", "TiB")


def _bad_size(value: object, reason: str) -> InvalidInputError:
    return InvalidInputError(f"size {value!r} is not valid: {reason}; {_SIZE_EXAMPLE}")


def parse_size(value: int | str) -> int:
    """Bytes in a size written as an int or a string such as ``"1GiB"`` or ``"500MB"``.

    The units follow the AIStore CLI (``cos.ParseSize``, as used by ``--limit-bph``)
    without ``--units``: case does not matter; ``B`` or no unit is bytes; ``K``/``KB``,
    ``M``/``MB``, ``G``/``GB``, ``T``/``TB`` are powers of 1000; ``Ki``/``KiB``,
    ``Mi``/``MiB``, ``Gi``/``GiB``, ``Ti``/``TiB`` are powers of 1024. Fractions are
    allowed and computed exactly; a fraction of a byte is dropped, as AIStore does.

    Deviations from AIStore: ``KB`` is always 1000 bytes (AIStore's ``--units iec`` and its
    server-side config fields read it as 1024); the empty string is an error, not 0; a
    negative size is an error; a space may separate the number and the unit.

    Parameters
    ----------
    value : int or str
        A byte count >= 0, or a number >= 0 with an optional unit.

    Returns
    -------
    int
        The number of bytes.

    Raises
    ------
    InvalidInputError
        The value is negative, empty, not a number, or has an unknown unit.

    Examples
    --------
    >>> from dlutils.limits import parse_size
    >>> parse_size("1GiB"), parse_size("500MB"), parse_size("10k")
    (1073741824, 500000000, 10000)
    >>> parse_size("1.5 GiB"), parse_size("4096"), parse_size(0)
    (1610612736, 4096, 0)
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad_size(value, "expected an int or a string")
    if isinstance(value, int):
        if value < 0:
            raise _bad_size(value, "a size cannot be negative")
        return value
    text = value.strip()
    if not text:
        raise _bad_size(value, "it is empty")
    if text.startswith("-"):
        raise _bad_size(value, "a size cannot be negative")
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise _bad_size(value, "expected a number followed by an optional unit")
    multiplier = _SIZE_UNITS.get(match["unit"].upper())
    if multiplier is None:
        raise _bad_size(
            value,
            f"unknown unit {match['unit']!r} (known: B; K, M, G, T with or without B, "
            "powers of 1000; KiB, MiB, GiB, TiB, powers of 1024)",
        )
    return int(Decimal(match["num"]) * multiplier)


def format_size(n: int) -> str:
    """``n`` bytes for people: IEC units, at most two decimals (``"1.5 GiB"``).

    Examples
    --------
    >>> from dlutils.limits import format_size
    >>> format_size(1536 * 2**20), format_size(2**20), format_size(512)
    ('1.5 GiB', '1 MiB', '512 B')
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidInputError(f"size {n!r} is not valid: expected an int number of bytes")
    if n < 0:
        return "-" + format_size(-n)
    if n < 1024:
        return f"{n} B"
    power = min(len(_IEC_NAMES), (n.bit_length() - 1) // 10)
    text = f"{n / 1024**power:.2f}".rstrip("0").rstrip(".")
    if text == "1024" and power < len(_IEC_NAMES):  # 1023.999 KiB rounds up to the next unit
        power, text = power + 1, "1"
    return f"{text} {_IEC_NAMES[power - 1]}"


# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

_DURATION_UNITS = {
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("1e-3"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),  # U+00B5 micro sign, as Go prints it
    "μs": Decimal("1e-6"),  # U+03BC Greek mu, which Go accepts too
    "ns": Decimal("1e-9"),
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_TERM_RE = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
_DURATION_RE = re.compile(rf"(?:{_TERM_RE.pattern})+")
_NUMBER_RE = re.compile(_NUMBER)
_DURATION_EXAMPLE = "write it like '1m30s', '500ms' or '2h', or give a number of seconds"


def _bad_duration(value: object, reason: str) -> InvalidInputError:
    return InvalidInputError(f"duration {value!r} is not valid: {reason}; {_DURATION_EXAMPLE}")


def parse_duration(value: str | int | float | datetime.timedelta | None) -> float | None:
    """Seconds in a Go-style duration such as ``"1m30s"``, as AIStore's JSON requests use.

    A string is a sequence of numbers each followed by a unit, ``h``, ``m``, ``s``, ``ms``,
    ``us`` (or ``µs``), ``ns``, as Go's ``time.ParseDuration`` reads them: case-sensitive,
    fractions allowed (``"1.5h"``), a leading ``+`` allowed. Unlike Go, a string holding
    only a number is seconds (as in the AIStore CLI, where ``s`` is the default unit), and
    a negative duration is an error.

    Parameters
    ----------
    value : str, int, float, datetime.timedelta or None
        The duration; numbers are seconds. ``None`` means "not given".

    Returns
    -------
    float or None
        Seconds >= 0, or ``None`` when ``value`` is ``None``.

    Raises
    ------
    InvalidInputError
        The value is empty, negative, not finite, or not a duration.

    Examples
    --------
    >>> from dlutils.limits import parse_duration
    >>> parse_duration("1m30s"), parse_duration("500ms"), parse_duration("1.5h")
    (90.0, 0.5, 5400.0)
    >>> parse_duration(30), parse_duration("0"), parse_duration(None) is None
    (30.0, 0.0, True)
    """
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
        if seconds < 0:
            raise _bad_duration(value, "a duration cannot be negative")
        return seconds
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad_duration(value, "expected a string, a number of seconds or a timedelta")
    if not isinstance(value, str):
        if not math.isfinite(value):
            raise _bad_duration(value, "it is not finite")
        if value < 0:
            raise _bad_duration(value, "a duration cannot be negative")
        return float(value)
    text = value.strip()
    if "-" in text:
        raise _bad_duration(value, "a duration cannot be negative")
    text = text.removeprefix("+")
    if not text:
        raise _bad_duration(value, "it is empty")
    if _NUMBER_RE.fullmatch(text):
        return float(Decimal(text))
    if not _DURATION_RE.fullmatch(text):
        raise _bad_duration(
            value, "expected numbers each followed by a unit: h, m, s, ms, us (or µs), ns"
        )
    total = sum(Decimal(num) * _DURATION_UNITS[unit] for num, unit in _TERM_RE.findall(text))
    return float(total)


def _fraction(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    return f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    """``seconds`` the way Go prints a ``time.Duration`` (``"1m30s"``, ``"1h0m0s"``, ``"500ms"``).

    Precision is the nanosecond; the output reads back with :func:`parse_duration`.

    Examples
    --------
    >>> from dlutils.limits import format_duration
    >>> format_duration(90), format_duration(3723.5), format_duration(0.5), format_duration(0)
    ('1m30s', '1h2m3.5s', '500ms', '0s')
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise _bad_duration(seconds, "expected a number of seconds")
    if not math.isfinite(seconds):
        raise _bad_duration(seconds, "it is not finite")
    ns = int((Decimal(seconds) * 10**9).to_integral_value())
    if ns < 0:
        return "-" + format_duration(-seconds)
    if ns == 0:
        return "0s"
    if ns < 1000:
        return f"{ns}ns"
    if ns < 10**6:
        return _fraction(ns, 3) + "µs"
    if ns < 10**9:
        return _fraction(ns, 6) + "ms"
    whole, frac = divmod(ns, 10**9)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    text = _fraction(secs * 10**9 + frac, 9) + "s"
    if whole >= 60:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text


# ---------------------------------------------------------------------------------------------
# Bandwidth
# ---------------------------------------------------------------------------------------------


def _positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        example = "bytes per second > 0, e.g. 10 * 2**20 for 10 MiB/s"
        if name != "rate":
            example = "a number of bytes > 0, e.g. 2**20"
        raise InvalidInputError(f"{name}={value!r} is not valid: use {example}")
    return float(value)


class TokenBucket:
    """One bandwidth limit shared by all the streams of a job, smooth rather than windowed.

    Each :meth:`acquire` takes its bytes from the bucket at once, even into debt, and
    the caller sleeps until the balance is back to zero; the bucket refills at ``rate``
    bytes per second up to ``burst``. Callers are thus served in the order they asked,
    a request larger than ``burst`` passes after a proportionally longer wait, and the
    wait is computed under a lock but slept outside it.

    The bucket starts **empty**: from its creation, at most ``rate * elapsed`` bytes
    have passed. Only after an idle spell can up to ``burst`` bytes pass at once. (The
    AIStore downloader counts bytes per minute instead, so a minute's budget can go at
    once.)

    Parameters
    ----------
    rate : float
        Bytes per second, > 0.
    burst : float, optional
        The bucket's capacity in bytes. Default: ``max(rate, 1 MiB)``, one second of
        rate but at least one 1 MiB chunk, the size callers acquire.
    clock, sleep : callable, optional
        Monotonic seconds and the pause, for tests (default :func:`time.monotonic`,
        :func:`time.sleep`).

    Examples
    --------
    A frozen clock shows the debt growing, one 1 MiB chunk after another:

    >>> from dlutils.limits import TokenBucket
    >>> bucket = TokenBucket(2 * 2**20, clock=lambda: 0.0, sleep=lambda s: None)
    >>> bucket.acquire(2**20), bucket.acquire(2**20), bucket.burst
    (0.5, 1.0, 2097152.0)
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._rate = _positive("rate", rate)
        self._auto_burst = burst is None
        self._burst = max(self._rate, _MiB) if burst is None else _positive("burst", burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()

    @classmethod
    def per_hour(cls, bytes_per_hour: int | str, **kw) -> TokenBucket:
        """A bucket passing ``bytes_per_hour`` (an int or a size such as ``"1GiB"``) per hour.

        Keyword arguments go to :class:`TokenBucket`. AIStore reads a limit of 0 as "no
        limit"; here it is an error: use no limiter at all.

        Examples
        --------
        >>> from dlutils.limits import TokenBucket
        >>> TokenBucket.per_hour("1GiB").rate == 2**30 / 3600
        True
        """
        nbytes = parse_size(bytes_per_hour)
        if nbytes == 0:
            raise InvalidInputError(
                f"bytes_per_hour={bytes_per_hour!r} is not valid: 0 means no limit, so use no "
                "limiter (None) instead, or a size such as '1GiB'"
            )
        return cls(nbytes / 3600, **kw)

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The bucket's capacity in bytes."""
        return self._burst

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on; a default burst follows it, an explicit one stays.

        Streams already sleeping keep the wait they were given.
        """
        rate = _positive("rate", rate)
        with self._lock:
            self._refill()
            self._rate = rate
            if self._auto_burst:
                self._burst = max(rate, _MiB)
                self._tokens = min(self._tokens, self._burst)

    def acquire(self, nbytes: int, abort: threading.Event | None = None) -> float:
        """Wait until ``nbytes`` may pass; return the seconds waited.

        Parameters
        ----------
        nbytes : int
            Bytes about to pass, >= 0; any size, even above ``burst``.
        abort : threading.Event, optional
            When given, the wait is ``abort.wait(seconds)`` rather than ``sleep``: the
            request is given back and :class:`~dlutils.errors.DownloadAborted` raised as
            soon as the event is set (at once if it already is).

        Returns
        -------
        float
            The seconds the caller was made to wait (as computed; 0.0 when none).

        Raises
        ------
        DownloadAborted
            ``abort`` was set before or during the wait.
        InvalidInputError
            ``nbytes`` is not an int >= 0.
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidInputError(f"nbytes={nbytes!r} is not valid: use an int >= 0")
        if abort is not None and abort.is_set():
            raise DownloadAborted("download aborted while waiting for the bandwidth limit")
        if nbytes == 0:
            return 0.0
        with self._lock:
            self._refill()
            self._tokens -= nbytes
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait <= 0:
            return 0.0
        if abort is None:
            self._sleep(wait)
        elif abort.wait(wait):
            with self._lock:  # the bytes never passed: give them back to the other streams
                self._refill()
                self._tokens = min(self._burst, self._tokens + nbytes)
            raise DownloadAborted("download aborted while waiting for the bandwidth limit")
        return wait

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate={format_size(round(self._rate))}/s, "
            f"burst={format_size(round(self._burst))})"
        )


def parse_timeout(value: Any, name: str = "timeout") -> float | tuple[float, float] | None:
    """A source's ``timeout``: seconds, a duration, or a ``(connect, read)`` pair of them.

    Durations are read by :func:`parse_duration` (``"30s"``, ``"1m"``); every value must
    be above zero. ``None`` stays ``None`` (the source's default).

    Examples
    --------
    >>> from dlutils.limits import parse_timeout
    >>> parse_timeout("30s"), parse_timeout((5, "2m")), parse_timeout(None) is None
    (30.0, (5.0, 120.0), True)
    >>> try:
    ...     parse_timeout(0)
    ... except ValueError as exc:
    ...     print(str(exc).split(":")[0])
    timeout=0 is not valid
    """
    if value is None:
        return None
    hint = (
        f"{name}={value!r} is not valid: use seconds > 0 such as 30 or '30s', "
        "a (connect, read) pair such as (5, 60), or None"
    )
    pair = isinstance(value, (tuple, list))
    items = list(value) if pair else [value]
    if not items or len(items) > 2 or (pair and len(items) != 2):
        raise InvalidInputError(hint)
    seconds = []
    for item in items:
        if isinstance(item, bool):
            raise InvalidInputError(hint)
        try:
            parsed = parse_duration(item)
        except InvalidInputError:
            raise InvalidInputError(hint) from None
        if parsed is None or not parsed > 0:
            raise InvalidInputError(hint)
        seconds.append(parsed)
    return (seconds[0], seconds[1]) if pair else seconds[0]
