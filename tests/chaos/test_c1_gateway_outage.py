"""Chaos C1: the gateway dies mid-load (SIGKILL of the simulator) and comes back.

In-flight calls end within their budget (424 or 202 `unknown`, no hang); the breaker opens and
requests fail fast with 424; after the restart the breaker closes again (open timeout 2 s here,
then 3 probes) and sales succeed; reconciliation leaves the gateway's ledger and the database in
agreement. To keep the simulator's amnesia out of the verdict (a restarted simulator has lost its
transactions, the real gateway would not), the calls in flight at the kill hang unprocessed.
Reads that need no gateway keep their latency throughout (a generous bound)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.support.chaos import ChaosStack, Load, metric

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

OPEN_TIMEOUT = 2.0


async def probe_reads(stack: ChaosStack, stop: asyncio.Event, seen: list[tuple[float, float, int]]) -> None:
    """A non-gateway route (payment listing) every 50 ms: (started, elapsed, status)."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(stack.url + "/v1/payments?limit=5", headers=headers) as resp:
                await resp.read()
            seen.append((started, time.monotonic() - started, resp.status))
            await asyncio.sleep(0.05)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.95)]


async def test_c1_simulator_killed_mid_load(clean_db) -> None:
    env = {"PAYCORE_CB_OPEN_TIMEOUT": f"{OPEN_TIMEOUT:g}s"}
    async with ChaosStack(clean_db, env=env) as stack:
        load = Load(stack)
        load.start(concurrency=6)
        stop_reads = asyncio.Event()
        reads: list[tuple[float, float, int]] = []
        reader = asyncio.get_running_loop().create_task(probe_reads(stack, stop_reads, reads))
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
        # the outage ends when the new simulator starts: once it answers, a half-open probe may
        # succeed before restart_simulator() has even returned (it also mints a token)
        restarting = time.monotonic()
        await stack.restart_simulator()
        await asyncio.sleep(OPEN_TIMEOUT + 3.0)
        report = await load.stop()
        stop_reads.set()
        await reader
        ended = time.monotonic()
        after = await stack.metrics()
        assert await stack.stop_server() == 0
        reconciled = await stack.reconcile()
        problems = await stack.ledger_problems(report.outcomes)

    before_kill = report.between(0, killed)
    # answered during the outage (a call retried across the restart may reach the new simulator)
    outage = [o for o in report.between(killed + 0.5, restarting) if o.started + o.elapsed < restarting]
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
    # the gateway outage does not slow the routes that do not need the gateway
    assert {status for _, _, status in reads} == {200}
    baseline_reads = [e for s, e, _ in reads if s < killed]
    outage_reads = [e for s, e, _ in reads if killed + 0.5 <= s < restarting]
    assert len(outage_reads) >= 10
    assert p95(outage_reads) < max(0.25, 3 * p95(baseline_reads))
    # recovery: the breaker closed again and sales succeed
    assert recovered and all(o.status == 201 for o in recovered), [o.status for o in recovered]
    assert metric(after, "circuit_breaker_state", name="gateway_server_post") == 0
    # nothing charged twice, nothing charged without a record, every unknown resolved
    assert problems == [], problems
    assert reconciled.get("approved", 0) == 0  # the hung calls were never processed
