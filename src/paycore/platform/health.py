"""The component health report behind `/health` (RES-10).

`/healthz` says the event loop answers (liveness) and `/readyz` whether this process should get
traffic (readiness); `/health` says how the process's dependencies are doing, for dashboards,
alerts and people:

* **database** — `SELECT 1` on a pooled connection (on a separate short-lived connection when no
  pooled one frees up within half the timeout): an error or no answer → unhealthy; slower than
  1 s → degraded.
* **db_pool** — utilisation of the connection pool: at or above `PAYCORE_DB_POOL_ERROR_RATIO`
  (0.95) → degraded.
* **gateway** — the gateway circuit breakers (any open or half-open → degraded) and a TCP connect
  to the Server Post host (refused or no answer → degraded). Never an HTTP request, never a payment.
* **rate_limit_storage** — only with `PAYCORE_RATE_LIMIT_STORAGE=redis://…`: Redis `PING`
  (unreachable → degraded; the limits fail open meanwhile).
* **job_queue** — age of the oldest due job (`idx_jobs_due`, one index probe): above 5 minutes →
  degraded (the workers are behind or stopped).

Overall status = the worst check; HTTP 503 only when unhealthy. Every check runs at once and is cut
at `PAYCORE_HEALTH_TIMEOUT`: a check that has not answered by then is reported with its timeout
status (unhealthy for the database, degraded for the others) and abandoned, so the answer never
waits longer than the timeout (plus scheduling). One report is reused for `PAYCORE_HEALTH_CACHE_TTL`
and concurrent callers share the one run in flight, so a scrape storm costs one `SELECT 1` per
process per TTL. Messages name error types only: never a DSN, URL, host or secret.

The rules (`overall`, `database_status`, `pool_status`, `gateway_status`, `queue_status`) are pure
functions; the checks are small classes with an async `probe()`; `run_checks` and `HealthReporter`
bound and cache them.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import asyncpg
import msgspec

from paycore.platform.db.database import Database, Query, Tier
from paycore.platform.db.pool import PING, PoolMonitor
from paycore.platform.ratelimit import RateLimits, RedisWindows
from paycore.platform.resilience.breaker import BreakerRegistry, BreakerSnapshot
from paycore.platform.tasks import TaskSupervisor

__all__ = [
    "DB_SLOW_AFTER",
    "QUEUE_LAG_DEGRADED",
    "Check",
    "CheckBody",
    "CheckResult",
    "DatabaseCheck",
    "Finding",
    "GatewayCheck",
    "HealthBody",
    "HealthReport",
    "HealthReporter",
    "JobQueueCheck",
    "PoolCheck",
    "RedisCheck",
    "Status",
    "database_status",
    "gateway_status",
    "overall",
    "pool_status",
    "queue_status",
    "run_checks",
    "standard_checks",
]

DB_SLOW_AFTER: Final = 1.0  # seconds: a slower `SELECT 1` makes the database degraded
QUEUE_LAG_DEGRADED: Final = 300.0  # seconds: an older due job makes the job queue degraded


class Status(enum.IntEnum):
    """Ordered: the overall status is the maximum."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2

    @property
    def label(self) -> StatusLabel:
        return _LABELS[self]


StatusLabel = Literal["healthy", "degraded", "unhealthy"]
_LABELS: Final[dict[Status, StatusLabel]] = {
    Status.HEALTHY: "healthy",
    Status.DEGRADED: "degraded",
    Status.UNHEALTHY: "unhealthy",
}


# --- the answer of GET /health (its OpenAPI schema too) -------------------------------------------
class CheckBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One component check."""

    name: str
    status: StatusLabel
    latency_ms: float
    message: str
    timestamp: str  # RFC 3339, UTC: when the check answered or was cut
    details: dict[str, Any] | None = None


class HealthBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The component health report: `status` is the worst check's."""

    status: StatusLabel
    version: str
    uptime_seconds: float | None = None
    checked_at: str | None = None  # RFC 3339, UTC: when this (possibly cached) report was made
    checks: list[CheckBody]


# --- pure rules ----------------------------------------------------------------------------------
def overall(statuses: Iterable[Status]) -> Status:
    """The worst status; healthy when there is nothing to check."""
    return max(statuses, default=Status.HEALTHY)


def http_status(status: Status) -> int:
    """503 only when unhealthy: a degraded process still serves (and says so)."""
    return 503 if status is Status.UNHEALTHY else 200


