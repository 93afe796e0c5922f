"""RES-10 `/health` against a real `paycore serve`: healthy with everything up; the database taken
away (a TCP proxy between the server and PostgreSQL) → 503 while `/healthz` stays 200; a hung
database check cut at `PAYCORE_HEALTH_TIMEOUT`; the simulator killed with the gateway breaker
open → degraded but 200."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from tests.e2e.conftest import _seed_merchant
from tests.support.sim import SimProcess, start_simulator
from tests.support.stack import ServerProcess, stack_env
from tests.support.tcpproxy import TcpProxy
from tests.support.tokens import mint_token

pytestmark = pytest.mark.e2e

Start = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def serve(clean_db: str, epx_sim: SimProcess) -> AsyncIterator[Start]:
    """`await serve(database_url=..., sim=..., PAYCORE_X="...")`: a started server."""
    servers: list[ServerProcess] = []

    async def start(
        *, database_url: str | None = None, sim: SimProcess | None = None, **extra: str
    ) -> ServerProcess:
        env = stack_env(database_url or clean_db, sim or epx_sim, **extra)
        server = ServerProcess(env)
        servers.append(server)
        await asyncio.to_thread(server.start)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
async def db_proxy(clean_db: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test database and the DSN that goes through it."""
    parts = urlsplit(clean_db)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    user = f"{parts.username}@" if parts.username else ""
    dsn = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
    yield proxy, dsn
    await proxy.close()


async def get(url: str, timeout: float = 10.0) -> tuple[int, Any, dict[str, str], float]:
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r,
    ):
        body = await r.json(content_type=None)
        return r.status, body, dict(r.headers), time.perf_counter() - started


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


async def test_everything_up_is_healthy_and_the_report_is_cached(serve: Start) -> None:
    server = await serve(PAYCORE_HEALTH_CACHE_TTL="5s")
    status, report, headers, _ = await get(server.url + "/health")
    assert status == 200, report
    assert report["status"] == "healthy"
    assert report["version"] and report["uptime_seconds"] >= 0
    checks = by_name(report)
    assert list(checks) == ["db_pool", "database", "gateway", "job_queue"]  # memory rate limits: no redis
    for check in checks.values():
        assert check["status"] == "healthy", check
        assert {"latency_ms", "message", "timestamp"} <= set(check)
    assert checks["gateway"]["details"]["reachable"] is True
    assert set(checks["gateway"]["details"]["breakers"].values()) == {"closed"}
    assert 0 <= checks["db_pool"]["details"]["utilisation"] < 0.95
    assert headers["Cache-Control"] == "no-store"
    again = (await get(server.url + "/health"))[1]
    assert again["checked_at"] == report["checked_at"]  # reused within PAYCORE_HEALTH_CACHE_TTL
    async with aiohttp.ClientSession() as http, http.get(server.url + "/openapi.json") as r:
        assert "/health" in (await r.json())["paths"]


async def test_database_down_is_503_while_liveness_stays_200(
    serve: Start, db_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, dsn = db_proxy
    server = await serve(database_url=dsn, PAYCORE_HEALTH_CACHE_TTL="0s", PAYCORE_HEALTH_TIMEOUT="2s")
    assert (await get(server.url + "/health"))[0] == 200

    await proxy.refuse()  # connections reset, new ones refused
    status, report, _, elapsed = await get(server.url + "/health")
    assert status == 503, report
    assert report["status"] == "unhealthy"
    database = by_name(report)["database"]
    assert database["status"] == "unhealthy"
    assert elapsed < 2.0 + 1.0
    text = str(report)
    assert "postgres" not in text and "127.0.0.1" not in text  # no DSN, no address
    status, alive, _, _ = await get(server.url + "/healthz")
    assert status == 200 and alive == {"status": "alive"}
    assert (await get(server.url + "/readyz"))[0] == 503

    await proxy.restore()  # back: the pool reconnects and the report follows
    deadline = time.monotonic() + 15
    while True:
        status, report, _, _ = await get(server.url + "/health")
        if status == 200 and report["status"] == "healthy":
            break
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.2)


async def test_a_hung_database_check_is_cut_at_the_timeout(
    serve: Start, db_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, dsn = db_proxy
    server = await serve(database_url=dsn, PAYCORE_HEALTH_CACHE_TTL="0s", PAYCORE_HEALTH_TIMEOUT="1s")
    assert (await get(server.url + "/health"))[0] == 200

    proxy.blackhole()  # connections stay open, nothing answers: SELECT 1 hangs
    status, report, _, elapsed = await get(server.url + "/health")
    assert status == 503, report
    assert 1.0 <= elapsed < 1.0 + 1.0, elapsed
    checks = by_name(report)
    assert checks["database"]["status"] == "unhealthy"
    assert checks["database"]["message"] == "no answer within 1s"
    assert checks["job_queue"]["status"] == "degraded"
    assert checks["gateway"]["status"] == "healthy"  # the other checks still answered
    assert (await get(server.url + "/healthz"))[0] == 200
    # again, while the first run's abandoned checks may still be hanging
    status, report, _, elapsed = await get(server.url + "/health")
    assert status == 503 and elapsed < 2.0, report


async def test_simulator_down_with_the_breaker_open_is_degraded_but_200(serve: Start, clean_db: str) -> None:
    sim = start_simulator(latency_ms=0, seed=7)
    try:
        server = await serve(sim=sim, PAYCORE_HEALTH_CACHE_TTL="0s")
        _, api_key = await _seed_merchant(stack_env(clean_db, sim))
        token = await mint_token(sim.server_post_url)
        assert (await get(server.url + "/health"))[1]["status"] == "healthy"

        sim.kill()
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as http:
            for _ in range(5):  # connect refused on every attempt: the breaker opens
                async with http.post(
                    server.url + "/v1/payments",
                    json={"amount": 1500, "currency": "USD", "token": token},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                ) as r:
                    assert r.status != 201
                status, report, _, _ = await get(server.url + "/health")
                breakers = by_name(report)["gateway"]["details"]["breakers"]
                if breakers["gateway_server_post"] == "open":
                    break
        assert status == 200, report
        assert report["status"] == "degraded"
        gateway = by_name(report)["gateway"]
        assert gateway["status"] == "degraded"
        assert gateway["details"]["breakers"]["gateway_server_post"] == "open"
        assert gateway["details"]["reachable"] is False
        assert "breaker gateway_server_post open" in gateway["message"]
        assert by_name(report)["database"]["status"] == "healthy"
    finally:
        sim.close()
