"""CACHE-2 / CACHE-8 against the real database: cached reads, invalidation after every write path
(status, default, delete, verification batch, ACH return, last use, creation), never a pre-write
read; LATENCY-6 (last use in a supervised task that never fails the payment); the Browser Post
entry point `save_card_from_storage`; the job declarations and their bodies."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
import structlog
from structlog.testing import capture_logs

from paycore.bootstrap import build_container, job_definitions
from paycore.kernel.errors import PaycoreError
from paycore.payment_methods import jobs
from paycore.payment_methods import service as service_module
from paycore.payment_methods.service import ListQuery
from paycore.platform.jobs import JobContext
from tests.integration.payment_methods.helpers import (
    bank_body,
    card_body,
    events,
    mint_financial_bric,
    pay,
    saved_id,
    sim_now,
    sql,
)
from tests.integration.payment_methods.test_bank_accounts import advance_until_due
from tests.support.stack import stack_settings

pytestmark = pytest.mark.integration


class CountingGet:
    def __init__(self, repo):
        self.inner = repo.get
        self.calls = 0

    async def __call__(self, method_id):
        self.calls += 1
        return await self.inner(method_id)


@pytest.fixture
def counted(container, monkeypatch):
    counter = CountingGet(container.payment_methods.repo)
    monkeypatch.setattr(container.payment_methods.repo, "get", counter)
    return counter


async def card(container, principal, epx_sim, customer="cus_1"):
    return await saved_id(
        container, principal, customer, card_body(await mint_financial_bric(epx_sim.server_post_url))
    )


async def test_resolving_twice_reads_the_database_once(container, principal, epx_sim, counted):
    pm_id = await card(container, principal, epx_sim)
    svc = container.payment_methods
    first = await svc.resolve_for_payment(principal.merchant, pm_id)
    second = await svc.resolve_for_payment(principal.merchant, pm_id)
    assert first == second and counted.calls == 1
    results = await asyncio.gather(*(svc.resolve_for_payment(principal.merchant, pm_id) for _ in range(50)))
    assert {r.id for r in results} == {pm_id} and counted.calls == 1


async def test_every_write_invalidates_the_cached_method(container, principal, epx_sim, counted):
    svc = container.payment_methods
    pm_id = await card(container, principal, epx_sim)
    await svc.resolve_for_payment(principal.merchant, pm_id)
    await svc.set_active(principal, "cus_1", pm_id, active=False)
    with pytest.raises(PaycoreError) as info:
        await svc.resolve_for_payment(principal.merchant, pm_id)
    assert info.value.code == "payment_method_inactive"
    await svc.set_active(principal, "cus_1", pm_id, active=True)
    assert (await svc.resolve_for_payment(principal.merchant, pm_id)).is_active
    await svc.set_default(principal, "cus_1", pm_id)
    assert (await svc.get(principal, "cus_1", pm_id)).is_default
    await svc.delete(principal, "cus_1", pm_id)
    with pytest.raises(PaycoreError) as info:
        await svc.resolve_for_payment(principal.merchant, pm_id)
    assert info.value.code == "payment_method_not_found"


async def test_verification_batch_and_returns_invalidate(container, principal, sim_control, clean_db):
    svc = container.payment_methods
    good = await saved_id(container, principal, "cus_1", bank_body())
    bad = await saved_id(container, principal, "cus_1", bank_body("900000003"))
    for pm_id in (good, bad):  # cache both as pending
        with pytest.raises(PaycoreError) as info:
            await svc.resolve_for_payment(principal.merchant, pm_id)
        assert info.value.code == "payment_method_not_verified"
    listed = await svc.list(principal, "cus_1", ListQuery(state="pending"))
    assert {m.id for m in listed.data} == {good, bad}
    now = await advance_until_due(sim_control, clean_db, bad)
    await svc.ingest_returns(now=now)
    await svc.verify_due(now=now)
    assert (await svc.resolve_for_payment(principal.merchant, good)).verification_status == "verified"
    with pytest.raises(PaycoreError) as info:
        await svc.resolve_for_payment(principal.merchant, bad)
    assert info.value.code == "payment_method_verification_failed"
    assert (await svc.list(principal, "cus_1", ListQuery(state="pending"))).data == []
    assert [m.id for m in (await svc.list(principal, "cus_1", ListQuery(state="failed"))).data] == [bad]


async def test_a_new_method_shows_in_the_cached_list_at_once(container, principal, epx_sim):
    svc = container.payment_methods
    first = await card(container, principal, epx_sim)
    assert [m.id for m in (await svc.list(principal, "cus_1", ListQuery())).data] == [first]
    second = await card(container, principal, epx_sim)
    assert [m.id for m in (await svc.list(principal, "cus_1", ListQuery())).data] == [second, first]


async def test_reads_never_return_a_pre_write_version(container, principal, epx_sim, clean_db):
    """A random sequence of writes; after each, the service's reads equal the database."""
    svc = container.payment_methods
    ids = [await card(container, principal, epx_sim) for _ in range(3)]
    rng = random.Random(7)
    for _ in range(40):
        target = rng.choice(ids)
        op = rng.choice(["deactivate", "activate", "default", "pay", "get"])
        try:
            if op == "deactivate":
                await svc.set_active(principal, "cus_1", target, active=False)
            elif op == "activate":
                await svc.set_active(principal, "cus_1", target, active=True)
            elif op == "default":
                await svc.set_default(principal, "cus_1", target)
            elif op == "pay":
                await pay(container, principal, target, amount=rng.randint(100, 999))
                await container.tasks.drain(5.0)
        except PaycoreError as exc:
            assert exc.code == "payment_method_inactive"
        rows = {r["id"]: r for r in await sql(clean_db, "SELECT * FROM customer_payment_methods")}
        listed = {m.id: m for m in (await svc.list(principal, "cus_1", ListQuery())).data}
        for pm_id in ids:
            got = await svc.get(principal, "cus_1", pm_id)
            row = rows[pm_id]
            for view in (got, listed[pm_id]):
                assert (view.status == "active") == row["is_active"]
                assert view.is_default == row["is_default"]
                assert view.last_used_at == row["last_used_at"]


