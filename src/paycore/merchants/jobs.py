"""Background jobs of the merchant directory (run by `paycore worker`, one runner at a time).

* `merchants.revoked_jti_purge` (hourly): revoked service-token ids whose token has expired (past
  the leeway) are deleted; the table only holds revocations that can still matter.
"""

from __future__ import annotations

from typing import Any

from paycore.platform.jobs import JobContext, JobDefinition

REVOKED_JTI_PURGE = "merchants.revoked_jti_purge"


async def revoked_jti_purge(ctx: JobContext, _: dict[str, Any]) -> None:
    await ctx.container.merchants.purge_revoked_jtis()


JOBS: list[JobDefinition] = [
    JobDefinition(
        name=REVOKED_JTI_PURGE,
        handler=revoked_jti_purge,
        every=3600.0,
        description="delete revoked service-token ids whose token has expired",
    ),
]
