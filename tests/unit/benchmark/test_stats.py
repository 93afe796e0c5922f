from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.benchmark import stats

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0, 1), (1, 1), (10, 1), (11, 2), (50, 5), (90, 9), (99, 10), (100, 10)],
)
def test_nearest_rank_percentile_of_one_to_ten(p: float, expected: int) -> None:
    assert stats.percentile(list(range(1, 11)), p) == expected


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert stats.percentile([42], 0) == 42
    assert stats.percentile([42], 99.9) == 42


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_p999_of_a_thousand_samples_is_the_999th() -> None:
    values = list(range(1, 1001))
    assert stats.percentile(values, 99.9) == 999
    assert stats.percentile(values, 99) == 990


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=200), st.floats(0, 100))
def test_percentile_is_a_sample_with_at_least_p_percent_at_or_below(values: list[int], p: float) -> None:
    ordered = sorted(values)
    result = stats.percentile(ordered, p)
    assert result in ordered
    at_or_below = sum(v <= result for v in ordered)
    assert at_or_below / len(ordered) * 100 >= p - 1e-9
    below = sum(v < result for v in ordered)
    assert below / len(ordered) * 100 < p or p == 0 or below == 0


def test_summarize_converts_microseconds_to_milliseconds() -> None:
    summary = stats.summarize([1000, 2000, 3000, 4000])
    assert summary is not None
    assert summary.count == 4
    assert summary.min == 1.0
    assert summary.max == 4.0
    assert summary.mean == 2.5
    assert summary.p50 == 2.0
    assert summary.p99 == 4.0
    assert math.isclose(summary.stdev, math.sqrt(1.25))


def test_summarize_nothing_is_none() -> None:
    assert stats.summarize([]) is None


def test_summarize_is_order_independent() -> None:
    values = [random.randint(1, 10**6) for _ in range(500)]
    shuffled = values[:]
    random.shuffle(shuffled)
    assert stats.summarize(values) == stats.summarize(shuffled)


def test_outcome_counts_names_client_side_outcomes() -> None:
    counts = stats.outcome_counts([201, 201, 402, stats.TIMEOUT, stats.CONNECTION_ERROR, stats.UNFINISHED])
    assert counts == {
        "201": 2,
        "402": 1,
        "connection_error": 1,
        "timeout": 1,
        "unfinished": 1,
    }


def test_timeline_groups_by_start_second() -> None:
    starts = [0, 500_000, 999_999, 1_000_000, 2_500_000]
    latencies = [10_000, 20_000, 30_000, 40_000, 50_000]
    statuses = [201, 201, 500, 201, 201]
    seconds = stats.timeline(starts, latencies, statuses)
    assert [s.second for s in seconds] == [0, 1, 2]
    assert [s.requests for s in seconds] == [3, 1, 1]
    assert [s.ok for s in seconds] == [2, 1, 1]
    assert seconds[0].p50_ms == 20.0
    assert seconds[0].p99_ms == 30.0


def test_timeline_rejects_ragged_input() -> None:
    with pytest.raises(ValueError):
        stats.timeline([0], [1, 2], [201])
