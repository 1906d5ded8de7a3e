"""Tests for dlutils.retry: backoff bounds, growth and cap, Retry-After, and validation."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlutils import InvalidInputError
from dlutils.retry import FATAL_STATUS, RETRYABLE_STATUS, RetryPolicy, parse_retry_after

NOW = 1445412470.0  # 10 s before Wed, 21 Oct 2015 07:28:00 GMT

# ---------------------------------------------------------------------------------------------
# RetryPolicy.delay
# ---------------------------------------------------------------------------------------------


@given(
    attempt=st.integers(0, 60),
    seed=st.integers(0, 2**32),
    backoff=st.floats(0, 10),
    max_backoff=st.floats(0, 100),
)
def test_delay_lies_between_half_cap_and_cap(attempt, seed, backoff, max_backoff):
    policy = RetryPolicy(backoff=backoff, max_backoff=max_backoff)
    cap = min(max_backoff, backoff * 2**attempt)
    assert cap / 2 <= policy.delay(attempt, rng=random.Random(seed)) <= cap


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (0, 0.5, 1.0),
        (1, 1.0, 2.0),
        (2, 2.0, 4.0),
        (4, 8.0, 16.0),
        (5, 15.0, 30.0),
        (40, 15.0, 30.0),
    ],
)
def test_delay_doubles_then_caps_at_max_backoff(attempt, low, high):
    policy = RetryPolicy(backoff=1.0, max_backoff=30.0)
    delays = [policy.delay(attempt, rng=random.Random(seed)) for seed in range(200)]
    assert low <= min(delays) and max(delays) <= high
    assert max(delays) - min(delays) > (high - low) / 2  # jittered, not a constant


@pytest.mark.parametrize("seed", range(20))
def test_delay_never_shrinks_before_reaching_the_cap(seed):
    policy = RetryPolicy(retries=8, backoff=0.25, max_backoff=60.0)  # caps from attempt 8
    rng = random.Random(seed)
    delays = [policy.delay(n, rng=rng) for n in range(8)]
    assert delays == sorted(delays)


def test_delay_with_the_same_seed_is_reproducible():
    policy = RetryPolicy(backoff=1.0)
    assert policy.delay(3, rng=random.Random(42)) == policy.delay(3, rng=random.Random(42))


def test_delay_is_zero_without_backoff():
    assert RetryPolicy(backoff=0.0).delay(7, rng=random.Random(0)) == 0.0


def test_delay_is_capped_for_very_late_attempts():
    policy = RetryPolicy(retries=5000, backoff=0.5, max_backoff=30.0)
    assert 15.0 <= policy.delay(1100, rng=random.Random(0)) <= 30.0


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (7.0, 7.0),
        (0.0, 0.0),
        (120.0, 120.0),  # above max_backoff, still honoured
        (300.0, 300.0),
        (3600.0, 300.0),  # capped at max_retry_after
        (-5.0, 0.0),
    ],
)
@pytest.mark.parametrize("attempt", [0, 3, 20])
def test_delay_honours_retry_after_up_to_max_retry_after(attempt, retry_after, expected):
    policy = RetryPolicy(backoff=1.0, max_backoff=30.0, max_retry_after=300.0)
    assert policy.delay(attempt, retry_after, rng=random.Random(0)) == expected


def test_retry_after_cap_is_configurable():
    assert RetryPolicy(max_retry_after=10.0).delay(0, retry_after=60.0) == 10.0


# ---------------------------------------------------------------------------------------------
# RetryPolicy validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retries": -1}, r"retries=-1 is not valid: use an int >= 0"),
        ({"retries": 1.5}, r"retries=1\.5 is not valid"),
        ({"retries": "3"}, r"retries='3' is not valid"),
        ({"retries": None}, r"retries=None is not valid"),
        ({"backoff": -0.1}, r"backoff=-0\.1 is not valid: use seconds >= 0"),
        ({"max_backoff": -1.0}, r"max_backoff=-1\.0 is not valid: use seconds >= 0"),
        ({"max_retry_after": -1.0}, r"max_retry_after=-1\.0 is not valid: use seconds >= 0"),
    ],
)
def test_policy_rejects_invalid_settings(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        RetryPolicy(**kwargs)


def test_policy_accepts_zero_everywhere_and_is_frozen():
    policy = RetryPolicy(retries=0, backoff=0, max_backoff=0, max_retry_after=0)
    with pytest.raises(AttributeError):
        policy.retries = 3  # type: ignore[misc]


def test_retryable_and_fatal_statuses_are_disjoint():
    assert {429, 503} <= RETRYABLE_STATUS and {404, 403} <= FATAL_STATUS
    assert not RETRYABLE_STATUS & FATAL_STATUS


# ---------------------------------------------------------------------------------------------
# parse_retry_after
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("86400", 86400.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),  # IMF-fixdate
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 10.0),  # obsolete RFC 850
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: no wait
        ("Wed, 21 Oct 2015 09:28:00 +0200", 10.0),
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "1.5", "3s", "0x10", "Wed, 99 Foo 2015 07:28:00 GMT", "Wed, 21 Oct"],
)
def test_parse_retry_after_garbage_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_non_ascii_digits_are_garbage():
    assert parse_retry_after("\u00b2", now=NOW) is None


@pytest.fixture
def local_time_not_utc(monkeypatch):
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_parse_retry_after_asctime_date_is_utc(local_time_not_utc):
    assert parse_retry_after("Wed Oct 21 07:28:00 2015", now=NOW) == 10.0


def test_parse_retry_after_gmt_date_ignores_local_time(local_time_not_utc):
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 10.0
