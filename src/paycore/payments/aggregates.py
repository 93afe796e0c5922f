"""MON-2 business aggregates: active customers, payments per customer, time to first payment.

Computed by the `payments.business_aggregates` job of `paycore worker` every 5 minutes from two
REPORT-tier queries (`payments.customer_activity`, `payments.merchant_first_payments`), never per
request. A *payment* is an approved sale or authorization (captures, refunds and voids are not).

* `active_customers{merchant}` (gauge): distinct customers with a payment in the last 30 days. Every
  run sets every label (the slugs of `PAYCORE_METRICS_MERCHANT_LABELS` and `other`, 0 when none), so
  a value never goes stale. Multiprocess mode `mostrecent`: the value of the last run wins, whichever
  worker process ran it (a dead worker's older, larger value does not, as it would under `max`).
* `customer_transaction_count{merchant}` (histogram): each run observes every active customer's
  number of payments in the 30 days once. The distribution of one run is therefore
  `increase(customer_transaction_count_bucket[…])` over a window holding a run (quantiles do not
  depend on how many runs the window holds).
* `merchant_time_to_first_payment_seconds` (histogram, no labels): each run observes, for every
  merchant that has had a payment, the time from the merchant's creation to its first payment —
  the same snapshot convention.

Merchant labels are bounded: the slug when it is in `PAYCORE_METRICS_MERCHANT_LABELS`, else `other`.

Several worker instances: each period runs in one of them, so another instance may still export an
older `active_customers`. `business_aggregates_timestamp_seconds` (set last, `mostrecent`) tells
which instance published last; queries keep that instance's gauge (docs/observability.md). The
histograms need nothing: each observation is made once, in one instance, and sums add up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from paycore.payments.repository import AggregateRepository, CustomerActivity, MerchantFirstPayment
from paycore.platform.observability import metrics as m

ACTIVE_WINDOW: Final = timedelta(days=30)
OTHER: Final = "other"
_YIELD_EVERY: Final = 5000  # observations between two yields to the event loop


@dataclass(slots=True)
class BusinessAggregates:
    """One run's values, by merchant label."""

    active_customers: dict[str, int] = field(default_factory=dict)
    # label -> {payments of one customer: customers with that many}
    payments_per_customer: dict[str, dict[int, int]] = field(default_factory=dict)
    # seconds from merchant creation to its first payment, one entry per activated merchant
    time_to_first_payment: list[float] = field(default_factory=list)
    merchants: int = 0


def merchant_label(slug: str, labelled: frozenset[str]) -> str:
    return slug if slug in labelled else OTHER


def compute(
    activity: Iterable[CustomerActivity],
    merchants: Iterable[MerchantFirstPayment],
    labelled: frozenset[str],
) -> BusinessAggregates:
    """Fold the query rows into labelled values (pure)."""
    out = BusinessAggregates(active_customers={label: 0 for label in (*sorted(labelled), OTHER)})
    labels: dict[object, str] = {}
    for merchant in merchants:
        out.merchants += 1
        labels[merchant.id] = merchant_label(merchant.slug, labelled)
        if merchant.first_payment_at is not None:
            elapsed = (merchant.first_payment_at - merchant.created_at).total_seconds()
            out.time_to_first_payment.append(max(elapsed, 0.0))
    for row in activity:
        label = labels.get(row.merchant_id, OTHER)
        out.active_customers[label] = out.active_customers.get(label, 0) + row.customers
        counts = out.payments_per_customer.setdefault(label, {})
        counts[row.payments] = counts.get(row.payments, 0) + row.customers
    return out


async def publish(values: BusinessAggregates) -> None:
    """Set the gauges and observe the histograms (yielding now and then: a large merchant base
    means many observations)."""
    for label, count in values.active_customers.items():
        m.ACTIVE_CUSTOMERS.labels(label).set(count)
    done = 0
    for label, counts in values.payments_per_customer.items():
        child = m.CUSTOMER_TRANSACTION_COUNT.labels(label)
        for payments, customers in counts.items():
            for _ in range(customers):
                child.observe(payments)
                done += 1
                if done % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
    for seconds in values.time_to_first_payment:
        m.MERCHANT_TIME_TO_FIRST_PAYMENT.observe(seconds)
    m.BUSINESS_AGGREGATES_TIMESTAMP.set(time.time())


async def run(repo: AggregateRepository, labelled: frozenset[str], now: datetime) -> BusinessAggregates:
    """Query, fold and publish (the job's body)."""
    activity = await repo.customer_activity(now - ACTIVE_WINDOW)
    merchants = await repo.merchant_first_payments()
    values = compute(activity, merchants, labelled)
    await publish(values)
    return values
