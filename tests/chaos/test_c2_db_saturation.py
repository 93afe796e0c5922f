"""Chaos C2: the database pool saturates under load, then every backend is terminated.

A tiny pool (4) and a lock that makes every payment statement wait: the pool's connections are all
held by waiting requests, the rest fail fast with 503 `database_unavailable` after the acquire
timeout (1 s here), none hangs past its budget, and the pool metrics show it. After the lock is
released the service recovers within 5 s. Then `pg_terminate_backend` on every server connection:
the next requests succeed. The ledger check ends it. Last, the pool metrics scraped idle, saturated
and recovered are replayed through the real alert rules with promtool: DbPoolCritical and
DbPoolExhausted fire on the saturated numbers and clear on the recovered ones."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.chaos import ChaosStack, Load, metric, metric_sum
from tests.support.promreplay import Replay, promtool

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

ENV = {
    "PAYCORE_DB_MAX_CONNS": "4",
    "PAYCORE_DB_MIN_CONNS": "1",
    "PAYCORE_DB_ACQUIRE_TIMEOUT": "1s",
    "PAYCORE_DB_POOL_MONITOR_INTERVAL": "0.5s",  # the pool gauges follow within half a second
}


async def test_c2_pool_saturation_and_terminated_backends(clean_db, tmp_path) -> None:
    async with ChaosStack(clean_db, env=ENV) as stack:
        idle = await stack.metrics()
        load = Load(stack)
        load.start(concurrency=12)
        await asyncio.sleep(1.5)
        holder = await asyncpg.connect(clean_db)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
            locked = time.monotonic()
            await asyncio.sleep(3.0)
            saturated = await stack.metrics()
            await tx.rollback()
            released = time.monotonic()
        finally:
            await holder.close()
        await asyncio.sleep(6.0)
        terminating = time.monotonic()
        terminator = await asyncpg.connect(clean_db)
        try:
            killed = await terminator.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'paycore'"
            )
        finally:
            await terminator.close()
        terminated = time.monotonic()
        await asyncio.sleep(3.0)
        report = await load.stop()
        ended = time.monotonic()
        await asyncio.sleep(1.0)  # a pool-gauge sample after the last request
        recovered = await stack.metrics()
        assert await stack.stop_server() == 0
        errors = [e for e in stack.server.log_events("error") if e.get("event") != "db_pool_critical"]
        await stack.reconcile()
        problems = await stack.ledger_problems(report.outcomes)

    assert report.statuses()[500] == 0, errors[:3]
    held = report.between(locked + 0.1, released)
    refused = [o for o in held if o.status == 503]
    # 8 clients beyond the 4 connections, 1 s acquire timeouts, 3 s of lock: ~16 refusals on an idle
    # machine; the bound leaves room for a loaded one
    assert len(refused) >= 3
    assert {o.code for o in refused} == {"database_unavailable"}
    assert {o.status for o in held} <= {201, 202, 503}
    # at worst an acquire wait (1 s) then a statement cut at its tier (2 s): inside the 5 s budget
    assert max(o.elapsed for o in held) < 4.0, "a request waited past its acquire/query budget"
    fast = sorted(o.elapsed for o in refused)
    assert fast[len(fast) // 2] < 2.0  # most fail at the 1 s acquire timeout
    # the metrics show the saturation
    assert (
        metric(saturated, "db_pool_acquired_connections") == metric(saturated, "db_pool_max_connections") == 4
    )
    assert metric(saturated, "db_pool_acquire_duration_seconds_count", status="timeout") >= 4
    assert metric(saturated, "db_pool_empty_acquire_total") >= 4
    assert metric(saturated, "db_pool_canceled_acquire_total") >= 4
    assert metric_sum(saturated, "http_requests_total", code="503") >= 3
    # recovery within 5 s of the release, and after the backends were terminated
    # every request from 5 s after the release on succeeds (those caught by the termination aside)
    after_release = [
        o for o in report.between(released + 5.0, terminating) if o.started + o.elapsed < terminating
    ]
    assert after_release and all(o.status == 201 for o in after_release), (report.statuses(), errors[:5])
    assert killed >= 1
    after_terminate = report.between(terminated + 0.5, ended)
    assert after_terminate and all(o.status == 201 for o in after_terminate), [
        (o.status, o.code) for o in after_terminate if o.status != 201
    ]
    assert problems == [], problems
    # the DbPool alerts, evaluated by promtool on the numbers this server exported
    if promtool() is None:
        pytest.skip("promtool missing (apt-get install prometheus; .ci/run installs it)")
    replay = Replay(prefixes=("db_pool_",), instance="chaos-c2:8080")
    replay.phase(idle, minutes=2)
    replay.expect(1.5, "DbPoolCritical", firing=False)
    saturated_from = replay.phase(saturated, minutes=8)
    recovered_from = replay.phase(recovered, minutes=5)
    replay.expect(saturated_from + 0.5, "DbPoolCritical", firing=False)  # pending for its 1 m
    replay.expect(saturated_from + 2, "DbPoolCritical", firing=True)
    replay.expect(saturated_from + 2, "DbPoolExhausted", firing=False)  # pending for its 5 m
    replay.expect(saturated_from + 6, "DbPoolExhausted", firing=True)
    replay.expect(recovered_from + 2, "DbPoolCritical", firing=False)
    replay.expect(recovered_from + 2, "DbPoolExhausted", firing=False)
    ratio = ("db_pool_acquired_connections", "db_pool_max_connections")
    result = replay.run(tmp_path, value_of={"DbPoolCritical": ratio, "DbPoolExhausted": ratio})
    assert result.returncode == 0, result.stdout + result.stderr
