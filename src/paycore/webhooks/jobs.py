"""Webhook jobs for `paycore worker`: fan-out of the outbox, delivery of due attempts, retention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paycore.platform.jobs import JobContext, JobDefinition

MAX_ROUNDS = 20  # batches per run; the next period picks up the rest

if TYPE_CHECKING:
    from paycore.config import Settings


async def dispatch(ctx: JobContext, _: dict[str, Any]) -> None:
    """Outbox → deliveries, then send what became due (first attempts go out without waiting for
    the next `webhooks.deliver` period)."""
    service = ctx.container.webhooks
    for _round in range(MAX_ROUNDS):
        if not await service.dispatch():
            break
    for _round in range(MAX_ROUNDS):
        if not await service.deliver_due():
            break


async def deliver(ctx: JobContext, _: dict[str, Any]) -> None:
    """Due deliveries (retries included); several workers never send the same attempt twice."""
    service = ctx.container.webhooks
    for _round in range(MAX_ROUNDS):
        if not await service.deliver_due():
            break


async def purge(ctx: JobContext, _: dict[str, Any]) -> None:
    await ctx.container.webhooks.purge()


def jobs(settings: Settings) -> list[JobDefinition]:
    return [
        JobDefinition(
            "webhooks.dispatch",
            dispatch,
            every=settings.webhook_poll_interval,
            description="fan new outbox events out to webhook deliveries and send them",
        ),
        JobDefinition(
            "webhooks.deliver",
            deliver,
            every=settings.webhook_poll_interval,
            description="send due webhook deliveries (retries)",
        ),
        JobDefinition(
            "webhooks.purge",
            purge,
            every=settings.retention_interval,
            description="delete events older than PAYCORE_WEBHOOK_EVENT_RETENTION",
        ),
    ]
