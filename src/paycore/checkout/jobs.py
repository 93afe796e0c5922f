"""Hosted-checkout background jobs (platform/jobs.py contract).

`checkout.expire_sessions` (every minute): open sessions whose last TAC lapsed more than the grace
period ago become `expired`, and their pending Browser Post transaction with them (never
`declined`; a genuine callback arriving later is still applied, and alerted). Idempotent: it only
moves rows that are still open, with `SKIP LOCKED`, so several workers never fight over a row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from paycore.platform.jobs import JobContext, JobDefinition

if TYPE_CHECKING:
    from paycore.checkout.service import CheckoutService

EXPIRE_EVERY: Final = 60.0


async def expire_sessions(checkout: CheckoutService) -> dict[str, int]:
    """The job's body as a plain function (tests, the CLI, other schedulers)."""
    return await checkout.expire_sessions()


async def _expire_sessions_job(ctx: JobContext, _: dict[str, Any]) -> None:
    checkout: CheckoutService | None = getattr(ctx.container, "checkout", None)
    if checkout is not None:
        await expire_sessions(checkout)


JOBS: Final = (
    JobDefinition(
        "checkout.expire_sessions",
        _expire_sessions_job,
        every=EXPIRE_EVERY,
        description="expire pending Browser Post transactions 15 min after their last TAC + 10 min grace",
    ),
)
