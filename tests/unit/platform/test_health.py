"""RES-10 `/health`: the aggregation rules, the bounded runner (a hung check is cut at the
timeout), the cache and single flight, and each check against fakes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec
import pytest

from paycore.platform.health import (
    CheckResult,
    DatabaseCheck,
    Finding,
    GatewayCheck,
    HealthReporter,
    PoolCheck,
    RedisCheck,
    Status,
    database_status,
    gateway_status,
    http_status,
    overall,
    pool_status,
    queue_status,
    run_checks,
)
from paycore.platform.resilience.breaker import CircuitBreaker
from paycore.platform.tasks import TaskSupervisor

pytestmark = pytest.mark.unit

H, D, U = Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY


# --- pure rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("statuses", "expected", "code"),
    [
        ([], H, 200),
        ([H, H, H], H, 200),
        ([H, D, H], D, 200),
        ([D, D], D, 200),
        ([H, U], U, 503),
        ([D, U, H], U, 503),
    ],
)
def test_overall_is_the_worst_and_only_unhealthy_is_503(
    statuses: list[Status], expected: Status, code: int
) -> None:
    assert overall(statuses) is expected
    assert http_status(overall(statuses)) == code


def test_database_rule() -> None:
    assert database_status(0.002) is H
    assert database_status(1.0) is H
    assert database_status(1.2) is D


def test_pool_rule() -> None:
    assert pool_status(0.5) is H
    assert pool_status(0.94) is H
    assert pool_status(0.95) is D
    assert pool_status(0.96) is D
    assert pool_status(0.8, threshold=0.8) is D


def test_gateway_rule() -> None:
    closed = {"gateway_server_post": "closed", "gateway_key_exchange": "closed"}
    assert gateway_status(closed, True) is H
    assert gateway_status(closed, None) is H
    assert gateway_status(closed, False) is D
    assert gateway_status({**closed, "gateway_server_post": "open"}, True) is D
    assert gateway_status({**closed, "gateway_key_exchange": "half_open"}, True) is D


def test_queue_rule() -> None:
    assert queue_status(0.0) is H
    assert queue_status(299.0) is H
    assert queue_status(301.0) is D


# --- the runner ----------------------------------------------------------------------------------
class Fake:
    def __init__(
        self,
        name: str,
        finding: Finding | None = None,
        *,
        delay: float = 0.0,
        raises: Exception | None = None,
        stubborn: bool = False,
        on_timeout: Status = D,
        on_error: Status = D,
    ) -> None:
        self.name = name
        self.finding = finding or Finding(H, "fine")
        self.delay = delay
        self.raises = raises
        self.stubborn = stubborn
        self.on_timeout = on_timeout
        self.on_error = on_error
        self.calls = 0

    async def probe(self) -> Finding:
        self.calls += 1
        if self.stubborn:  # ignores cancellation for a while (a badly behaved driver)
            end = time.monotonic() + self.delay
            while time.monotonic() < end:
                try:
                    await asyncio.sleep(end - time.monotonic())
                except asyncio.CancelledError:
                    continue
        elif self.delay:
            await asyncio.sleep(self.delay)
        if self.raises is not None:
            raise self.raises
        return self.finding


async def test_hung_checks_are_cut_at_the_timeout_with_their_timeout_status() -> None:
    tasks = TaskSupervisor()
    checks = [
        Fake("fast", Finding(H, "ok", {"n": 1})),
        Fake("hung_db", delay=3600, on_timeout=U),
        Fake("stubborn", delay=1.5, stubborn=True),
    ]
    started = time.perf_counter()
    results = await run_checks(checks, 0.3, spawn=tasks.spawn)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5  # the answer does not wait for the checks that ignore cancellation
    assert [r.name for r in results] == ["fast", "hung_db", "stubborn"]
    fast, hung, stubborn = results
    assert fast.status is H and fast.details == {"n": 1} and fast.latency_ms < 300
    assert hung.status is U and hung.message == "no answer within 0.3s" and hung.latency_ms == 300
    assert stubborn.status is D
    await tasks.cancel_all(timeout=3)  # the supervisor still owns the abandoned checks


async def test_a_failing_check_reports_its_error_status_and_only_the_error_type() -> None:
    tasks = TaskSupervisor()
    secret = "postgresql://paycore:hunter2@db.internal:5432/paycore"
    results = await run_checks(
        [Fake("database", raises=OSError(f"could not connect to {secret}"), on_error=U)],
        1.0,
        spawn=tasks.spawn,
    )
    assert results[0].status is U
    assert results[0].message == "check failed (OSError)"
    assert "hunter2" not in json.dumps(msgspec.to_builtins(results[0].render()))


def test_render_shape() -> None:
    result = CheckResult("database", D, "slow", 1234.56, 0.0, {})
    assert msgspec.to_builtins(result.render()) == {
        "name": "database",
        "status": "degraded",
        "latency_ms": 1234.6,
        "message": "slow",
        "timestamp": "1970-01-01T00:00:00.000Z",
    }


# --- the reporter: cache, single flight, timeout ---------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_report_is_cached_for_the_ttl_and_concurrent_callers_share_one_run() -> None:
    tasks = TaskSupervisor()
    check = Fake("database", delay=0.05)
    clock = Clock()
    reporter = HealthReporter([check], tasks=tasks, timeout=1.0, cache_ttl=2.0, version="9", clock=clock)
    reports = await asyncio.gather(*(reporter.report() for _ in range(50)))
    assert check.calls == 1 and reporter.runs == 1
    assert all(r is reports[0] for r in reports)
    clock.now += 1.9
    assert await reporter.report() is reports[0] and check.calls == 1
    clock.now += 0.2
    fresh = await reporter.report()
    assert fresh is not reports[0] and check.calls == 2
    body = msgspec.to_builtins(reporter.render(fresh))
    assert body["status"] == "healthy" and body["version"] == "9" and body["uptime_seconds"] == 2.1
    assert [c["name"] for c in body["checks"]] == ["database"]


async def test_a_caller_going_away_does_not_cancel_the_shared_run() -> None:
    tasks = TaskSupervisor()
    check = Fake("database", delay=0.2)
    reporter = HealthReporter([check], tasks=tasks, timeout=1.0, cache_ttl=5.0, version="9")
    first = asyncio.ensure_future(reporter.report())
    await asyncio.sleep(0.05)
    first.cancel()
    report = await reporter.report()
    assert report.status is H and check.calls == 1


async def test_unhealthy_check_makes_the_report_503_within_the_timeout() -> None:
    tasks = TaskSupervisor()
    reporter = HealthReporter(
        [Fake("db_pool"), Fake("database", delay=3600, on_timeout=U), Fake("gateway", Finding(D, "open"))],
        tasks=tasks,
        timeout=0.2,
        cache_ttl=0.0,
        version="9",
    )
    started = time.perf_counter()
    report = await reporter.report()
    assert time.perf_counter() - started < 0.4
    assert report.status is U and report.http_status == 503
    assert [c.status for c in report.checks] == [H, U, D]
    await tasks.cancel_all(timeout=1)


async def test_a_stopping_process_reports_unhealthy_without_running_checks() -> None:
    tasks = TaskSupervisor()
    await tasks.cancel_all()
    check = Fake("database")
    reporter = HealthReporter([check], tasks=tasks, timeout=1.0, cache_ttl=0.0, version="9")
    report = await reporter.report()
    assert report.status is U and check.calls == 0


# --- the checks ----------------------------------------------------------------------------------
class FakeMonitor:
    def __init__(self, acquired: int, maximum: int = 25) -> None:
        self.acquired = acquired
        self.maximum = maximum

    def sample(self) -> dict[str, Any]:
        return {
            "max": self.maximum,
            "size": self.maximum,
            "idle": self.maximum - self.acquired,
            "acquired": self.acquired,
            "waiting": 0,
            "utilisation": self.acquired / self.maximum,
        }


async def test_pool_check() -> None:
    ok = await PoolCheck(FakeMonitor(5), threshold=0.95).probe()  # type: ignore[arg-type]
    assert ok.status is H and ok.details["utilisation"] == 0.2 and ok.details["max"] == 25
    busy = await PoolCheck(FakeMonitor(24), threshold=0.95).probe()  # type: ignore[arg-type]
    assert busy.status is D and busy.details["acquired"] == 24  # 96 %


class FakePool:
    def __init__(self, *, query_delay: float = 0.0, acquire_error: Exception | None = None) -> None:
        self.query_delay = query_delay
        self.acquire_error = acquire_error
        self.released = 0

    async def acquire(self, timeout: float) -> FakePool:
        if self.acquire_error is not None:
            raise self.acquire_error
        return self

    async def release(self, con: Any) -> None:
        self.released += 1

    async def fetchval(self, sql: str) -> int:
        assert sql == "SELECT 1"
        await asyncio.sleep(self.query_delay)
        return 1


class FakeConnection:
    def __init__(self, query_delay: float = 0.0) -> None:
        self.query_delay = query_delay
        self.terminated = False

    async def fetchval(self, sql: str) -> int:
        assert sql == "SELECT 1"
        await asyncio.sleep(self.query_delay)
        return 1

    def terminate(self) -> None:
        self.terminated = True


async def test_database_check_rules() -> None:
    pool = FakePool()
    ok = await DatabaseCheck(pool, acquire_timeout=1.0).probe()
    assert ok.status is H and ok.message == "SELECT 1 answered" and pool.released == 1
    slow = await DatabaseCheck(FakePool(query_delay=0.12), acquire_timeout=1.0, slow_after=0.1).probe()
    assert slow.status is D and slow.message.startswith("slow: SELECT 1 took")
    down = await DatabaseCheck(
        FakePool(acquire_error=ConnectionRefusedError("connect to 10.0.0.5:5432 failed")), acquire_timeout=1.0
    ).probe()
    assert down.status is U and down.message == "unreachable (ConnectionRefusedError)"


async def test_a_busy_pool_is_not_taken_for_a_database_down() -> None:
    busy = FakePool(acquire_error=TimeoutError())
    separate = FakeConnection()

    async def connect() -> FakeConnection:
        return separate

    answered = await DatabaseCheck(busy, acquire_timeout=0.5, connect=connect).probe()
    assert answered.status is H and "separate connection" in answered.message and separate.terminated

    async def refused() -> FakeConnection:
        raise ConnectionRefusedError("10.0.0.5:5432")

    down = await DatabaseCheck(busy, acquire_timeout=0.5, connect=refused).probe()
    assert down.status is U and down.message == "unreachable (ConnectionRefusedError)"
    unchecked = await DatabaseCheck(busy, acquire_timeout=0.5).probe()
    assert unchecked.status is D and "no pooled connection free" in unchecked.message


async def _listening_port() -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_gateway_check_breakers_and_probe() -> None:
    server, port = await _listening_port()
    breaker = CircuitBreaker("gateway_server_post", failure_threshold=1)
    other = CircuitBreaker("gateway_key_exchange")
    url = f"http://127.0.0.1:{port}/"
    try:
        check = GatewayCheck(lambda: [breaker.snapshot(), other.snapshot()], probe_url=url, probe_timeout=1.0)
        ok = await check.probe()
        assert ok.status is H
        assert ok.details == {
            "breakers": {"gateway_server_post": "closed", "gateway_key_exchange": "closed"},
            "reachable": True,
        }
        breaker.acquire().failure()  # opens it
        opened = await check.probe()
        assert opened.status is D and "breaker gateway_server_post open" in opened.message
        other.enabled = False
        assert (await check.probe()).details["breakers"]["gateway_key_exchange"] == "disabled"
    finally:
        server.close()
        await server.wait_closed()
    breaker.reset()
    gone = await GatewayCheck(lambda: [breaker.snapshot()], probe_url=url, probe_timeout=1.0).probe()
    assert gone.status is D and gone.details["reachable"] is False
    assert str(port) not in gone.message  # error type only, no address
    unprobed = await GatewayCheck(lambda: [breaker.snapshot()], probe_url=None, probe_timeout=1.0).probe()
    assert unprobed.status is H and unprobed.details["reachable"] is None


class FakeRedis:
    def __init__(self, up: bool) -> None:
        self.up = up

    async def ping(self) -> bool:
        return self.up


async def test_redis_check() -> None:
    assert (await RedisCheck(FakeRedis(True)).probe()).status is H  # type: ignore[arg-type]
    down = await RedisCheck(FakeRedis(False)).probe()  # type: ignore[arg-type]
    assert down.status is D and "fail open" in down.message
