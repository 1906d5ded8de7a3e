"""Tests for dlutils.limits: the token bucket on a fake clock, and size and duration parsing."""

from __future__ import annotations

import datetime
import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlutils.errors import DownloadAborted, InvalidInputError
from dlutils.limits import (
    TokenBucket,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


class FakeClock:
    """A clock that only moves when someone sleeps on it; safe to share between threads.

    Sleeping threads sleep side by side, as real ones do: a sleep of ``s`` moves the clock
    to the time this thread last read it plus ``s`` (the time its wait was computed at,
    since the bucket reads the clock just before computing it), if that is later.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self) -> float:
        with self._lock:
            self._local.read = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now = max(self.now, getattr(self._local, "read", self.now) + seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"sleep({seconds}) called; the wait should have used the abort event")


class WaitingEvent(threading.Event):
    """A real Event that tells when someone starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        self.waiting.set()
        return super().wait(timeout)


class NeverSet(threading.Event):
    """A real Event whose waits time out at once, and are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return False


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# ---------------------------------------------------------------------------------------------
# TokenBucket: rate, burst, debt
# ---------------------------------------------------------------------------------------------


def test_steady_state_rate(clock):
    bucket = TokenBucket(10 * MiB, clock=clock, sleep=clock.sleep)
    waited = sum(bucket.acquire(MiB) for _ in range(100))
    assert clock.now == pytest.approx(10.0, abs=0.1)
    assert waited == pytest.approx(clock.now)


def test_starts_empty_so_the_first_chunk_waits(clock):
    bucket = TokenBucket(MiB, clock=clock, sleep=clock.sleep)
    assert bucket.acquire(MiB) == pytest.approx(1.0)
    assert clock.sleeps == [pytest.approx(1.0)]


def test_default_burst_is_one_second_of_rate_but_at_least_one_mib():
    assert TokenBucket(100).burst == MiB
    assert TokenBucket(MiB).burst == MiB
    assert TokenBucket(50 * MiB).burst == 50 * MiB
    assert TokenBucket(100, burst=10).burst == 10


def test_idle_time_fills_the_bucket_up_to_burst_only(clock):
    bucket = TokenBucket(MiB, burst=4 * MiB, clock=clock, sleep=clock.sleep)
    clock.advance(100.0)  # worth 100 MiB, but the bucket holds 4
    assert [bucket.acquire(MiB) for _ in range(4)] == [0.0] * 4
    assert clock.sleeps == []
    assert bucket.acquire(MiB) == pytest.approx(1.0)


def test_request_larger_than_burst_passes_after_a_proportional_wait(clock):
    bucket = TokenBucket(MiB, burst=MiB, clock=clock, sleep=clock.sleep)
    clock.advance(10.0)  # full: 1 MiB
    assert bucket.acquire(10 * MiB) == pytest.approx(9.0)
    assert clock.now == pytest.approx(19.0)
    assert bucket.acquire(MiB) == pytest.approx(1.0)  # the debt was paid, no more


def test_debt_queues_later_callers_behind_earlier_ones():
    bucket = TokenBucket(MiB, clock=lambda: 0.0, sleep=lambda s: None)
    assert bucket.acquire(10 * MiB) == pytest.approx(10.0)
    assert bucket.acquire(MiB) == pytest.approx(11.0)


def test_the_wait_is_slept_outside_the_lock(clock):
    def sleep(seconds: float) -> None:
        assert not bucket._lock.locked()
        clock.sleep(seconds)

    bucket = TokenBucket(MiB, clock=clock, sleep=sleep)
    bucket.acquire(MiB)
    assert clock.sleeps == [pytest.approx(1.0)]


def test_zero_bytes_never_wait(clock):
    bucket = TokenBucket(1, clock=clock, sleep=no_sleep)
    assert bucket.acquire(0) == 0.0


@given(
    steps=st.lists(st.tuples(st.floats(0, 5), st.integers(1, 2 * MiB)), min_size=1, max_size=40),
    rate=st.floats(0.5 * MiB, 8 * MiB),
)
def test_never_faster_than_rate_nor_burstier_than_burst(steps, rate):
    clock = FakeClock()
    bucket = TokenBucket(rate, burst=2 * MiB, clock=clock, sleep=clock.sleep)
    passed = []  # (time the bytes passed, bytes)
    for idle, nbytes in steps:
        clock.advance(idle)
        bucket.acquire(nbytes)
        passed.append((clock.now, nbytes))
    slack = 1e-6 * rate  # float rounding
    total = 0
    for i, (t_end, nbytes) in enumerate(passed):
        total += nbytes
        assert total <= rate * t_end + slack  # the bucket starts empty
        window = 0
        for t_start, earlier in reversed(passed[: i + 1]):
            window += earlier
            assert window <= bucket.burst + rate * (t_end - t_start) + slack


def test_set_rate_applies_to_later_requests(clock):
    bucket = TokenBucket(MiB, clock=clock, sleep=clock.sleep)
    assert bucket.acquire(MiB) == pytest.approx(1.0)
    bucket.set_rate(4 * MiB)
    assert bucket.rate == 4 * MiB
    assert bucket.burst == 4 * MiB  # the default burst follows the rate
    assert bucket.acquire(MiB) == pytest.approx(0.25)
    fixed = TokenBucket(MiB, burst=3 * MiB, clock=clock, sleep=clock.sleep)
    fixed.set_rate(8 * MiB)
    assert fixed.burst == 3 * MiB


def test_repr_shows_rate_and_burst():
    assert repr(TokenBucket(10 * MiB)) == "TokenBucket(rate=10 MiB/s, burst=10 MiB)"


# ---------------------------------------------------------------------------------------------
# TokenBucket: threads
# ---------------------------------------------------------------------------------------------


def run_threads(count: int, target) -> None:
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=10)
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


def test_threads_sharing_a_bucket_lose_no_update():
    # Frozen clock: every chunk deepens the one debt, so the waits handed out are exactly
    # 1, 2, ..., N chunks' worth, whatever the interleaving.
    bucket = TokenBucket(MiB, clock=lambda: 0.0, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def worker(_index: int) -> None:
        for _ in range(50):
            wait = bucket.acquire(MiB)
            with lock:
                waits.append(wait)

    run_threads(8, worker)
    assert sorted(waits) == pytest.approx([float(i) for i in range(1, 8 * 50 + 1)])


def test_threads_sharing_a_bucket_share_the_rate(clock):
    bucket = TokenBucket(10 * MiB, clock=clock, sleep=clock.sleep)
    per_thread = [0] * 8

    def worker(index: int) -> None:
        for _ in range(25):
            bucket.acquire(MiB)
            per_thread[index] += MiB

    run_threads(8, worker)
    total = sum(per_thread)
    assert total == 8 * 25 * MiB
    assert clock.now == pytest.approx(total / bucket.rate, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# TokenBucket: abort
# ---------------------------------------------------------------------------------------------


def test_abort_set_before_acquire_raises_at_once_and_takes_nothing(clock):
    bucket = TokenBucket(MiB, clock=clock, sleep=clock.sleep)
    abort = threading.Event()
    abort.set()
    with pytest.raises(DownloadAborted, match="aborted"):
        bucket.acquire(100 * MiB, abort)
    assert clock.sleeps == []
    assert bucket.acquire(MiB) == pytest.approx(1.0)  # as if the aborted call never was
    clock.advance(10.0)  # the bucket is full: nothing to wait for, still aborted
    with pytest.raises(DownloadAborted, match="aborted"):
        bucket.acquire(1, abort)


def test_abort_while_waiting_raises_and_gives_the_bytes_back():
    bucket = TokenBucket(1, clock=lambda: 0.0, sleep=no_sleep)  # 10**6 s of debt
    abort = WaitingEvent()
    outcome: list[BaseException | float] = []

    def worker() -> None:
        try:
            outcome.append(bucket.acquire(10**6, abort))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert abort.waiting.wait(timeout=10)
        abort.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        abort.set()
        thread.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], DownloadAborted)
    assert abort.timeouts == [pytest.approx(10.0**6)]
    assert bucket.acquire(1, NeverSet()) == pytest.approx(1.0)  # the debt was given back


def test_abort_not_set_waits_on_the_event_not_sleep(clock):
    bucket = TokenBucket(MiB, clock=clock, sleep=no_sleep)
    abort = NeverSet()
    assert bucket.acquire(2 * MiB, abort) == pytest.approx(2.0)
    assert abort.timeouts == [pytest.approx(2.0)]


# ---------------------------------------------------------------------------------------------
# TokenBucket: construction
# ---------------------------------------------------------------------------------------------


def test_per_hour_accepts_a_size_string(clock):
    bucket = TokenBucket.per_hour("1GiB", clock=clock, sleep=clock.sleep)
    assert bucket.rate == GiB / 3600
    assert bucket.burst == MiB
    for _ in range(16):
        bucket.acquire(64 * MiB)
    assert clock.now == pytest.approx(3600.0)


def test_per_hour_accepts_an_int():
    assert TokenBucket.per_hour(7200).rate == 2.0


@pytest.mark.parametrize("value", [0, "0", "0GiB"])
def test_per_hour_zero_says_to_use_no_limiter(value):
    with pytest.raises(InvalidInputError, match="0 means no limit"):
        TokenBucket.per_hour(value)


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan"), True, "1MiB", None])
def test_bad_rate(rate):
    with pytest.raises(InvalidInputError, match=r"rate=.* is not valid: use bytes per second"):
        TokenBucket(rate)


@pytest.mark.parametrize("burst", [0, -5, float("inf"), "1MiB"])
def test_bad_burst(burst):
    with pytest.raises(InvalidInputError, match=r"burst=.* is not valid"):
        TokenBucket(MiB, burst=burst)


@pytest.mark.parametrize("nbytes", [-1, 1.5, True, "1MiB"])
def test_bad_nbytes(nbytes):
    with pytest.raises(InvalidInputError, match=r"nbytes=.* is not valid: use an int >= 0"):
        TokenBucket(MiB).acquire(nbytes)


# ---------------------------------------------------------------------------------------------
# parse_size / format_size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1048576, MiB),
        ("0", 0),
        ("1048576", MiB),
        ("  42  ", 42),
        ("42B", 42),
        ("42 b", 42),
        ("1GiB", GiB),
        ("1gib", GiB),
        ("1Gi", GiB),
        ("1.5 GiB", GiB + GiB // 2),
        ("1KiB", KiB),
        ("2MiB", 2 * MiB),
        ("1TiB", TiB),
        ("500MB", 500 * 10**6),
        ("500mb", 500 * 10**6),
        ("10k", 10_000),
        ("10K", 10_000),
        ("10KB", 10_000),
        ("3M", 3 * 10**6),
        ("1G", 10**9),
        ("2TB", 2 * 10**12),
        ("4.35KB", 4350),  # exact: no float rounding down to 4349
        ("0.5KiB", 512),
        (".5k", 500),
        ("1.5", 1),  # a fraction of a byte is dropped, as AIStore does
        ("0GiB", 0),
    ],
)
def test_parse_size_valid(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("-5", "cannot be negative"),
        ("-1GiB", "cannot be negative"),
        (-1, "cannot be negative"),
        ("abc", "expected a number"),
        ("GiB", "expected a number"),
        ("1,5GiB", "expected a number"),
        ("1e9", "expected a number"),
        ("1_000", "expected a number"),
        ("1 G iB", "expected a number"),
        ("10x", "unknown unit 'x'"),
        ("1PiB", "unknown unit 'PiB'"),
        ("5 bytes", "unknown unit 'bytes'"),
        ("nan", "expected a number"),
        ("inf", "expected a number"),
        (1.5, "expected an int or a string"),
        (True, "expected an int or a string"),
        (None, "expected an int or a string"),
    ],
)
def test_parse_size_invalid(value, reason):
    pattern = rf"size {re.escape(repr(value))} is not valid: .*{re.escape(reason)}.*'1GiB'"
    with pytest.raises(InvalidInputError, match=pattern):
        parse_size(value)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (MiB, "1 MiB"),
        (GiB + GiB // 2, "1.5 GiB"),
        (MiB - 1, "1 MiB"),  # 1023.999 KiB rounds up to the next unit
        (3 * TiB, "3 TiB"),
        (2048 * TiB, "2048 TiB"),
        (-1536, "-1.5 KiB"),
    ],
)
def test_format_size(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("n", [1.5, "1", None, True])
def test_format_size_rejects_non_ints(n):
    with pytest.raises(InvalidInputError, match="expected an int"):
        format_size(n)


@given(st.integers(0, 2**60))
def test_format_size_reads_back_within_its_precision(n):
    assert abs(parse_size(format_size(n)) - n) <= n * 0.005 + 1


@given(st.integers(4, 4 * 1024 - 1), st.sampled_from([KiB, MiB, GiB, TiB]))
def test_format_size_reads_back_exactly_when_it_can(quarters, unit):
    n = quarters * unit // 4  # a number of quarter units prints exactly with two decimals
    assert parse_size(format_size(n)) == n


# ---------------------------------------------------------------------------------------------
# parse_duration / format_duration
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("1h2m3.5s", 3723.5),
        ("1h1h", 7200.0),  # Go adds repeated units up
        ("2us", 2e-6),
        ("2µs", 2e-6),  # micro sign
        ("2μs", 2e-6),  # Greek mu
        ("7ns", 7e-9),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("+5s", 5.0),
        (" 30s ", 30.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("30", 30.0),  # a bare number is seconds, as in the AIStore CLI
        ("1.25", 1.25),
        (0, 0.0),
        (45, 45.0),
        (2.5, 2.5),
        (datetime.timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration_valid(value, expected):
    assert parse_duration(value) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "it is empty"),
        ("  ", "it is empty"),
        ("+", "it is empty"),
        ("abc", "expected numbers each followed by a unit"),
        ("1x", "expected numbers each followed by a unit"),
        ("1H", "expected numbers each followed by a unit"),  # case matters, as in Go
        ("1m 30s", "expected numbers each followed by a unit"),
        ("1.2.3s", "expected numbers each followed by a unit"),
        ("1d", "expected numbers each followed by a unit"),
        ("s", "expected numbers each followed by a unit"),
        ("1e3s", "expected numbers each followed by a unit"),
        ("-5s", "cannot be negative"),
        ("1m-3s", "cannot be negative"),
        (-1, "cannot be negative"),
        (datetime.timedelta(seconds=-1), "cannot be negative"),
        (float("nan"), "not finite"),
        (float("inf"), "not finite"),
        (True, "expected a string"),
        ([30], "expected a string"),
    ],
)
def test_parse_duration_invalid(value, reason):
    pattern = rf"duration {re.escape(repr(value))} is not valid: .*{re.escape(reason)}.*'1m30s'"
    with pytest.raises(InvalidInputError, match=pattern):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (5, "5s"),
        (1.5, "1.5s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2µs"),
        (7e-9, "7ns"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), "90", None, True])
def test_format_duration_rejects_non_numbers(seconds):
    with pytest.raises(InvalidInputError, match=r"duration .* is not valid"):
        format_duration(seconds)


@given(st.integers(0, 10**15))
def test_format_duration_reads_back(ns):
    seconds = ns / 1e9
    assert parse_duration(format_duration(seconds)) == seconds
