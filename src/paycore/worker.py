"""`paycore worker`: the background-job process (design.md §1, RES-M5, ADR 0004).

It runs every `JobDefinition` of the capabilities (`bootstrap.job_definitions`) plus the built-in
maintenance jobs below, on the PostgreSQL queue of `platform.queue`:

* **periodic jobs** (`every` set): each period is claimed by exactly one worker across all
  processes (a `job_schedules` row claimed with `SKIP LOCKED`, its lease renewed while it runs);
* **on-demand jobs**: claimed with `FOR UPDATE SKIP LOCKED` under a lease, retried with backoff,
  `dead` after `max_attempts`; a killed worker's jobs run again once its lease lapses.

At most `PAYCORE_WORKER_CONCURRENCY` jobs run at once, each under its timeout (`PAYCORE_JOB_TIMEOUT`
unless the definition sets one) as the deadline its inner calls see, with the `traceparent` of the
change that enqueued it. Metrics per job: `job_runs_total{job_name,status}`, `job_duration_seconds{job_name}`,
`job_queue_depth{job_name}`, `job_lag_seconds{job_name}`; served with `/healthz` and `/readyz` on
`PAYCORE_WORKER_METRICS_PORT`.

Graceful stop (SIGTERM/SIGINT): `/readyz` turns 503, no new claims, held jobs get until the
deadline to finish, the rest are cancelled and released (queued again, the attempt not counted;
periodic runs due again at once), then HTTP sessions and the pool close.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aiohttp import web

from paycore.bootstrap import Container, build_container, job_definitions
from paycore.config import Settings, load_settings
from paycore.platform.context import traceparent_var
from paycore.platform.db import migrate
from paycore.platform.db.pool import PING
from paycore.platform.jobs import JobContext, JobDefinition
from paycore.platform.observability import metrics as m
from paycore.platform.observability import runtime, tracing
from paycore.platform.observability.logging import configure_logging, flush_logs
from paycore.platform.queue import ClaimedJob, ClaimedSchedule, PgJobQueue
from paycore.platform.resilience import deadline as dl
from paycore.platform.resilience.backoff import backoff_delay

log = structlog.get_logger("paycore.worker")

__all__ = ["Worker", "builtin_jobs", "main", "run"]


# --- built-in maintenance jobs -------------------------------------------------------------------
async def _reconcile(ctx: JobContext, _: dict[str, Any]) -> None:
    settings = ctx.container.settings
    counts = await ctx.container.payments.reconcile(older_than=settings.reconcile_after)
    if any(counts.get(k) for k in ("approved", "declined", "failed")):
        log.info("payments_reconciled", **counts)


async def _purge_idempotency(ctx: JobContext, _: dict[str, Any]) -> None:
    total = 0
    while True:
        purged = await ctx.container.idempotency.repo.purge_expired(1000)
        total += purged
        if purged < 1000:
            break
    if total:
        log.info("idempotency_keys_purged", count=total)


async def _purge_jobs(ctx: JobContext, _: dict[str, Any]) -> None:
    total = 0
    while True:
        purged = await ctx.container.jobs.purge(ctx.container.settings.job_retention, 1000)
        total += purged
        if purged < 1000:
            break
    if total:
        log.info("jobs_purged", count=total)


_JOB_SPAN_ATTRS: dict[str, str] = {"paycore.component": "worker"}


def builtin_jobs(settings: Settings) -> list[JobDefinition]:
    """Jobs of the platform itself (reconciliation of unknown payments and retention)."""
    return [
        JobDefinition(
            "payments.reconcile",
            _reconcile,
            every=settings.reconcile_interval,
            description="resolve pending/unknown payments against the gateway report",
        ),
        JobDefinition(
            "idempotency.purge",
            _purge_idempotency,
            every=settings.retention_interval,
            description="delete expired Idempotency-Keys",
        ),
        JobDefinition(
            "jobs.purge",
            _purge_jobs,
            every=settings.retention_interval,
            description="delete finished jobs older than PAYCORE_JOB_RETENTION",
        ),
    ]


# --- the runner ----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Held:
    name: str
    job: ClaimedJob | None = None
    schedule: ClaimedSchedule | None = None
    task: asyncio.Task[None] | None = None
    settled: bool = False
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Claims and runs jobs until `stop()`; `shutdown()` finishes or releases what it holds."""

    def __init__(
        self,
        container: Container,
        definitions: Sequence[JobDefinition],
        *,
        worker_id: str | None = None,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        lease: float | None = None,
        job_timeout: float | None = None,
        stats_interval: float = 10.0,
    ) -> None:
        s = container.settings
        self.container = container
        self.queue: PgJobQueue = container.jobs
        self.definitions: dict[str, JobDefinition] = {}
        for definition in definitions:
            if definition.name in self.definitions:
                raise ValueError(f"two jobs are named {definition.name!r}")
            self.definitions[definition.name] = definition
        self.scheduled = sorted(n for n, d in self.definitions.items() if d.every is not None)
        self.on_demand = sorted(n for n, d in self.definitions.items() if d.every is None)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency or s.worker_concurrency
        self.poll_interval = poll_interval or s.job_poll_interval
        self.lease = lease or s.job_lease
        self.job_timeout = job_timeout or s.job_timeout
        self.stats_interval = stats_interval
        self._held: dict[str, _Held] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.started = False
        self.stopped = False

    # -- state ---------------------------------------------------------------------------------
    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming (the run loop returns); held jobs keep running until `shutdown`."""
        self._stopping.set()
        self._wake.set()

    # -- main loop -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.scheduled:
            await self.queue.register_schedules(
                {n: float(self.definitions[n].every or 0) for n in self.scheduled}
            )
        self.started = True
        log.info(
            "worker_started",
            worker_id=self.worker_id,
            scheduled=self.scheduled,
            on_demand=self.on_demand,
            concurrency=self.concurrency,
        )

    async def run(self) -> None:
        """Claim and run jobs until `stop()`."""
        if not self.started:
            await self.start()
        tasks = self.container.tasks
        heartbeat = tasks.periodic("job_heartbeat", max(self.lease / 3, 0.05), self._heartbeat)
        sampler = tasks.periodic("job_queue_stats", self.stats_interval, self.sample)
        try:
            while not self._stopping.is_set():
                try:
                    claimed = await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("worker_claim_failed", error=type(exc).__name__, detail=str(exc)[:200])
                    claimed = 0
                if claimed and self.held < self.concurrency:
                    continue  # there may be more due work: claim again at once
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            heartbeat.cancel()
            sampler.cancel()

    async def tick(self) -> int:
        """One claim round: requeue lapsed leases, claim due schedules and jobs, start them."""
        free = self.concurrency - self.held
        if free <= 0 or self._stopping.is_set():
            return 0
        for job_id, name, status in await self.queue.reap():
            m.JOB_RUNS.labels(name, "lost").inc()
            log.warning("job_lease_expired", job_id=str(job_id), job=name, now=status)
        schedules = await self.queue.claim_schedules(self.scheduled, free, self.worker_id, self.lease)
        for sched in schedules:
            self._start(_Held(name=sched.name, schedule=sched), f"schedule:{sched.name}")
        free -= len(schedules)
        jobs = await self.queue.claim(self.on_demand, free, self.worker_id, self.lease)
        for job in jobs:
            self._start(_Held(name=job.name, job=job), str(job.id))
        return len(schedules) + len(jobs)

    def _start(self, held: _Held, key: str) -> None:
        lag = held.schedule.lag if held.schedule else held.job.lag if held.job else 0.0
        m.JOB_LAG.labels(held.name).set(lag)
        self._held[key] = held
        held.task = self.container.tasks.spawn("job", self._execute(held, key))

    async def _execute(self, held: _Held, key: str) -> None:
        definition = self.definitions[held.name]
        job, sched = held.job, held.schedule
        ctx = JobContext(
            container=self.container,
            job_id=job.id if job else None,
            attempt=job.attempt if job else 1,
            scheduled_for=sched.scheduled_for if sched else None,
            traceparent=job.traceparent if job else None,
        )
        token = traceparent_var.set(ctx.traceparent)
        structlog.contextvars.bind_contextvars(job=held.name, job_id=str(ctx.job_id) if ctx.job_id else None)
        started = time.perf_counter()
        status, error = "success", None
        try:
            async with dl.budget(definition.timeout or self.job_timeout):
                # the job continues the trace of the request that enqueued it (a new root if none)
                with tracing.job_span(f"job.{held.name}", ctx.traceparent, _JOB_SPAN_ATTRS, link=False):
                    await definition.handler(ctx, job.payload if job else {})
        except asyncio.CancelledError:
            status = "released"
            raise
        except TimeoutError:
            status, error = "timeout", f"timed out after {definition.timeout or self.job_timeout:g}s"
            log.error("job_timeout", attempt=ctx.attempt)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("job_failed", attempt=ctx.attempt, error=type(exc).__name__, exc_info=exc)
        finally:
            m.JOB_DURATION.labels(held.name).observe(time.perf_counter() - started)
            traceparent_var.reset(token)
            structlog.contextvars.unbind_contextvars("job", "job_id")
            if status == "released":
                m.JOB_RUNS.labels(held.name, "released").inc()
        try:
            await self._settle(held, definition, status, error)
        finally:
            held.settled = True
            self._held.pop(key, None)
            self._wake.set()

    async def _settle(self, held: _Held, definition: JobDefinition, status: str, error: str | None) -> None:
        try:
            if held.schedule is not None:
                await self.queue.finish_schedule(held.name, self.worker_id, status, error)
                m.JOB_RUNS.labels(held.name, status).inc()
                return
            assert held.job is not None
            if status == "success":
                await self.queue.complete(held.job.id, self.worker_id)
                m.JOB_RUNS.labels(held.name, "success").inc()
                return
            s = self.container.settings
            retry_in = backoff_delay(held.job.attempt - 1, base=s.job_retry_base, cap=s.job_retry_cap)
            final = await self.queue.fail(
                held.job.id, self.worker_id, retry_in, error or status, definition.max_attempts
            )
            m.JOB_RUNS.labels(held.name, status).inc()
            if final == "dead":
                m.JOB_RUNS.labels(held.name, "dead").inc()
                log.error("job_dead", job=held.name, job_id=str(held.job.id), attempts=held.job.attempt)
        except Exception as exc:
            # The lease will lapse and the job will run again (handlers are idempotent).
            log.error("job_settle_failed", job=held.name, error=type(exc).__name__)

    async def _heartbeat(self) -> None:
        job_ids = [h.job.id for h in self._held.values() if h.job is not None and not h.settled]
        names = [h.name for h in self._held.values() if h.schedule is not None and not h.settled]
        if job_ids or names:
            await self.queue.heartbeat(job_ids, names, self.worker_id, self.lease)

    async def sample(self) -> None:
        """Queue depth and lag per job (gauges)."""
        stats = await self.queue.stats()
        for name in self.on_demand:
            m.JOB_QUEUE_DEPTH.labels(name).set(stats.depth.get(name, 0))
            m.JOB_LAG.labels(name).set(stats.lag.get(name, 0.0))
        if self.scheduled:
            for name, (due, lag) in (await self.queue.overdue_schedules(self.scheduled)).items():
                m.JOB_QUEUE_DEPTH.labels(name).set(1 if due else 0)
                m.JOB_LAG.labels(name).set(lag if due else 0.0)

    # -- graceful stop -------------------------------------------------------------------------
    async def shutdown(self, grace: float) -> dict[str, int]:
        """Stop claiming, let held jobs finish within `grace` seconds, cancel and release the rest."""
        self.stop()
        held = [h for h in self._held.values() if h.task is not None]
        finished = released = 0
        if held:
            log.info("worker_draining", held=len(held), grace=grace)
            tasks = [h.task for h in held if h.task is not None]
            _, pending = await asyncio.wait(tasks, timeout=max(grace, 0.0))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            leftover = [h for h in held if not h.settled]
            finished = len(held) - len(leftover)
            released = len(leftover)
            job_ids = [h.job.id for h in leftover if h.job is not None]
            names = [h.name for h in leftover if h.schedule is not None]
            try:
                await self.queue.release(job_ids, self.worker_id)
                await self.queue.release_schedules(names, self.worker_id)
            except Exception as exc:
                log.error("job_release_failed", error=type(exc).__name__, jobs=len(job_ids))
            for h in leftover:
                h.settled = True
            self._held.clear()
        self.stopped = True
        log.info("worker_stopped", finished=finished, released=released)
        return {"finished": finished, "released": released}


# --- health and metrics server -------------------------------------------------------------------
async def start_metrics_server(worker: Worker, host: str, port: int) -> tuple[web.AppRunner, int]:
    """`/healthz`, `/readyz` and `/metrics` of the worker process."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        checks: dict[str, Any] = {"started": worker.started, "stopping": worker.stopping}
        ok = worker.started and not worker.stopping
        try:
            async with asyncio.timeout(2.0):
                await worker.container.db.fetchval(PING)
            checks["database"] = "ok"
        except Exception:
            checks["database"] = "unreachable"
            ok = False
        return web.json_response(
            {"status": "ready" if ok else "not_ready", "checks": checks, "held": worker.held},
            status=200 if ok else 503,
        )

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = m.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:  # the real port when 0 was asked for
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
    return runner, bound


