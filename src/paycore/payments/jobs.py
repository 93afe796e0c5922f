"""Background jobs of payments (run by `paycore worker`, one runner at a time).

* `payments.business_aggregates` (every 5 min): the MON-2 business aggregates — `active_customers`,
  `customer_transaction_count`, `merchant_time_to_first_payment_seconds` — from two REPORT-tier
  queries (see `payments.aggregates`). Read-only and idempotent.

  Not gated by the `merchant_reporting` kill switch: that switch is the asynchronous reporting
  *to merchants* (RES-8, RES-11), while these are the operators' monitoring metrics (roadmap §4.1,
  MON-2); degraded mode must not blind the business dashboards.

(`payments.reconcile` is a built-in job of the worker, `paycore.worker.builtin_jobs`.)
"""

from __future__ import annotations

from typing import Any

import structlog

from paycore.payments import aggregates
from paycore.payments.repository import AggregateRepository
from paycore.platform.jobs import JobContext, JobDefinition

log = structlog.get_logger("paycore.payments.jobs")

BUSINESS_AGGREGATES = "payments.business_aggregates"


async def business_aggregates(ctx: JobContext, _: dict[str, Any]) -> None:
    container = ctx.container
    values = await aggregates.run(
        AggregateRepository(container.db),
        frozenset(container.settings.metrics_merchant_labels),
        container.clock.now(),
    )
    log.debug(
        "business_aggregates_published",
        merchants=values.merchants,
        active_customers=sum(values.active_customers.values()),
        activated_merchants=len(values.time_to_first_payment),
    )


JOBS: list[JobDefinition] = [
    JobDefinition(
        name=BUSINESS_AGGREGATES,
        handler=business_aggregates,
        every=300.0,
        description="MON-2 gauges: active customers (30 days), payments per customer, time to first payment",
    ),
]
