"""Chaos C1: the gateway dies mid-load (SIGKILL of the simulator) and comes back.

In-flight calls end within their budget (424 or 202 `unknown`, no hang); the breaker opens and
requests fail fast with 424; after the restart the breaker closes again (open timeout 2 s here,
then 3 probes) and sales succeed; reconciliation leaves the gateway's ledger and the database in
agreement. To keep the simulator's amnesia out of the verdict (a restarted simulator has lost its
transactions, the real gateway would not), the calls in flight at the kill hang unprocessed."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.chaos import ChaosStack, Load, metric

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

OPEN_TIMEOUT = 2.0


async def test_c1_simulator_killed_mid_load(clean_db) -> None:
    env = {"PAYCORE_CB_OPEN_TIMEOUT": f"{OPEN_TIMEOUT:g}s"}
    async with ChaosStack(clean_db, env=env) as stack:
        load = Load(stack)
        load.start(concurrency=6)
        await asyncio.sleep(2.0)
        async with stack.control() as ctl:
            await ctl.add_fault(
                {"target": "server_post", "action": {"type": "fail_before_process", "fail": "hang"}}
            )
        await asyncio.sleep(0.3)  # calls now in flight hang, unprocessed
        await stack.snapshot_ledger()
        killed = time.monotonic()
        stack.sim.kill()
        await asyncio.sleep(3.0)
        during = await stack.metrics()
        await stack.restart_simulator()
        restarted = time.monotonic()
        await asyncio.sleep(OPEN_TIMEOUT + 3.0)
        report = await load.stop()
        ended = time.monotonic()
        after = await stack.metrics()
        assert await stack.stop_server() == 0
        reconciled = await stack.reconcile()
        problems = await stack.ledger_problems(report.outcomes)

    before_kill = report.between(0, killed)
    outage = report.between(killed + 0.5, restarted)
    recovered = report.between(ended - 1.5, ended)
    assert [o for o in before_kill if o.status not in (201, 202, 424)] == []
    assert sum(o.status == 201 for o in before_kill) >= 20
    # the outage: only 424 (or 202 for calls that may have been sent), fast once the breaker is open
    assert {o.status for o in outage} <= {424, 202}, report.statuses()
    fast = [o for o in outage if o.status == 424 and o.code == "gateway_unavailable"]
    assert len(fast) >= 20
    assert sorted(o.elapsed for o in fast)[int(len(fast) * 0.95)] < 0.5
    assert max(o.elapsed for o in report.outcomes) < 6.0, "a request outlived its 5 s budget"
    assert metric(during, "circuit_breaker_state", name="gateway_server_post") == 1
    assert metric(during, "circuit_breaker_opens_total", name="gateway_server_post") >= 1
    # recovery: the breaker closed again and sales succeed
    assert recovered and all(o.status == 201 for o in recovered), [o.status for o in recovered]
    assert metric(after, "circuit_breaker_state", name="gateway_server_post") == 0
    # nothing charged twice, nothing charged without a record, every unknown resolved
    assert problems == [], problems
    assert reconciled.get("approved", 0) == 0  # the hung calls were never processed
