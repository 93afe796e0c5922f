"""MON-2 aggregates: the pure fold, and what `/metrics` shows in prometheus multiprocess mode when
the values come from worker processes (one run in one process, the next run in another)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from paycore.payments import aggregates
from paycore.payments.repository import CustomerActivity, MerchantFirstPayment
from paycore.platform.observability import metrics as m

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_compute_labels_merchants_through_the_allow_list() -> None:
    acme, globex, initech, unknown = (uuid.uuid4() for _ in range(4))
    merchants = [
        MerchantFirstPayment(acme, "acme", T0, T0 + timedelta(hours=2)),
        MerchantFirstPayment(globex, "globex", T0, T0 + timedelta(days=3)),
        MerchantFirstPayment(initech, "initech", T0, None),
    ]
    activity = [
        CustomerActivity(acme, 1, 10),
        CustomerActivity(acme, 7, 2),
        CustomerActivity(globex, 1, 3),
        CustomerActivity(initech, 1, 4),
        CustomerActivity(unknown, 2, 1),  # a merchant created after the merchant read: `other`
    ]
    values = aggregates.compute(activity, merchants, frozenset({"acme", "ghost"}))
    assert values.active_customers == {"acme": 12, "ghost": 0, "other": 8}
    assert values.payments_per_customer == {"acme": {1: 10, 7: 2}, "other": {1: 7, 2: 1}}
    assert values.time_to_first_payment == [7200.0, 3 * 86400.0]
    assert values.merchants == 3


def test_compute_without_allow_list_has_one_label() -> None:
    values = aggregates.compute([], [], frozenset())
    assert values.active_customers == {"other": 0}
    assert values.payments_per_customer == {} and values.time_to_first_payment == []


def test_the_aggregate_gauges_keep_the_most_recent_value_across_processes() -> None:
    assert m.ACTIVE_CUSTOMERS._multiprocess_mode == "mostrecent"
    assert m.BUSINESS_AGGREGATES_TIMESTAMP._multiprocess_mode == "mostrecent"


_PUBLISH = """
import asyncio, sys
from paycore.payments.aggregates import BusinessAggregates, publish
active, per_customer, ttfp = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
asyncio.run(publish(BusinessAggregates(
    active_customers={"acme": active, "other": 1},
    payments_per_customer={"acme": {per_customer: 2}},
    time_to_first_payment=[ttfp],
)))
"""
_RENDER = """
import sys
from paycore.platform.observability import metrics as m
sys.stdout.write(m.render()[0].decode())
"""


def _python(code: str, directory: Path, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_worker_values_on_metrics_in_multiprocess_mode(tmp_path: Path) -> None:
    # run 1 in one worker process (it exits), run 2 in another with fewer active customers
    started = time.time()
    _python(_PUBLISH, tmp_path, "10", "3", "3600")
    between = time.time()
    _python(_PUBLISH, tmp_path, "6", "30", "7200")
    text = _python(_RENDER, tmp_path)
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    # the last run's value, not the larger one of the dead process (`max` would show 10)
    assert samples[("active_customers", (("merchant", "acme"),))] == 6
    assert samples[("active_customers", (("merchant", "other"),))] == 1
    # one series per label (no `pid` label: the processes are merged)
    assert sorted(
        s.labels["merchant"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "active_customers" and "pid" not in s.labels
    ) == ["acme", "other"]
    # histograms are summed over the processes: 2 + 2 observations, 2 + 2 merchants
    acme = (("merchant", "acme"),)
    assert samples[("customer_transaction_count_count", acme)] == 4
    assert samples[("customer_transaction_count_sum", acme)] == 2 * 3 + 2 * 30
    assert samples[("customer_transaction_count_bucket", (("le", "5.0"), ("merchant", "acme")))] == 2
    assert samples[("customer_transaction_count_bucket", (("le", "50.0"), ("merchant", "acme")))] == 4
    assert samples[("merchant_time_to_first_payment_seconds_count", ())] == 2
    assert samples[("merchant_time_to_first_payment_seconds_sum", ())] == 10800
    assert samples[("merchant_time_to_first_payment_seconds_bucket", (("le", "3600.0"),))] == 1
    # when this instance last published: the second run's time (one series, no pid)
    assert between <= samples[("business_aggregates_timestamp_seconds", ())] <= time.time()
    assert started < between
