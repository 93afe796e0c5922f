"""Query timeouts by tier (CRITICAL-5), pool monitoring (CRITICAL-4), transactions (DB-8)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
import structlog

from paycore.config import load_settings
from paycore.platform.db import PoolExhausted, Query, QueryTimeout, Tier
from paycore.platform.db.database import TierTimeouts
from paycore.platform.db.pool import PoolMonitor, create_database, recommend_pool_size
from paycore.platform.observability import metrics as m
from paycore.platform.resilience import deadline as dl

pytestmark = pytest.mark.integration

SLEEP = Query("test.sleep", Tier.SIMPLE, "SELECT pg_sleep($1)")
PID = Query("test.pid", Tier.SIMPLE, "SELECT pg_backend_pid()")


@pytest.fixture
async def db(database_url):
    settings = load_settings({"PAYCORE_ENV": "test"})
    database = await create_database(settings, database_url, min_size=1, max_size=5)
    yield database
    await database.pool.close()


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_query_timeout_cancels_the_backend(db):
    db.tiers = TierTimeouts(simple=0.1)
    started = time.perf_counter()
    with pytest.raises(QueryTimeout) as info:
        await db.fetchval(SLEEP, 1.0)
    assert time.perf_counter() - started < 0.5
    assert info.value.query_name == "test.sleep" and info.value.status == 503
    db.tiers = TierTimeouts()
    # no leftover active backend running the sleep, and the pool still works
    await asyncio.sleep(0.1)
    active = await db.fetchval(
        Query(
            "test.active",
            Tier.SIMPLE,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'"
            " AND datname = current_database()",
        )
    )
    assert active == 0
    assert await db.fetchval(PID) > 0


async def test_request_deadline_caps_the_tier(db):
    started = time.perf_counter()
    with pytest.raises((QueryTimeout, dl.DeadlineExceeded)):
        async with dl.budget(0.15):
            await db.fetchval(SLEEP, 1.0)
    assert time.perf_counter() - started < 0.6


async def test_transaction_rolls_back_and_counts_errors_and_cancellations(db):
    before_error = _sample("db_transaction_rollbacks_total", {"reason": "error"})
    before_cancel = _sample("db_transaction_rollbacks_total", {"reason": "cancelled"})
    with pytest.raises(RuntimeError):
        async with db.transaction():
            raise RuntimeError("boom")

    async def hang() -> None:
        async with db.transaction() as con:
            await con.fetchval(SLEEP, 5)

    task = asyncio.create_task(hang())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _sample("db_transaction_rollbacks_total", {"reason": "error"}) == before_error + 1
    assert _sample("db_transaction_rollbacks_total", {"reason": "cancelled"}) == before_cancel + 1
    assert await db.fetchval(PID) > 0


async def test_pool_metrics_reflect_held_connections_and_log_error(db):
    held = [await db.pool.acquire() for _ in range(5)]
    try:
        monitor = PoolMonitor(db)
        with structlog.testing.capture_logs() as logs:
            stats = monitor.tick()
        assert stats["acquired"] == 5 and stats["idle"] == 0
        assert _sample("db_pool_acquired_connections") == 5
        assert any(e["event"] == "db_pool_critical" and e["log_level"] == "error" for e in logs)
        # the 6th acquire times out cleanly and is counted
        db.acquire_timeout = 0.2
        empty_before = _sample("db_pool_empty_acquire_total")
        canceled_before = _sample("db_pool_canceled_acquire_total")
        with pytest.raises(PoolExhausted):
            await db.fetchval(PID)
        assert _sample("db_pool_empty_acquire_total") == empty_before + 1
        assert _sample("db_pool_canceled_acquire_total") == canceled_before + 1
    finally:
        for con in held:
            await db.pool.release(con)
    assert await db.fetchval(PID) > 0


async def test_pool_survives_a_terminated_backend(db):
    pid = await db.fetchval(PID)
    admin = await asyncpg.connect(db.pool._connect_args[0])
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    for _ in range(3):
        try:
            assert await db.fetchval(PID) > 0
            break
        except Exception:
            await asyncio.sleep(0.05)
    assert await db.fetchval(PID) > 0


async def test_server_side_settings_on_pooled_connections(db):
    show = Query(
        "test.show", Tier.SIMPLE, "SELECT current_setting('timezone'), current_setting('statement_timeout')"
    )
    row = await db.fetchrow(show)
    assert row[0] == "UTC"
    assert row[1] == "1min"


def test_pool_recommendation():
    assert recommend_pool_size(25, 0.2) == 23
    assert recommend_pool_size(25, 0.5) == 25
    assert recommend_pool_size(25, 0.8) == 30
    assert recommend_pool_size(98, 0.9) == 100
    assert recommend_pool_size(3, 0.1) == 2
    assert m.DB_POOL_MAX is not None
