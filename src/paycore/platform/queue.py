"""The PostgreSQL job queue behind `paycore worker` (ADR 0004). Implements `platform.jobs.JobQueue`.

Two tables (migration 0004):

* `jobs`: on-demand jobs. `enqueue(con, …)` is one INSERT in the caller's transaction, so a job
  exists if and only if the change that caused it committed. A worker claims due rows with
  `FOR UPDATE SKIP LOCKED`, marking them `running` under a lease (`locked_until`) that it renews
  while the job runs. A worker that dies stops renewing: `reap()` puts its jobs back in the queue
  once the lease lapses, and another worker runs them again (handlers are idempotent). A failure
  is retried after a backoff until `max_attempts`, then the job is `dead`. `dedupe_key` makes a
  second enqueue of the same (name, key) a no-op while the first is queued or running.
* `job_schedules`: one row per periodic job. A worker claims a due row with
  `UPDATE … WHERE next_run_at <= now() AND lease free … FOR UPDATE SKIP LOCKED`, moving
  `next_run_at` forward in the same statement: exactly one worker runs each period, and the lease
  keeps the next period from starting while a run is still going.

Every statement is a named `Query` with a timeout tier; nothing here holds a connection while a
job runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paycore.kernel.ids import uuid7
from paycore.platform.context import traceparent_var
from paycore.platform.db import Connection, Database, Query, Tier

__all__ = ["ClaimedJob", "ClaimedSchedule", "PgJobQueue", "QueueStats"]

ENQUEUE = Query(
    "jobs.enqueue",
    Tier.SIMPLE,
    """
    INSERT INTO jobs (id, name, payload, run_at, max_attempts, dedupe_key, traceparent)
    VALUES ($1, $2, $3, coalesce($4, now()), $5, $6, $7)
    ON CONFLICT (name, dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')
    DO NOTHING
    RETURNING id
    """,
)
CLAIM = Query(
    "jobs.claim",
    Tier.SIMPLE,
    """
    WITH due AS (
        SELECT id FROM jobs
         WHERE status = 'queued' AND run_at <= now() AND name = ANY($1::text[])
         ORDER BY run_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs j
       SET status = 'running', attempts = j.attempts + 1, locked_by = $3,
           locked_until = now() + make_interval(secs => $4), updated_at = now()
      FROM due
     WHERE j.id = due.id
    RETURNING j.id, j.name, j.payload, j.attempts, j.max_attempts, j.traceparent, j.run_at,
              extract(epoch FROM now() - j.run_at)::float8 AS lag
    """,
)
COMPLETE = Query(
    "jobs.complete",
    Tier.SIMPLE,
    """
    UPDATE jobs SET status = 'succeeded', locked_by = NULL, locked_until = NULL, last_error = NULL,
                    updated_at = now(), finished_at = now()
     WHERE id = $1 AND status = 'running' AND locked_by = $2
    """,
)
FAIL = Query(
    "jobs.fail",
    Tier.SIMPLE,
    """
    UPDATE jobs
       SET status = CASE WHEN attempts >= $5 THEN 'dead' ELSE 'queued' END,
           run_at = CASE WHEN attempts >= $5 THEN run_at ELSE now() + make_interval(secs => $3) END,
           finished_at = CASE WHEN attempts >= $5 THEN now() END,
           locked_by = NULL, locked_until = NULL, last_error = $4, updated_at = now()
     WHERE id = $1 AND status = 'running' AND locked_by = $2
    RETURNING status
    """,
)
RELEASE = Query(
    "jobs.release",
    Tier.SIMPLE,
    """
    UPDATE jobs
       SET status = 'queued', attempts = greatest(attempts - 1, 0), locked_by = NULL, locked_until = NULL,
           updated_at = now()
     WHERE id = ANY($1::uuid[]) AND status = 'running' AND locked_by = $2
    """,
)
HEARTBEAT = Query(
    "jobs.heartbeat",
    Tier.SIMPLE,
    """
    UPDATE jobs SET locked_until = now() + make_interval(secs => $3)
     WHERE id = ANY($1::uuid[]) AND status = 'running' AND locked_by = $2
    """,
)
REAP = Query(
    "jobs.reap",
    Tier.STANDARD,
    """
    WITH lapsed AS (
        SELECT id FROM jobs WHERE status = 'running' AND locked_until < now()
         ORDER BY locked_until LIMIT $1 FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs j
       SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'queued' END,
           finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
           last_error = 'lease expired (worker lost)', locked_by = NULL, locked_until = NULL,
           updated_at = now()
      FROM lapsed
     WHERE j.id = lapsed.id
    RETURNING j.id, j.name, j.status
    """,
)
PURGE = Query(
    "jobs.purge",
    Tier.STANDARD,
    """
    DELETE FROM jobs
     WHERE id = ANY (ARRAY(SELECT id FROM jobs
                            WHERE status IN ('succeeded', 'dead')
                              AND finished_at < now() - make_interval(secs => $1)
                            LIMIT $2))
    """,
)
DEPTH = Query(
    "jobs.depth",
    Tier.STANDARD,
    """
    SELECT name, count(*)::int AS depth, extract(epoch FROM now() - min(run_at))::float8 AS lag
      FROM jobs WHERE status = 'queued' AND run_at <= now()
     GROUP BY name
    """,
)
GET_JOB = Query("jobs.get", Tier.SIMPLE, "SELECT * FROM jobs WHERE id = $1")

REGISTER_SCHEDULE = Query(
    "job_schedules.register",
    Tier.SIMPLE,
    """
    INSERT INTO job_schedules (name, every_seconds, next_run_at)
    VALUES ($1, $2, now())
    ON CONFLICT (name) DO UPDATE
       SET every_seconds = EXCLUDED.every_seconds,
           next_run_at = least(job_schedules.next_run_at,
                               now() + make_interval(secs => EXCLUDED.every_seconds))
    """,
)
CLAIM_SCHEDULES = Query(
    "job_schedules.claim",
    Tier.SIMPLE,
    """
    WITH due AS (
        SELECT name FROM job_schedules
         WHERE name = ANY($1::text[]) AND next_run_at <= now()
           AND (locked_until IS NULL OR locked_until < now())
         ORDER BY next_run_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED
    )
    UPDATE job_schedules s
       SET scheduled_for = s.next_run_at,
           next_run_at = now() + make_interval(secs => s.every_seconds),
           locked_by = $3, locked_until = now() + make_interval(secs => $4),
           last_started_at = now(), runs = s.runs + 1
      FROM due
     WHERE s.name = due.name
    RETURNING s.name, s.scheduled_for, extract(epoch FROM now() - s.scheduled_for)::float8 AS lag
    """,
)
FINISH_SCHEDULE = Query(
    "job_schedules.finish",
    Tier.SIMPLE,
    """
    UPDATE job_schedules
       SET locked_by = NULL, locked_until = NULL, last_finished_at = now(), last_status = $3, last_error = $4
     WHERE name = $1 AND locked_by = $2
    """,
)
RELEASE_SCHEDULES = Query(
    "job_schedules.release",
    Tier.SIMPLE,
    """
    UPDATE job_schedules
       SET locked_by = NULL, locked_until = NULL, next_run_at = least(next_run_at, now()),
           last_status = 'released'
     WHERE name = ANY($1::text[]) AND locked_by = $2
    """,
)
HEARTBEAT_SCHEDULES = Query(
    "job_schedules.heartbeat",
    Tier.SIMPLE,
    """
    UPDATE job_schedules SET locked_until = now() + make_interval(secs => $3)
     WHERE name = ANY($1::text[]) AND locked_by = $2
    """,
)
OVERDUE_SCHEDULES = Query(
    "job_schedules.overdue",
    Tier.SIMPLE,
    """
    SELECT name, greatest(extract(epoch FROM now() - next_run_at), 0)::float8 AS lag,
           (next_run_at <= now() AND (locked_until IS NULL OR locked_until < now())) AS due
      FROM job_schedules WHERE name = ANY($1::text[])
    """,
)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: uuid.UUID
    name: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    traceparent: str | None
    run_at: datetime
    lag: float


@dataclass(frozen=True, slots=True)
class ClaimedSchedule:
    name: str
    scheduled_for: datetime
    lag: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: dict[str, int]
    lag: dict[str, float]


class PgJobQueue:
    """`JobQueue` on PostgreSQL, plus the worker's side (claims, leases, schedules)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- producer side (JobQueue protocol) ---------------------------------------------------
    async def enqueue(
        self,
        con: Connection,
        name: str,
        payload: dict[str, Any],
        *,
        run_at: datetime | None = None,
        dedupe_key: str | None = None,
        max_attempts: int = 5,
    ) -> uuid.UUID | None:
        """Insert a job in the caller's transaction. With `dedupe_key`, a second enqueue of the
        same (name, dedupe_key) while the first is queued or running returns None."""
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        job_id: uuid.UUID | None = await con.fetchval(
            ENQUEUE, uuid7(), name, payload, run_at, max_attempts, dedupe_key, traceparent_var.get()
        )
        return job_id

    # -- worker side ---------------------------------------------------------------------------
    async def claim(self, names: list[str], limit: int, worker_id: str, lease: float) -> list[ClaimedJob]:
        if limit <= 0 or not names:
            return []
        rows = await self.db.fetch(CLAIM, names, limit, worker_id, lease)
        return [
            ClaimedJob(
                id=r["id"],
                name=r["name"],
                payload=dict(r["payload"] or {}),
                attempt=r["attempts"],
                max_attempts=r["max_attempts"],
                traceparent=r["traceparent"],
                run_at=r["run_at"],
                lag=max(float(r["lag"]), 0.0),
            )
            for r in rows
        ]

    async def complete(self, job_id: uuid.UUID, worker_id: str) -> bool:
        return (await self.db.execute(COMPLETE, job_id, worker_id)).endswith(" 1")

    async def fail(
        self, job_id: uuid.UUID, worker_id: str, retry_in: float, error: str, max_attempts: int
    ) -> str | None:
        """Back to the queue after `retry_in` seconds, or `dead` once `max_attempts` (the job
        definition's) were made. Returns the new status."""
        status: str | None = await self.db.fetchval(
            FAIL, job_id, worker_id, retry_in, error[:500], max_attempts
        )
        return status

    async def release(self, job_ids: list[uuid.UUID], worker_id: str) -> None:
        """Give held jobs back unrun (graceful stop): the attempt does not count."""
        if job_ids:
            await self.db.execute(RELEASE, job_ids, worker_id)

    async def heartbeat(
        self, job_ids: list[uuid.UUID], schedules: list[str], worker_id: str, lease: float
    ) -> None:
        if job_ids:
            await self.db.execute(HEARTBEAT, job_ids, worker_id, lease)
        if schedules:
            await self.db.execute(HEARTBEAT_SCHEDULES, schedules, worker_id, lease)

    async def reap(self, limit: int = 100) -> list[tuple[uuid.UUID, str, str]]:
        """Requeue (or bury) running jobs whose lease lapsed: their worker is gone."""
        rows = await self.db.fetch(REAP, limit)
        return [(r["id"], r["name"], r["status"]) for r in rows]

    async def purge(self, older_than: float, batch: int = 1000) -> int:
        status = await self.db.execute(PURGE, older_than, batch)
        return int(status.split()[-1])

    async def stats(self) -> QueueStats:
        rows = await self.db.fetch(DEPTH)
        return QueueStats(
            depth={r["name"]: r["depth"] for r in rows},
            lag={r["name"]: max(float(r["lag"]), 0.0) for r in rows},
        )

    async def get(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.db.fetchrow(GET_JOB, job_id)
        return dict(row) if row is not None else None

    # -- schedules ---------------------------------------------------------------------------------
    async def register_schedules(self, schedules: dict[str, float]) -> None:
        async with self.db.transaction() as con:
            for name, every in sorted(schedules.items()):
                await con.execute(REGISTER_SCHEDULE, name, every)

    async def claim_schedules(
        self, names: list[str], limit: int, worker_id: str, lease: float
    ) -> list[ClaimedSchedule]:
        if limit <= 0 or not names:
            return []
        rows = await self.db.fetch(CLAIM_SCHEDULES, names, limit, worker_id, lease)
        return [
            ClaimedSchedule(name=r["name"], scheduled_for=r["scheduled_for"], lag=max(float(r["lag"]), 0.0))
            for r in rows
        ]

    async def finish_schedule(self, name: str, worker_id: str, status: str, error: str | None) -> None:
        await self.db.execute(FINISH_SCHEDULE, name, worker_id, status, error[:500] if error else None)

    async def release_schedules(self, names: list[str], worker_id: str) -> None:
        """A stopped worker's unfinished periodic runs become due again at once."""
        if names:
            await self.db.execute(RELEASE_SCHEDULES, names, worker_id)

    async def overdue_schedules(self, names: list[str]) -> dict[str, tuple[bool, float]]:
        rows = await self.db.fetch(OVERDUE_SCHEDULES, names)
        return {r["name"]: (bool(r["due"]), float(r["lag"])) for r in rows}
