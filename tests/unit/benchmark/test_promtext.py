from __future__ import annotations

import math

import pytest

from paycore.benchmark import promtext

pytestmark = pytest.mark.unit

EXPOSITION = r"""# HELP db_pool_acquired_connections Connections in use
# TYPE db_pool_acquired_connections gauge
db_pool_acquired_connections{pid="11"} 7.0
db_pool_acquired_connections{pid="12"} 5.0
db_pool_max_connections 50.0
http_request_duration_seconds_bucket{le="0.01",method="POST",route="/v1/payments"} 10.0
http_request_duration_seconds_bucket{le="0.05",method="POST",route="/v1/payments"} 60.0
http_request_duration_seconds_bucket{le="0.1",method="POST",route="/v1/payments"} 100.0
http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/payments"} 100.0
http_request_duration_seconds_sum{method="POST",route="/v1/payments"} 4.0
http_request_duration_seconds_count{method="POST",route="/v1/payments"} 100.0
http_request_duration_seconds_bucket{le="0.01",method="GET",route="/healthz"} 3.0
http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/healthz"} 3.0
odd_metric{path="a \"quoted\", comma",x="y"} 1.5 1700000000000
not a sample line
"""


def test_parse_reads_labels_values_and_escapes() -> None:
    samples = promtext.parse(EXPOSITION)
    odd = [s for s in samples if s.name == "odd_metric"]
    assert len(odd) == 1
    assert odd[0].labels == {"path": 'a "quoted", comma', "x": "y"}
    assert odd[0].value == 1.5
    assert all(s.name != "not" for s in samples)


def test_total_sums_across_processes() -> None:
    samples = promtext.parse(EXPOSITION)
    assert promtext.total(samples, "db_pool_acquired_connections") == 12.0
    assert promtext.total(samples, "db_pool_max_connections") == 50.0
    assert promtext.total(samples, "db_pool_waiting_acquires") is None


def test_histogram_filters_by_labels() -> None:
    samples = promtext.parse(EXPOSITION)
    hist = promtext.histogram(samples, "http_request_duration_seconds", route="/v1/payments", method="POST")
    assert hist is not None
    assert hist.count == 100
    assert hist.mean() == pytest.approx(0.04)
    assert hist.buckets[-1] == (math.inf, 100.0)
    assert promtext.histogram(samples, "nope") is None


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    samples = promtext.parse(EXPOSITION)
    hist = promtext.histogram(samples, "http_request_duration_seconds", route="/v1/payments")
    assert hist is not None
    # 50th of 100 falls in (0.01, 0.05]: 40 of its 50 observations are needed
    assert hist.quantile(0.5) == pytest.approx(0.01 + 0.04 * 40 / 50)
    assert hist.quantile(0.99) == pytest.approx(0.05 + 0.05 * 39 / 40)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    buckets = ((0.1, 1.0), (math.inf, 10.0))
    assert promtext.bucket_quantile(0.99, buckets) == 0.1
    assert promtext.bucket_quantile(0.5, ()) is None
    assert promtext.bucket_quantile(0.5, ((0.1, 0.0), (math.inf, 0.0))) is None


def test_histogram_minus_gives_the_window() -> None:
    before = promtext.Histogram(((0.01, 5.0), (0.1, 10.0), (math.inf, 10.0)), 0.5, 10.0)
    after = promtext.Histogram(((0.01, 15.0), (0.1, 40.0), (math.inf, 41.0)), 2.5, 41.0)
    delta = after.minus(before)
    assert delta.buckets == ((0.01, 10.0), (0.1, 30.0), (math.inf, 31.0))
    assert delta.count == 31.0
    assert delta.sum == pytest.approx(2.0)


def test_by_label_and_counter_delta() -> None:
    before = promtext.parse(
        'db_query_duration_seconds_count{query="a",status="ok"} 10\n'
        'db_query_duration_seconds_count{query="a",status="error"} 1\n'
        'db_query_duration_seconds_count{query="b",status="ok"} 5\n'
    )
    after = promtext.parse(
        'db_query_duration_seconds_count{query="a",status="ok"} 30\n'
        'db_query_duration_seconds_count{query="a",status="error"} 1\n'
        'db_query_duration_seconds_count{query="b",status="ok"} 5\n'
        'db_query_duration_seconds_count{query="c",status="ok"} 4\n'
    )
    by_query = promtext.by_label(after, "db_query_duration_seconds_count", "query")
    assert by_query == {"a": 31.0, "b": 5.0, "c": 4.0}
    delta = promtext.counter_delta(
        promtext.by_label(before, "db_query_duration_seconds_count", "query"), by_query
    )
    assert delta == {"a": 20.0, "c": 4.0}
    two = promtext.by_label(after, "db_query_duration_seconds_count", "query", "status")
    assert two["a/error"] == 1.0
