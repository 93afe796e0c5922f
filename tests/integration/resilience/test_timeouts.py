"""RES-7 / CRITICAL-1 against the real app, the real database and the simulator process: every
layer of the timeout ladder, a gateway that hangs, and a client that leaves mid-call."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from paycore.gateway.epx.client import EpxServerPostClient
from paycore.gateway.epx.wire import for_sale, tran_nbr_for
from paycore.gateway.port import CallTrace
from paycore.kernel.ids import uuid7
from paycore.platform import http
from paycore.platform.db.database import PoolExhausted, Query, QueryTimeout, Tier
from paycore.platform.db.pool import create_database
from paycore.platform.resilience import deadline as dl
from paycore.platform.resilience.breaker import CircuitBreaker
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY

pytestmark = pytest.mark.integration

SLEEP = Query("test.sleep", Tier.REPORT, "SELECT pg_sleep(5)")


@pytest.fixture(autouse=True)
async def _clean_faults(sim_control):
    await sim_control.clear_faults()
    yield
    await sim_control.clear_faults()


async def hang(sim_control, amount: str) -> None:
    await sim_control.add_fault({"match": {"amount": amount}, "action": {"type": "timeout"}})


async def settled(live, amount: int, timeout: float = 3.0) -> list[asyncpg.Record]:
    """The rows once none is `pending` any more (background marking may take a moment)."""
    deadline = time.monotonic() + timeout
    rows = await live.rows(amount)
    while any(r["status"] == "pending" for r in rows) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        rows = await live.rows(amount)
    return rows


async def test_handler_deadline_with_a_hanging_gateway(live_app, token, sim_control) -> None:
    """Request timeout 0.2 s, the gateway never answers → 504 `deadline_exceeded` at ≈ 0.2 s; the
    transaction is left `unknown` for reconciliation, and nothing was sent twice."""
    live = await live_app(request_timeout=0.2)
    await hang(sim_control, "21.01")
    reply = await live.pay(2101, token)
    assert reply.status == 504 and reply.json()["code"] == "deadline_exceeded"
    assert reply.elapsed < 1.5
    [row] = await settled(live, 2101)
    assert row["status"] == "unknown", "the cancelled call may have reached the gateway"
    entries = await sim_control.ledger(tran_type="CCE1", tran_nbr=row["tran_nbr"])
    assert len(entries) == 1 and not entries[0]["processed"]


async def test_client_deadline_overrides_the_server_budget(live_app, token, sim_control) -> None:
    """`X-Request-Timeout-Ms: 1000` beats a 60 s request timeout (and a 30 s gateway budget)."""
    live = await live_app(
        request_timeout=60.0,
        service_critical_timeout=45.0,
        gateway_timeout=30.0,
        gateway_attempt_timeout=10.0,
    )
    await hang(sim_control, "21.02")
    reply = await live.pay(2102, token, headers={"X-Request-Timeout-Ms": "1000"})
    assert reply.status == 504 and reply.json()["code"] == "deadline_exceeded"
    assert 0.9 <= reply.elapsed < 3.0
    [row] = await settled(live, 2102)
    assert row["status"] == "unknown"


async def test_gateway_call_budget_returns_unknown_inside_the_request(live_app, token, sim_control) -> None:
    """Attempt 0.3 s, call 0.8 s, request 5 s: the hanging gateway costs at most the call budget;
    every attempt resent the same TRAN_NBR; the answer is a 202 `unknown`."""
    live = await live_app(gateway_attempt_timeout=0.3, gateway_timeout=0.8)
    await hang(sim_control, "21.03")
    reply = await live.pay(2103, token)
    assert reply.status == 202 and reply.json()["status"] == "unknown"
    assert reply.elapsed < 2.0
    [row] = await live.rows(2103)
    entries = await sim_control.ledger(tran_nbr=row["tran_nbr"])
    assert 2 <= len(entries) <= 3
    assert {e["tran_nbr"] for e in entries} == {row["tran_nbr"]}
    assert not any(e["processed"] for e in entries)


async def test_gateway_attempt_budget_is_capped_by_the_call_budget(epx_sim, sim_control) -> None:
    """Attempt budget 10 s but call budget 0.4 s: one hang costs ≈ 0.4 s, not 10 s."""
    settings = stack_settings("postgresql://unused@127.0.0.1/unused", epx_sim)
    await hang(sim_control, "21.04")
    session = http.create_session(http.gateway_profile(settings))
    try:
        client = EpxServerPostClient(
            session, epx_sim.server_post_url, CircuitBreaker("t"), attempt_timeout=10.0, call_timeout=0.4
        )
        request = for_sale(
            merchant=SANDBOX_KEY,
            tran_nbr=tran_nbr_for(uuid7()),
            amount_cents=2104,
            at=datetime.now(UTC),
            storage_bric="0900000000000000000A",
        )
        trace = CallTrace()
        started = time.perf_counter()
        result = await client.process(request, trace=trace)
        elapsed = time.perf_counter() - started
    finally:
        await session.close()
    assert result.outcome == "unknown" and result.error_code == "timeout"
    assert elapsed < 1.0
    assert trace.may_have_reached_gateway


async def test_client_disconnect_during_a_slow_gateway_call_stops_the_work(
    live_app, token, sim_control
) -> None:
    """The client leaves 0.3 s into a 2 s gateway call: the handler is cancelled at once, no
    further attempt reaches the gateway, the transaction ends `unknown` (never a second TRAN_NBR)."""
    live = await live_app()
    await sim_control.add_fault({"match": {"amount": "21.05"}, "action": {"type": "latency", "ms": 2000}})
    reply = await live.pay(2105, token, disconnect_after=0.3)
    assert reply.status == 0 and reply.elapsed < 0.6
    [row] = await settled(live, 2105)
    assert row["status"] == "unknown" and row["failure_code"] == "cancelled"
    await asyncio.sleep(2.0)  # past the simulated latency and any would-be retry
    entries = await sim_control.ledger(tran_type="CCE1")
    mine = [e for e in entries if e.get("amount") == "21.05"]
    assert len(mine) == 1 and mine[0]["tran_nbr"] == row["tran_nbr"]
    assert len(await live.rows(2105)) == 1


async def test_disconnect_before_sending_releases_the_payment(live_app, token, sim_control) -> None:
    """Cancelled while waiting for the first attempt's connection? Here: during a backoff after a
    provably-unsent failure; the row ends `failed` and the simulator saw only the refused try."""
    live = await live_app(retry_base=1.0, retry_jitter=0.0)
    await sim_control.add_fault(
        {"match": {"amount": "21.06"}, "action": {"type": "fail_before_process", "fail": 503}, "first": 1}
    )
    reply = await live.pay(2106, token, disconnect_after=0.3)
    assert reply.status == 0 and reply.elapsed < 0.6
    await asyncio.sleep(1.2)  # the backoff would have ended by now
    [row] = await settled(live, 2106)
    entries = await sim_control.ledger(tran_nbr=row["tran_nbr"])
    assert len(entries) == 1 and not entries[0]["processed"]
    assert row["status"] in ("unknown", "failed")


async def test_db_query_is_capped_by_the_remaining_budget(clean_db, epx_sim) -> None:
    """A REPORT-tier (30 s) query under a 0.2 s request deadline is cut at ≈ 0.2 s."""
    settings = stack_settings(clean_db, epx_sim)
    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    try:
        token = dl.set_deadline(asyncio.get_running_loop().time() + 0.2)
        started = time.perf_counter()
        try:
            with pytest.raises(QueryTimeout):
                await db.fetchval(SLEEP)
        finally:
            dl.reset_deadline(token)
        assert time.perf_counter() - started < 1.0
        assert await db.fetchval(Query("test.one", Tier.SIMPLE, "SELECT 1")) == 1
    finally:
        await db.pool.close()


async def test_pool_acquire_is_capped_by_the_remaining_budget(clean_db, epx_sim) -> None:
    """Pool exhausted, acquire timeout 2 s, 0.2 s left → 503 `database_unavailable` at ≈ 0.2 s."""
    settings = stack_settings(clean_db, epx_sim)
    db = await create_database(settings, clean_db, min_size=1, max_size=1)
    try:
        async with db.acquire():
            token = dl.set_deadline(asyncio.get_running_loop().time() + 0.2)
            started = time.perf_counter()
            try:
                with pytest.raises(PoolExhausted) as info:
                    async with db.acquire():
                        pass
            finally:
                dl.reset_deadline(token)
            assert info.value.status == 503 and info.value.spec.code == "database_unavailable"
            assert time.perf_counter() - started < 1.0
    finally:
        await db.pool.close()


async def test_transaction_runs_under_one_deadline(clean_db, epx_sim) -> None:
    """Two 0.2 s statements, 0.3 s left: the transaction's single deadline cuts the second one."""
    settings = stack_settings(clean_db, epx_sim)
    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    try:
        token = dl.set_deadline(asyncio.get_running_loop().time() + 0.3)
        started = time.perf_counter()
        try:
            with pytest.raises(QueryTimeout):
                async with db.transaction() as con:
                    await con.fetchval(Query("test.short", Tier.SIMPLE, "SELECT pg_sleep(0.2)"))
                    await con.fetchval(Query("test.short2", Tier.SIMPLE, "SELECT pg_sleep(0.2)"))
        finally:
            dl.reset_deadline(token)
        assert time.perf_counter() - started < 1.0
    finally:
        await db.pool.close()
