"""RES-3 / P1-5: the pure backoff function and the retry policy built on it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.config import load_settings
from paycore.platform.resilience.backoff import backoff_delay, schedule_with_jitter
from paycore.platform.resilience.retry import RetryPolicy, retry_fits

pytestmark = pytest.mark.unit


def test_no_jitter_sequence_then_cap() -> None:
    delays = [backoff_delay(a, jitter=0.0) for a in range(12)]
    assert delays[:7] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4])
    assert delays[7:] == pytest.approx([12.8, 25.6, 30.0, 30.0, 30.0])
    assert backoff_delay(1000, jitter=0.0) == 30.0  # no overflow


def test_attempt_three_samples_within_ten_percent_and_spread() -> None:
    rng = random.Random(7)
    samples = [backoff_delay(3, rand=rng.random) for _ in range(100)]
    assert all(0.72 <= s <= 0.88 for s in samples)
    assert len(set(samples)) > 1


def test_negative_attempt_is_base() -> None:
    assert backoff_delay(-3, jitter=0.0) == pytest.approx(0.1)


def test_custom_cap() -> None:
    assert [backoff_delay(a, base=1.0, cap=5.0, jitter=0.0) for a in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_six_default_delays_sum_under_ten_seconds() -> None:
    assert sum(backoff_delay(a, rand=lambda: 1.0) for a in range(6)) < 10.0


def test_extreme_rand_values_bound_the_jitter() -> None:
    assert backoff_delay(0, rand=lambda: 0.0) == pytest.approx(0.09)
    assert backoff_delay(0, rand=lambda: 1.0) == pytest.approx(0.11)


def test_webhook_schedule_without_jitter() -> None:
    settings = load_settings({"PAYCORE_ENV": "test"})
    assert schedule_with_jitter(settings.webhook_retry_schedule, jitter=0.0) == list(
        settings.webhook_retry_schedule
    )


@given(attempt=st.integers(min_value=-5, max_value=200), r=st.floats(min_value=0.0, max_value=1.0))
def test_delay_within_ten_percent_of_capped_exponential(attempt: int, r: float) -> None:
    nominal = min(30.0, 0.1 * 2 ** max(attempt, 0))
    delay = backoff_delay(attempt, rand=lambda: r)
    assert 0.9 * nominal - 1e-12 <= delay <= 1.1 * nominal + 1e-12
    assert delay >= 0.0


# --- retry policy ------------------------------------------------------------------------------------
def test_gateway_policy_from_settings() -> None:
    policy = RetryPolicy.from_settings(load_settings({"PAYCORE_ENV": "test"}))
    assert policy == RetryPolicy(max_attempts=3, base=0.1, multiplier=2.0, cap=30.0, jitter=0.1)
    # 3 attempts -> waits of ~100 ms and ~200 ms
    assert policy.delay(0, lambda: 0.5) == pytest.approx(0.1)
    assert policy.delay(1, lambda: 0.5) == pytest.approx(0.2)


def test_policy_validation() -> None:
    for kwargs in ({"max_attempts": 0}, {"multiplier": 0.5}, {"jitter": 2.0}, {"base": -1.0}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_fits_the_deadline() -> None:
    assert retry_fits(0.1, None)
    assert retry_fits(0.1, 0.2)
    assert not retry_fits(0.2, 0.2)
    assert not retry_fits(0.3, 0.2)
    assert not retry_fits(0.1, 0.105, min_attempt=0.01)
