"""Chaos C4/C5: the server is stopped under load — gracefully (SIGTERM, then a new process: a
rolling restart) and hard (kill -9, then a new process).

SIGTERM: every payment in flight completes (201), new requests get only the draining 503
`shutting_down` (or a refused connection once the listener is closed), the process exits 0 in
< 30 s, nothing is left `pending`/`unknown` even before reconciliation, and no payment is lost.
kill -9: the payments in flight are left `pending`; `paycore reconcile` resolves every one of them
against the gateway's report, and the ledger check holds."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.support.chaos import ChaosStack, Load

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

SLOW = {"target": "server_post", "action": {"type": "latency", "ms": 400}}


async def test_c5_sigterm_under_load_then_a_new_process(clean_db) -> None:
    async with ChaosStack(clean_db) as stack:
        async with stack.control() as ctl:
            await ctl.add_fault(SLOW)  # keeps ~all requests in flight at the signal
        load = Load(stack)
        load.start(concurrency=10)
        await asyncio.sleep(2.0)
        old = stack.server
        assert old is not None and old.proc is not None
        signalled = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(old.proc.wait, 30)
        exited = time.monotonic()
        await stack.start_server()  # the rolling restart: a new process takes over
        restarted = time.monotonic()
        await asyncio.sleep(2.0)
        report = await load.stop()
        assert await stack.stop_server() == 0
        rows = await stack.rows()
        unresolved_before_reconcile = [r["tran_nbr"] for r in rows if r["status"] in ("pending", "unknown")]
        await stack.reconcile()
        problems = await stack.ledger_problems(report.outcomes)

    assert code == 0 and exited - signalled < 30.0
    in_flight = report.between(0, signalled - 0.05)
    assert len(in_flight) >= 20
    assert [o.status for o in in_flight if o.status != 201] == [], "an in-flight payment did not complete"
    # no 5xx other than the draining 503; connection errors only after the signal (listener closed)
    server_errors = [o for o in report.outcomes if o.status >= 500]
    assert all(o.status == 503 and o.code == "shutting_down" for o in server_errors), [
        (o.status, o.code) for o in server_errors
    ]
    assert all(o.started >= signalled - 0.05 for o in report.outcomes if o.status in (0, 503))
    assert unresolved_before_reconcile == [], "a payment was left in flight by the graceful stop"
    after = report.between(restarted + 0.5, time.monotonic())
    assert after and {o.status for o in after} == {201}
    assert problems == [], problems


async def test_c5_kill_9_under_load_is_reconciled(clean_db) -> None:
    async with ChaosStack(clean_db) as stack:
        async with stack.control() as ctl:
            await ctl.add_fault(SLOW)  # processed on arrival, answered 400 ms later: in flight at the kill
        load = Load(stack)
        load.start(concurrency=10)
        await asyncio.sleep(2.0)
        assert stack.server is not None
        stack.server.kill()  # SIGKILL to the whole process group
        killed = time.monotonic()
        await asyncio.sleep(0.5)
        await stack.start_server()
        restarted = time.monotonic()
        await asyncio.sleep(1.5)
        report = await load.stop()
        assert await stack.stop_server() == 0
        pending = [r for r in await stack.rows() if r["status"] in ("pending", "unknown")]
        reconciled = await stack.reconcile()
        rows = {r["tran_nbr"]: r for r in await stack.rows()}
        problems = await stack.ledger_problems(report.outcomes)

    # the kill left payments in flight; reconciliation resolved every one (charged → approved)
    assert pending, "no payment was in flight at the kill"
    assert sum(reconciled.get(k, 0) for k in ("approved", "failed", "declined")) >= len(pending)
    assert all(rows[p["tran_nbr"]]["status"] in ("approved", "failed") for p in pending)
    assert reconciled.get("approved", 0) >= 1
    lost = [o for o in report.between(0, killed) if o.status not in (201, 0)]
    assert lost == [], [(o.status, o.code) for o in lost]
    after = report.between(restarted + 0.5, time.monotonic())
    assert after and {o.status for o in after} == {201}
    assert problems == [], problems
