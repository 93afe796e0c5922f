"""Dispute jobs for `paycore worker`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from paycore.platform.jobs import JobContext, JobDefinition

if TYPE_CHECKING:
    from paycore.config import Settings

log = structlog.get_logger("paycore.disputes.jobs")


async def sync(ctx: JobContext, _: dict[str, Any]) -> None:
    service = ctx.container.disputes
    if service is None:
        return
    counts = await service.sync_all()
    if counts.get("created") or counts.get("updated") or counts.get("failed"):
        log.info("disputes_synced", **counts)


def jobs(settings: Settings) -> list[JobDefinition]:
    if not settings.north_api_url:
        return []
    return [
        JobDefinition(
            "disputes.sync",
            sync,
            every=settings.dispute_sync_interval,
            description="read North's dispute report per merchant (overlapping windows) and upsert",
        )
    ]
