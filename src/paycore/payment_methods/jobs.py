"""Background jobs of saved payment methods (run by `paycore worker`, one runner at a time).

* `ach.verification_sweep` (every 5 min): pending bank accounts whose pre-note has gone
  `PAYCORE_ACH_VERIFICATION_DAYS` banking days without a return become `verified` (CRITICAL-2 query,
  batches of `PAYCORE_ACH_BATCH_SIZE`, one statement per batch).
* `ach.returns_ingest` (every 15 min): returns and NOCs from the gateway's returns report, each
  applied once; refreshes the NACHA return-rate gauges.
* `payment_methods.retention` (hourly): soft-deleted methods older than 90 days are purged.

Each body is also a plain function of the service (`verify_due`, `ingest_returns`,
`purge_deleted`) so tests can run it directly against the database and the simulator.
"""

from __future__ import annotations

from typing import Any

import structlog

from paycore.platform.jobs import JobContext, JobDefinition

log = structlog.get_logger("paycore.payment_methods.jobs")

VERIFICATION_SWEEP = "ach.verification_sweep"
RETURNS_INGEST = "ach.returns_ingest"
RETENTION = "payment_methods.retention"
TOKEN_REFRESH = "ach.token_refresh"


async def verification_sweep(ctx: JobContext, _: dict[str, Any]) -> None:
    await ctx.container.payment_methods.verify_due()


async def returns_ingest(ctx: JobContext, _: dict[str, Any]) -> None:
    result = await ctx.container.payment_methods.ingest_returns()
    if result.applied or result.unavailable:
        log.info(
            "ach_returns_ingested",
            merchants=result.merchants,
            applied=result.applied,
            unavailable=result.unavailable,
        )


async def token_refresh(ctx: JobContext, _: dict[str, Any]) -> None:
    await ctx.container.payment_methods.refresh_ach_tokens()


async def retention(ctx: JobContext, _: dict[str, Any]) -> None:
    await ctx.container.payment_methods.purge_deleted()


JOBS: list[JobDefinition] = [
    JobDefinition(
        name=VERIFICATION_SWEEP,
        handler=verification_sweep,
        every=300.0,
        description="verify pending bank accounts whose pre-note cleared (3 banking days, no return)",
    ),
    JobDefinition(
        name=RETURNS_INGEST,
        handler=returns_ingest,
        every=900.0,
        description="ingest ACH returns and NOCs from the gateway's returns report",
    ),
    JobDefinition(
        name=TOKEN_REFRESH,
        handler=token_refresh,
        every=21600.0,
        description="renew bank-account tokens (pre-note Financial BRICs) before their 13 months lapse",
    ),
    JobDefinition(
        name=RETENTION,
        handler=retention,
        every=3600.0,
        description="purge payment methods deleted more than 90 days ago",
    ),
]