async def test_last_used_update_never_fails_the_payment(container, principal, epx_sim, monkeypatch, clean_db):
    pm_id = await card(container, principal, epx_sim)

    async def broken(*_args, **_kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(container.payment_methods.repo, "touch", broken)
    with capture_logs() as logs:
        # a fresh logger: one cached under an earlier logging configuration would bypass the capture
        monkeypatch.setattr(service_module, "log", structlog.get_logger("paycore.payment_methods"))
        resp = await pay(container, principal, pm_id)
        await container.tasks.drain(5.0)
    assert resp.status == 201
    assert any(e["event"] == "payment_method_last_used_failed" and e["log_level"] == "warning" for e in logs)
    [row] = await sql(clean_db, "SELECT last_used_at FROM customer_payment_methods")
    assert row["last_used_at"] is None


async def test_a_slow_last_used_update_lands_after_the_response(
    container, principal, epx_sim, monkeypatch, clean_db
):
    pm_id = await card(container, principal, epx_sim)
    inner = container.payment_methods.repo.touch
    release = asyncio.Event()

    async def slow(method_id, at):
        await release.wait()
        return await inner(method_id, at)

    monkeypatch.setattr(container.payment_methods.repo, "touch", slow)
    resp = await pay(container, principal, pm_id)
    assert resp.status == 201
    assert container.tasks.count("payment_methods.last_used") == 1  # still running: the payment did not wait
    [row] = await sql(clean_db, "SELECT last_used_at FROM customer_payment_methods")
    assert row["last_used_at"] is None
    release.set()
    assert await container.tasks.drain(5.0)
    [row] = await sql(clean_db, "SELECT last_used_at FROM customer_payment_methods")
    assert row["last_used_at"] is not None


async def test_save_card_from_storage_inside_the_callers_transaction(
    container, merchant, principal, clean_db
):
    svc = container.payment_methods
    listed = await svc.list(principal, "cus_9", ListQuery())
    assert listed.data == []
    async with container.db.transaction() as con:
        pm = await svc.save_card_from_storage(
            merchant,
            customer_id="cus_9",
            storage_bric="09STORAGEBRIC0000001",
            brand="V",
            last4="************1111",
            exp_month=11,
            exp_year=29,
            ntid="123456789012345",
            con=con,
        )
    svc.invalidate_customer(merchant.id, "cus_9")
    assert pm.verification_status == "verified" and pm.card_brand == "visa" and pm.card_last4 == "1111"
    assert (pm.exp_month, pm.exp_year, pm.bric_kind) == (11, 2029, "storage")
    assert [m.id for m in (await svc.list(principal, "cus_9", ListQuery())).data] == [pm.id]
    [event] = await events(clean_db, "payment_method.created")
    assert event["id"] == pm.id and event["payload"]["object"]["card"]["last4"] == "1111"
    # rolled back with the caller's transaction: nothing
    with pytest.raises(RuntimeError):
        async with container.db.transaction() as con:
            await svc.save_card_from_storage(
                merchant, customer_id="cus_9", storage_bric="09STORAGEBRIC0000002", brand=None, last4=None,
                exp_month=None, exp_year=None, ntid=None, con=con,
            )  # fmt: skip
            raise RuntimeError("the checkout's transaction fails")
    assert len(await sql(clean_db, "SELECT 1 FROM customer_payment_methods")) == 1
    # without a transaction of the caller
    own = await svc.save_card_from_storage(
        merchant, customer_id="cus_9", storage_bric="09STORAGEBRIC0000003", brand="mastercard",
        last4="4444", exp_month=None, exp_year=None, ntid=None,
    )  # fmt: skip
    assert own.card_brand == "mastercard"
    with pytest.raises(PaycoreError) as info:
        await svc.save_card_from_storage(
            merchant, customer_id="cus_9", storage_bric="4111111111111111", brand=None, last4=None,
            exp_month=None, exp_year=None, ntid=None,
        )  # fmt: skip
    assert info.value.code == "token_looks_like_card_number"


async def test_jobs_are_declared_and_run_their_bodies(container, principal, sim_control, clean_db):
    names = {d.name: d for d in job_definitions(container.settings)}
    for name in (jobs.VERIFICATION_SWEEP, jobs.RETURNS_INGEST, jobs.RETENTION):
        assert names[name].every and names[name].handler is not None
    pm_id = await saved_id(container, principal, "cus_1", bank_body())
    await advance_until_due(sim_control, clean_db, pm_id)
    # the job's clock is paycore's: move the container's to the simulated now
    now = await sim_now(sim_control)

    class At:
        def now(self):
            return now

    container.payment_methods.clock = At()
    ctx = JobContext(container=container, job_id=None, attempt=1)
    await jobs.returns_ingest(ctx, {})
    await jobs.verification_sweep(ctx, {})
    await jobs.retention(ctx, {})
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.verification_status == "verified"


async def test_abandoned_zero_dollar_rows_are_closed_by_retention(container, principal, clean_db, epx_sim):
    pm_id = await card(container, principal, epx_sim)
    assert pm_id
    await sql(
        clean_db,
        "INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, amount,"
        " currency, tran_nbr, tran_type, batch_id, updated_at) VALUES ($1, $2, $1, 'prenote', 'ach',"
        " 'pending', 0, 'USD', 1234567891, 'CKC0', '20260101', now() - interval '1 hour')",
        uuid.uuid4(),
        principal.merchant.id,
    )
    # reconciliation leaves it to its capability (no crash on a $0 type)
    counts = await container.payments.reconcile(older_than=0)
    assert counts["skipped"] >= 1
    await container.payment_methods.purge_deleted()
    [row] = await sql(clean_db, "SELECT status, failure_code FROM transactions WHERE tran_nbr = 1234567891")
    assert (row["status"], row["failure_code"]) == ("failed", "abandoned")


async def test_a_write_in_one_process_invalidates_another_within_a_second(
    container, principal, epx_sim, clean_db
):
    """CACHE-2/CACHE-8 across instances: NOTIFY on commit, the process's one LISTEN connection."""
    other = await build_container(stack_settings(clean_db, epx_sim))
    try:
        assert other.listener is not None
        other.listener.start()
        await asyncio.wait_for(other.listener.listening.wait(), 5)
        svc, remote = container.payment_methods, other.payment_methods
        pm_id = await card(container, principal, epx_sim)
        assert (await remote.resolve_for_payment(principal.merchant, pm_id)).is_active  # cached there
        assert [m.id for m in (await remote.list(principal, "cus_1", ListQuery())).data] == [pm_id]
        await svc.set_active(principal, "cus_1", pm_id, active=False)

        async def until(check):
            for _ in range(100):
                if await check():
                    return True
                await asyncio.sleep(0.01)
            return False

        async def inactive_there():
            try:
                await remote.resolve_for_payment(principal.merchant, pm_id)
            except PaycoreError as exc:
                return exc.code == "payment_method_inactive"
            return False

        assert await until(inactive_there)  # within 1 s
        second = await card(container, principal, epx_sim)

        async def listed_there():
            return len((await remote.list(principal, "cus_1", ListQuery())).data) == 2

        assert await until(listed_there)
        assert second in {m.id for m in (await remote.list(principal, "cus_1", ListQuery())).data}
    finally:
        await other.aclose()
    assert not other.listener.listening.is_set()


async def test_a_listener_reconnect_empties_the_caches_and_foreign_items_are_ignored(
    container, principal, epx_sim
):
    from paycore.platform.db.database import query_counter

    svc = container.payment_methods
    pm_id = await card(container, principal, epx_sim)

    async def queries_to_resolve() -> int:
        counter = [0]
        token = query_counter.set(counter)
        try:
            await svc.resolve_for_payment(principal.merchant, pm_id)
        finally:
            query_counter.reset(token)
        return counter[0]

    await queries_to_resolve()
    assert await queries_to_resolve() == 0  # cached
    svc.on_cache_invalidation(f"mc|jti||;pm|not-a-uuid|x|y;grant|{pm_id}")  # other caches' items
    assert await queries_to_resolve() == 0
    await svc.on_listener_connect()  # notifications may have been missed while disconnected
    assert await queries_to_resolve() >= 1
    svc.on_cache_invalidation(f"pm|{pm_id}|{principal.merchant.id}|cus_1")
    assert await queries_to_resolve() >= 1
