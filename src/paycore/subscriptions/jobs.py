"""Background job of subscriptions: the recurring billing run (`paycore worker`).

`subscriptions.bill_due` runs every `PAYCORE_BILLING_INTERVAL`, one run at a time across workers
(a scheduled job); its body is `bill_due()`, a plain coroutine tests call directly. Safe to run
concurrently anyway (claims are `FOR UPDATE SKIP LOCKED`, every attempt idempotent) and to re-run
after a crash or a timeout (attempts left `pending` are resumed, never made twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from paycore.platform.jobs import JobContext, JobDefinition

if TYPE_CHECKING:
    from paycore.config import Settings
    from paycore.subscriptions.service import BillingReport, SubscriptionService

BILL_DUE = "subscriptions.bill_due"


async def bill_due(service: SubscriptionService, now: datetime | None = None) -> BillingReport:
    """Charge every subscription due at `now` (default: the service's clock)."""
    return await service.bill_due(now)


async def _bill_due_job(ctx: JobContext, _: dict[str, Any]) -> None:
    service = ctx.container.subscriptions
    if service is not None:
        await bill_due(service)


def jobs(settings: Settings) -> list[JobDefinition]:
    return [
        JobDefinition(
            BILL_DUE,
            _bill_due_job,
            every=settings.billing_interval,
            description="charge due subscriptions (one charge per period, dunning, past_due)",
        )
    ]
