"""Chaos C3: clients leave while their payment waits to retry (CRITICAL-1), under load.

The gateway refuses every first attempt of these sales (HTTP 503, not processed) and the backoff
is 1 s; each client disconnects 0.5 s in, during the wait. The work stops at once: no further
attempt reaches the gateway, each transaction is `unknown` (then resolved), never sent under a
second TRAN_NBR, and the server's task count is back at its baseline."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.chaos import ChaosStack, Load, disconnecting_sale, metric, metric_sum

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

# Ten refused first attempts at once must not open the breaker (that would end the calls early,
# before the clients leave): this scenario is about cancellation, C1 about the breaker.
ENV = {
    "PAYCORE_RETRY_BASE": "1s",
    "PAYCORE_RETRY_JITTER": "0",
    "PAYCORE_CB_FAILURE_THRESHOLD": "50",
    "PAYCORE_CB_WINDOW": "200",
}
AMOUNT = 3111
CLIENTS = 10


async def rows_for(database_url: str, amount: int) -> list[asyncpg.Record]:
    con = await asyncpg.connect(database_url)
    try:
        return await con.fetch("SELECT tran_nbr, status FROM transactions WHERE amount = $1", amount)
    finally:
        await con.close()


async def test_c3_disconnect_during_backoff_stops_the_work(clean_db) -> None:
    async with ChaosStack(clean_db, env=ENV) as stack:
        async with stack.control() as ctl:
            await ctl.add_fault(
                {"match": {"amount": "31.11"}, "action": {"type": "fail_before_process", "fail": 503}}
            )
        await asyncio.sleep(1.5)  # the leak monitor's first sample is the baseline
        baseline = metric(await stack.metrics(), "asyncio_tasks")
        load = Load(stack)
        load.start(concurrency=4)
        await asyncio.sleep(1.0)
        await asyncio.gather(*(disconnecting_sale(stack, AMOUNT, after=0.5) for _ in range(CLIENTS)))
        gone = time.monotonic()
        # every cancelled payment is marked at once (pending → unknown), long before the backoff ends
        while any(r["status"] == "pending" for r in await rows_for(clean_db, AMOUNT)):
            assert time.monotonic() - gone < 0.5, "the cancelled work did not stop at once"
            await asyncio.sleep(0.02)
        marked = await rows_for(clean_db, AMOUNT)
        await asyncio.sleep(2.0)  # well past the 1 s backoff: would-be retries would show now
        async with stack.control() as ctl:
            attempts = [e for e in await ctl.ledger(endpoint="server_post") if e.get("amount") == "31.11"]
        report = await load.stop()
        await asyncio.sleep(2.5)  # idle: two samples of the task monitor
        idle = await stack.metrics()
        assert await stack.stop_server() == 0
        await stack.reconcile()
        final = await rows_for(clean_db, AMOUNT)
        problems = await stack.ledger_problems(report.outcomes)

    assert len(marked) == CLIENTS and len({r["tran_nbr"] for r in marked}) == CLIENTS
    # A payment whose first attempt went out is `unknown`; one cancelled before it (a busy server)
    # is `failed` and was never sent. Either way: at most that one attempt, never a second TRAN_NBR.
    assert {r["status"] for r in marked} <= {"unknown", "failed"}
    sent = {r["tran_nbr"] for r in marked if r["status"] == "unknown"}
    assert len(sent) >= CLIENTS // 2
    assert sorted(e["tran_nbr"] for e in attempts) == sorted(sent), [
        (e["tran_nbr"], e["received_at"]) for e in attempts
    ]
    assert not any(e["processed"] for e in attempts)
    assert metric_sum(idle, "http_requests_total", code="499") == CLIENTS, {
        k: v for k, v in idle.items() if k.startswith("http_requests_total")
    }
    assert metric(idle, "asyncio_tasks") <= baseline + 5
    assert metric_sum(idle, "tracked_tasks") <= metric_sum(idle, "tracked_tasks", type="event_loop_lag") + 10
    assert {r["status"] for r in final} == {"failed"}  # reconciliation: the gateway never had them
    assert report.statuses()[201] >= 10 and set(report.statuses()) == {201}
    assert problems == [], problems