def database_status(latency_seconds: float, slow_after: float = DB_SLOW_AFTER) -> Status:
    """A `SELECT 1` that answered: slower than `slow_after` → degraded."""
    return Status.DEGRADED if latency_seconds > slow_after else Status.HEALTHY


def pool_status(utilisation: float, threshold: float = 0.95) -> Status:
    """Pool utilisation (acquired / max) at or above `threshold` → degraded."""
    return Status.DEGRADED if utilisation >= threshold else Status.HEALTHY


def gateway_status(breaker_states: Mapping[str, str], reachable: bool | None) -> Status:
    """Any gateway breaker not closed (open, half-open) or the gateway unreachable → degraded.
    `reachable=None`: not probed (no URL configured)."""
    if any(state != "closed" for state in breaker_states.values()) or reachable is False:
        return Status.DEGRADED
    return Status.HEALTHY


def queue_status(oldest_due_seconds: float, threshold: float = QUEUE_LAG_DEGRADED) -> Status:
    return Status.DEGRADED if oldest_due_seconds > threshold else Status.HEALTHY


# --- checks --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Finding:
    """What one check found."""

    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    message: str
    latency_ms: float
    timestamp: float  # wall clock (epoch seconds) when the check ended or was cut
    details: dict[str, Any] = field(default_factory=dict)

    def render(self) -> CheckBody:
        return CheckBody(
            name=self.name,
            status=self.status.label,
            latency_ms=round(self.latency_ms, 1),
            message=self.message,
            timestamp=_iso(self.timestamp),
            details=self.details or None,
        )


class Check(Protocol):
    name: str
    on_error: Status  # status when the probe raises
    on_timeout: Status  # status when the probe does not answer within the timeout

    def probe(self) -> Awaitable[Finding]: ...


def _error_message(what: str, exc: BaseException) -> str:
    # the error type only: messages of connection errors may carry hosts, DSNs or URIs
    return f"{what} ({type(exc).__name__})"


class PoolCheck:
    """Utilisation of the database pool (the gauges of `PoolMonitor.sample`)."""

    name = "db_pool"
    on_error = Status.DEGRADED
    on_timeout = Status.DEGRADED

    def __init__(self, monitor: PoolMonitor, *, threshold: float = 0.95) -> None:
        self.monitor = monitor
        self.threshold = threshold

    async def probe(self) -> Finding:
        stats = self.monitor.sample()
        utilisation = float(stats["utilisation"])
        status = pool_status(utilisation, self.threshold)
        details = {k: stats[k] for k in ("max", "size", "idle", "acquired", "waiting")}
        details["utilisation"] = round(utilisation, 3)
        if status is Status.HEALTHY:
            return Finding(status, f"{utilisation:.0%} of the pool in use", details)
        return Finding(status, f"{utilisation:.0%} of the pool in use (≥ {self.threshold:.0%})", details)


