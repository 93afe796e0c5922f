"""Background jobs: the contract between capabilities and the worker (`paycore worker`).

A capability declares its jobs in its own `jobs.py` as `JobDefinition`s; `bootstrap.job_definitions()`
collects them; the worker runs them. Two kinds:

* **scheduled** (`every` set): the worker runs it periodically, one runner at a time across all
  workers (advisory-locked / claimed), under the job budget (`PAYCORE_JOB_TIMEOUT`).
* **on demand** (`every` None): enqueued with `JobQueue.enqueue(con, name, payload)` **inside the
  same database transaction** as the change that causes it (transactional enqueue), claimed with
  `FOR UPDATE SKIP LOCKED`, retried with backoff up to `max_attempts`.

Handlers receive a `JobContext` (the composition root's `Container`, the job id, the attempt number
and, for scheduled runs, the time it was due) and the JSON payload. They must be idempotent: a job
may run again after a crash or a lost lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from paycore.bootstrap import Container
    from paycore.platform.db import Connection


@dataclass(frozen=True, slots=True)
class JobContext:
    container: Container
    job_id: uuid.UUID | None
    attempt: int
    scheduled_for: datetime | None = None
    traceparent: str | None = None


JobHandler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobDefinition:
    name: str  # "<capability>.<job>", e.g. "ach.verification_sweep"
    handler: JobHandler
    every: float | None = None  # seconds between scheduled runs; None = enqueued on demand
    max_attempts: int = 5
    timeout: float | None = None  # None = PAYCORE_JOB_TIMEOUT
    description: str = ""


class JobQueue(Protocol):
    async def enqueue(
        self,
        con: Connection,
        name: str,
        payload: dict[str, Any],
        *,
        run_at: datetime | None = None,
        dedupe_key: str | None = None,
    ) -> uuid.UUID | None:
        """Insert a job in the caller's transaction. With `dedupe_key`, a second enqueue of the
        same (name, dedupe_key) while the first is pending is a no-op returning None."""
        ...
