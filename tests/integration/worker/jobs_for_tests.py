"""Jobs used by the worker tests (in process and in a `paycore worker` child process).

Each run records its phases in `test_job_runs` (created on demand in the test database), so a
test can count how often a job started and finished, and on which worker.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from paycore.platform.context import traceparent_var
from paycore.platform.db import Database, Query, Tier
from paycore.platform.jobs import JobContext, JobDefinition

CREATE = Query(
    "test.create_runs",
    Tier.SIMPLE,
    """CREATE TABLE IF NOT EXISTS test_job_runs (
           seq bigint GENERATED ALWAYS AS IDENTITY, job text NOT NULL, key text, phase text NOT NULL,
           worker text, attempt int, scheduled_for timestamptz, traceparent text,
           at timestamptz NOT NULL DEFAULT clock_timestamp())""",
)
RECORD = Query(
    "test.record_run",
    Tier.SIMPLE,
    "INSERT INTO test_job_runs (job, key, phase, worker, attempt, scheduled_for, traceparent) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)",
)


async def ensure_table(db: Database) -> None:
    await db.execute(CREATE)


async def _record(ctx: JobContext, job: str, key: str | None, phase: str) -> None:
    await ctx.container.db.execute(
        RECORD,
        job,
        key,
        phase,
        ctx.container.extras.get("worker_label", str(os.getpid())),
        ctx.attempt,
        ctx.scheduled_for,
        traceparent_var.get(),
    )


async def record(ctx: JobContext, payload: dict[str, Any]) -> None:
    await _record(ctx, "test.record", payload.get("key"), "done")


async def slow(ctx: JobContext, payload: dict[str, Any]) -> None:
    await _record(ctx, "test.slow", payload.get("key"), "started")
    await asyncio.sleep(float(payload.get("sleep", 1.0)))
    await _record(ctx, "test.slow", payload.get("key"), "finished")


async def failing(ctx: JobContext, payload: dict[str, Any]) -> None:
    await _record(ctx, "test.failing", payload.get("key"), "started")
    raise RuntimeError("boom")


async def tick(ctx: JobContext, payload: dict[str, Any]) -> None:
    await _record(ctx, "test.tick", None, "started")
    await asyncio.sleep(0.15)
    await _record(ctx, "test.tick", None, "finished")


ON_DEMAND = [
    JobDefinition("test.record", record),
    JobDefinition("test.slow", slow),
    JobDefinition("test.failing", failing, max_attempts=2),
    JobDefinition("test.timeout", slow, timeout=0.3),
]


def main() -> int:
    """`python -m tests.integration.worker.jobs_for_tests`: a real `paycore worker` plus these jobs."""
    from paycore import worker

    return worker.run(extra_jobs=ON_DEMAND)


if __name__ == "__main__":
    sys.exit(main())
