"""Merchant-cache warm-up at API start (CACHE-1): the busiest active merchants by payments over
the window are loaded in a supervised background task; bounded, never fatal."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs

from paycore.app import create_app
from paycore.bootstrap import Container, build_merchant_directory
from paycore.config import load_settings
from paycore.gateway.port import MerchantKey
from paycore.merchants import service as service_module
from paycore.merchants.repository import MerchantRepository
from paycore.merchants.service import MerchantDirectory
from paycore.platform.db.pool import create_database
from paycore.platform.tasks import TaskSupervisor
from tests.integration.resilience.asgi import lifespan
from tests.support.stack import stack_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def directory(clean_db):
    settings = load_settings({"PAYCORE_ENV": "test"})
    tasks = TaskSupervisor()
    db = await create_database(settings, clean_db, min_size=1, max_size=3)
    try:
        yield build_merchant_directory(settings, db, tasks)
    finally:
        await tasks.cancel_all()
        await db.pool.close()


async def merchants_with_payments(
    directory: MerchantDirectory, dsn: str, counts: list[int]
) -> list[uuid.UUID]:
    """One merchant per count, each with that many payments today (plus a refund each, and ten
    payments two days old that are outside the window)."""
    ids = []
    for n in range(len(counts)):
        merchant = await directory.create_merchant(
            slug=f"m{n}",
            name=f"M{n}",
            environment="sandbox",
            epx=MerchantKey(cust_nbr="9001", merch_nbr=str(900300 + n), dba_nbr="2", terminal_nbr="77"),
        )
        ids.append(merchant.id)
    con = await asyncpg.connect(dsn)
    try:
        for merchant_id, count in zip(ids, counts, strict=True):
            await con.execute(
                """
                INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, amount,
                                          currency, tran_nbr, tran_type, batch_id, created_at)
                SELECT u, $1, u, 'sale', 'card', 'approved', 100, 'USD', 1000000000 + g, 'CCE1', '1',
                       CASE WHEN g > $2 THEN now() - interval '2 days'
                            ELSE now() - g * interval '1 second' END
                  FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, $2 + 10) g) s
                """,
                merchant_id,
                count,
            )
            # follow-ons are not payments of their own: never counted
            await con.execute(
                """
                INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type,
                                          status, amount, currency, tran_nbr, tran_type, batch_id)
                SELECT gen_random_uuid(), merchant_id, id, id, 1, 'refund', 'card', 'approved', 10, 'USD',
                       tran_nbr + 5000000000, 'CCE9', '1'
                  FROM transactions WHERE merchant_id = $1 AND parent_id IS NULL
                """,
                merchant_id,
            )
    finally:
        await con.close()
    return ids


async def test_the_busiest_merchants_are_loaded(directory, clean_db):
    quiet, busy, busiest, idle = await merchants_with_payments(directory, clean_db, [2, 20, 30, 0])
    assert await directory.repo.busiest(10, window=86_400, cap=10_000) == [busiest, busy, quiet]
    assert await directory.warm(2) == 2
    cached = {m for m in (quiet, busy, busiest, idle) if directory.merchants.get(m) is not None}
    assert cached == {busy, busiest}


async def test_the_count_is_capped_and_inactive_merchants_are_skipped(directory, clean_db):
    quiet, busy = await merchants_with_payments(directory, clean_db, [5, 50])
    # capped at 3 payments each, a tie broken by id: the count no longer ranks them
    assert set(await directory.repo.busiest(10, window=86_400, cap=3)) == {quiet, busy}
    con = await asyncpg.connect(clean_db)
    try:
        await con.execute("UPDATE merchants SET status = 'suspended' WHERE id = $1", busy)
    finally:
        await con.close()
    assert await directory.repo.busiest(10, window=86_400, cap=10_000) == [quiet]


async def test_a_failed_warm_up_is_only_logged(directory, clean_db, monkeypatch):
    await merchants_with_payments(directory, clean_db, [3])
    dead = await create_database(load_settings({"PAYCORE_ENV": "test"}), clean_db, min_size=0, max_size=1)
    await dead.pool.close()
    monkeypatch.setattr(directory, "repo", MerchantRepository(dead))
    with capture_logs() as logs:
        monkeypatch.setattr(service_module, "log", structlog.get_logger("paycore.merchants"))
        assert await directory.warm(100) == 0
    [failed] = [e for e in logs if e["event"] == "merchant_cache_warmup_failed"]
    assert failed["log_level"] == "warning" and failed["error"] == "DatabaseUnavailable"


async def test_the_warm_up_is_bounded_in_time(directory, clean_db, monkeypatch):
    await merchants_with_payments(directory, clean_db, [3])

    async def hanging(*_args, **_kwargs):
        await asyncio.sleep(60)

    monkeypatch.setattr(directory.repo, "busiest", hanging)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await directory.warm(100, timeout=0.2) == 0
    assert loop.time() - started < 2.0


async def test_zero_disables_the_warm_up(directory, monkeypatch):
    async def never(*_args, **_kwargs):
        raise AssertionError("no query when the warm-up is off")

    monkeypatch.setattr(directory.repo, "busiest", never)
    assert await directory.warm(0) == 0


async def test_the_container_warms_in_a_supervised_task_without_waiting(container, clean_db, monkeypatch):
    release = asyncio.Event()
    inner = container.merchants.repo.busiest

    async def slow(*args, **kwargs):
        await release.wait()
        return await inner(*args, **kwargs)

    monkeypatch.setattr(container.merchants.repo, "busiest", slow)
    [busy] = await merchants_with_payments(container.merchants, clean_db, [4])
    Container.start_cache_warmup(container)  # returns at once: readiness never waits for it
    assert container.tasks.count("merchant_cache_warmup") == 1
    release.set()
    assert await container.tasks.drain(5.0)
    assert container.merchants.merchants.get(busy) is not None


async def test_the_api_warms_its_merchant_cache_at_start(clean_db, epx_sim, directory, monkeypatch):
    [busy] = await merchants_with_payments(directory, clean_db, [3])
    monkeypatch.setattr("paycore.app.configure_logging", lambda *args, **kwargs: None)
    async with lifespan(create_app(stack_settings(clean_db, epx_sim))) as app:
        container: Container = app.state.container
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while not container.merchants.merchants.has_fresh(busy):
            assert loop.time() < deadline, "the busiest merchant was not loaded at start"
            await asyncio.sleep(0.02)