class DatabaseCheck:
    """`SELECT 1` on a pooled connection (the path every request takes). When no pooled connection
    frees up within `acquire_timeout` (the pool check says how busy it is), the question "does the
    database answer?" is put on a separate short-lived connection (`connect`), so that a busy pool
    is not mistaken for a database that is down, nor the other way round."""

    name = "database"
    on_error = Status.UNHEALTHY
    on_timeout = Status.UNHEALTHY

    def __init__(
        self,
        pool: Any,  # asyncpg.Pool
        *,
        acquire_timeout: float,
        connect: Callable[[], Awaitable[Any]] | None = None,  # -> an asyncpg.Connection
        slow_after: float = DB_SLOW_AFTER,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        self.connect = connect
        self.slow_after = slow_after
        self.clock = clock

    def _answered(self, seconds: float, via: str) -> Finding:
        status = database_status(seconds, self.slow_after)
        if status is Status.HEALTHY:
            return Finding(status, f"SELECT 1 answered{via}")
        return Finding(status, f"slow: SELECT 1 took {seconds * 1000:.0f} ms (> {self.slow_after:g}s){via}")

    async def _separately(self) -> Finding:
        via = f" on a separate connection (no pooled one free within {self.acquire_timeout:g}s)"
        if self.connect is None:
            return Finding(
                Status.DEGRADED, f"not checked: no pooled connection free within {self.acquire_timeout:g}s"
            )
        try:
            con = await self.connect()
        except Exception as exc:
            return Finding(Status.UNHEALTHY, _error_message("unreachable", exc))
        try:
            started = self.clock()
            await con.fetchval(PING.sql)
            return self._answered(self.clock() - started, via)
        except Exception as exc:
            return Finding(Status.UNHEALTHY, _error_message("SELECT 1 failed", exc))
        finally:
            con.terminate()  # synchronous: safe even when the check is being cancelled

    async def probe(self) -> Finding:
        try:
            con = await self.pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            return await self._separately()
        except Exception as exc:
            return Finding(Status.UNHEALTHY, _error_message("unreachable", exc))
        try:
            started = self.clock()
            await con.fetchval(PING.sql)
            return self._answered(self.clock() - started, "")
        except Exception as exc:
            return Finding(Status.UNHEALTHY, _error_message("SELECT 1 failed", exc))
        finally:
            await self.pool.release(con)


class GatewayCheck:
    """The gateway breakers' states and a TCP connect to the Server Post host (no HTTP, no payment)."""

    name = "gateway"
    on_error = Status.DEGRADED
    on_timeout = Status.DEGRADED

    def __init__(
        self,
        breakers: Callable[[], Sequence[BreakerSnapshot]],
        *,
        probe_url: str | None,
        probe_timeout: float,
    ) -> None:
        self.breakers = breakers
        self.probe_url = probe_url
        self.probe_timeout = probe_timeout

    async def _reachable(self) -> tuple[bool | None, str]:
        if not self.probe_url:
            return None, "not probed"
        parts = urlsplit(self.probe_url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(self.probe_timeout):
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                await writer.wait_closed()
        except TimeoutError:
            return False, f"no TCP answer within {self.probe_timeout:g}s"
        except OSError as exc:
            return False, _error_message("unreachable", exc)
        return True, "reachable"

    async def probe(self) -> Finding:
        snapshots = self.breakers()
        states = {s.name: (s.state if s.enabled else "disabled") for s in snapshots}
        reachable, reach_message = await self._reachable()
        # a disabled breaker (kill switch) passes calls through: it says nothing about the gateway
        status = gateway_status({n: s for n, s in states.items() if s != "disabled"}, reachable)
        not_closed = sorted(n for n, s in states.items() if s not in {"closed", "disabled"})
        parts = [f"breaker {n} {states[n]}" for n in not_closed]
        parts.append(reach_message)
        return Finding(status, "; ".join(parts), {"breakers": states, "reachable": reachable})


class RedisCheck:
    """`PING` to the Redis that holds the shared rate limits."""

    name = "rate_limit_storage"
    on_error = Status.DEGRADED
    on_timeout = Status.DEGRADED

    def __init__(self, backend: RedisWindows) -> None:
        self.backend = backend

    async def probe(self) -> Finding:
        if await self.backend.ping():
            return Finding(Status.HEALTHY, "redis answered PING")
        return Finding(Status.DEGRADED, "redis unreachable: rate limits fail open")


QUEUE_OLDEST_DUE = Query(
    "health.queue_oldest_due",
    Tier.SIMPLE,
    """
    SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8
      FROM jobs WHERE status = 'queued' AND run_at <= now()
    """,
)


class JobQueueCheck:
    """Age of the oldest due job (one probe of `idx_jobs_due`)."""

    name = "job_queue"
    on_error = Status.DEGRADED
    on_timeout = Status.DEGRADED

    def __init__(self, db: Database, *, threshold: float = QUEUE_LAG_DEGRADED) -> None:
        self.db = db
        self.threshold = threshold

    async def probe(self) -> Finding:
        lag = max(float(await self.db.fetchval(QUEUE_OLDEST_DUE) or 0.0), 0.0)
        status = queue_status(lag, self.threshold)
        details = {"oldest_due_seconds": round(lag, 1)}
        if status is Status.HEALTHY:
            return Finding(status, "jobs are being picked up", details)
        return Finding(status, f"oldest due job waits {lag:.0f}s (> {self.threshold:g}s)", details)


def standard_checks(
    *,
    db: Database,
    pool_monitor: PoolMonitor,
    breakers: BreakerRegistry,
    rate_limits: RateLimits | None,
    gateway_url: str | None,
    dsn: str | None,
    timeout: float,
    pool_threshold: float = 0.95,
) -> list[Check]:
    """The checks of a serving process. The pool is sampled first, before the database check
    takes its own connection from it."""

    def gateway_breakers() -> list[BreakerSnapshot]:
        return [s for s in breakers.snapshot() if s.name.startswith("gateway_")]

    async def connect() -> Any:
        return await asyncpg.connect(
            dsn, timeout=timeout, server_settings={"application_name": "paycore-health"}
        )

    checks: list[Check] = [
        PoolCheck(pool_monitor, threshold=pool_threshold),
        DatabaseCheck(db.pool, acquire_timeout=timeout / 2, connect=connect if dsn else None),
        GatewayCheck(gateway_breakers, probe_url=gateway_url, probe_timeout=timeout / 2),
    ]
    if rate_limits is not None and isinstance(rate_limits.backend, RedisWindows):
        checks.append(RedisCheck(rate_limits.backend))
    checks.append(JobQueueCheck(db))
    return checks


# --- running -------------------------------------------------------------------------------------
Spawn = Callable[[str, Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]  # TaskSupervisor.spawn


async def _timed(check: Check, clock: Callable[[], float]) -> tuple[Finding, float]:
    started = clock()
    try:
        finding = await check.probe()
    except Exception as exc:
        finding = Finding(check.on_error, _error_message("check failed", exc))
    return finding, (clock() - started) * 1000.0


async def run_checks(
    checks: Sequence[Check],
    timeout: float,
    *,
    spawn: Spawn,
    clock: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
) -> list[CheckResult]:
    """Run every check at once (tasks of the supervisor's `spawn`); whatever has not answered
    after `timeout` seconds is cancelled — not awaited: a check that ignores cancellation cannot
    hold the answer; the supervisor keeps it until it ends — and reported with its `on_timeout`
    status. Results keep the order of `checks`."""
    if not checks:
        return []
    tasks = [spawn("health_check", _timed(check, clock)) for check in checks]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    cut_at = wall()
    results: list[CheckResult] = []
    for check, task in zip(checks, tasks, strict=True):
        if task in pending:
            task.cancel()
            message = f"no answer within {timeout:g}s"
            results.append(CheckResult(check.name, check.on_timeout, message, timeout * 1000, cut_at))
            continue
        finding, latency_ms = task.result()
        results.append(
            CheckResult(check.name, finding.status, finding.message, latency_ms, wall(), finding.details)
        )
    return results


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: Status
    checks: tuple[CheckResult, ...]
    checked_at: float  # wall clock

    @property
    def http_status(self) -> int:
        return http_status(self.status)

    def render(self, *, version: str, uptime_seconds: float) -> HealthBody:
        return HealthBody(
            status=self.status.label,
            version=version,
            uptime_seconds=round(uptime_seconds, 1),
            checked_at=_iso(self.checked_at),
            checks=[c.render() for c in self.checks],
        )


class HealthReporter:
    """Runs the checks under the timeout, reuses a report for `cache_ttl` seconds and lets
    concurrent callers share the run in flight (single flight). The run is a supervised task
    without the request's deadline: a caller that goes away does not cancel it."""

    def __init__(
        self,
        checks: Sequence[Check],
        *,
        tasks: TaskSupervisor,
        timeout: float,
        cache_ttl: float,
        version: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.checks = list(checks)
        self._tasks = tasks
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.version = version
        self._clock = clock
        self._wall = wall
        self._started = clock()
        self._cached: HealthReport | None = None
        self._cached_at = 0.0
        self._inflight: asyncio.Task[Any] | None = None
        self.runs = 0  # checks actually run (tests, and the docs' claim about scrape storms)

    @property
    def uptime_seconds(self) -> float:
        return self._clock() - self._started

    async def _run(self) -> HealthReport:
        try:
            results = await run_checks(self.checks, self.timeout, spawn=self._tasks.spawn, wall=self._wall)
            report = HealthReport(overall(r.status for r in results), tuple(results), self._wall())
            self._cached, self._cached_at = report, self._clock()
            return report
        finally:
            self._inflight = None

    async def report(self) -> HealthReport:
        cached = self._cached
        if cached is not None and self._clock() - self._cached_at < self.cache_ttl:
            return cached
        if self._inflight is None:
            if self._tasks.closed:  # shutting down: the checks' resources are being closed
                return HealthReport(Status.UNHEALTHY, (), self._wall())
            self.runs += 1
            self._inflight = self._tasks.spawn("health_report", self._run())
        return await asyncio.shield(self._inflight)

    def render(self, report: HealthReport) -> HealthBody:
        return report.render(version=self.version, uptime_seconds=self.uptime_seconds)