# --- the process -----------------------------------------------------------------------------------
async def main(settings: Settings, extra_jobs: Sequence[JobDefinition] = ()) -> int:
    container = await build_container(settings, application_name="paycore-worker")
    try:
        async with container.db.acquire() as con:
            current = await migrate.is_current(con)
        if not current:
            log.error("migrations_not_current", hint="run `paycore migrate`")
            return 1
        definitions = [*builtin_jobs(settings), *job_definitions(settings), *extra_jobs]
        worker = Worker(container, definitions)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        runner, port = await start_metrics_server(worker, settings.http_host, settings.worker_metrics_port)
        try:
            if container.admin is not None:
                await container.admin.load_flags_at_start()  # stored kill-switch overrides (RES-11)
            container.start_background()  # includes the listener that applies later overrides
            if container.listener is not None:
                await container.listener.wait_listening(5.0)
            runtime.start_runtime_monitors(container.tasks)
            await worker.start()
            running = container.tasks.spawn("worker_loop", worker.run())
            ready = {"event": "worker_ready", "worker_id": worker.worker_id, "metrics_port": port}
            sys.stdout.write(msgspec.json.encode(ready).decode() + "\n")
            sys.stdout.flush()
            try:
                await running
            except Exception as exc:
                log.error("worker_loop_crashed", error=type(exc).__name__, detail=str(exc)[:200])
            log.info("worker_stopping")
            await worker.shutdown(max(settings.shutdown_timeout - 5.0, 1.0))
        finally:
            await runner.cleanup()
        return 0
    finally:
        await container.aclose()
        tracing.shutdown_tracing()
        flush_logs()


def run(extra_jobs: Sequence[JobDefinition] = ()) -> int:
    """The `paycore worker` command."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_queue_max, stream=sys.stderr)
    tracing.configure_tracing(
        settings.trace_sample_ratio, settings.otlp_endpoint, service_name="paycore-worker"
    )
    return asyncio.run(main(settings, extra_jobs))
