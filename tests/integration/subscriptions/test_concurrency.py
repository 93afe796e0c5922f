"""Never two charges for one period: two billing runs on their own connection pools racing on the
same due subscriptions, a run that dies between the pending payment and its outcome, a run that
dies before or after the gateway call, and the database's own guarantee."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest

from paycore.bootstrap import build_container
from paycore.kernel.clock import FixedClock
from tests.integration.subscriptions.conftest import T0
from tests.support.stack import stack_settings

pytestmark = pytest.mark.integration

LEASE = timedelta(minutes=5)  # PAYCORE_BILLING_LEASE of this suite


@pytest.fixture
async def second(container, clock):
    """Another process's view: its own container and connection pool on the same database."""
    settings = stack_settings(
        container.settings.database_url,
        _Urls(container.settings),
        PAYCORE_BILLING_LEASE="5m",
        PAYCORE_BILLING_BATCH_SIZE="7",
    )
    other = await build_container(settings)
    assert other.subscriptions is not None
    other.subscriptions.clock = FixedClock(clock.now())
    yield other
    await other.aclose()


class _Urls:
    def __init__(self, settings) -> None:
        self.server_post_url = settings.epx_server_post_url
        self.reporting_url = settings.epx_reporting_url
        self.key_exchange_url = settings.epx_key_exchange_url
        self.browser_post_url = settings.epx_browser_post_url


async def until(predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_two_runs_racing_on_the_same_due_subscriptions_charge_each_once(
    billing, customer, container, second
):
    pm = await billing.save_card(customer)
    subs = [await billing.create(pm, start=T0, amount=2000 + i) for i in range(15)]
    await billing.sim_control.add_fault(
        {"match": {"tran_type": "CCE1"}, "action": {"type": "latency", "ms": 60}, "first": 1000}
    )
    one, two = await asyncio.gather(container.subscriptions.bill_due(T0), second.subscriptions.bill_due(T0))
    assert one.claimed > 0 and two.claimed > 0  # both really ran
    assert one.claimed + two.claimed == 15 and one.approved + two.approved == 15
    for sub in subs:
        charges = await billing.charges(sub["id"])
        assert [(c["period_index"], c["attempt"], c["status"]) for c in charges] == [(0, 1, "approved")]
        assert len(await billing.sales_of(sub["id"])) == 1
    assert len(await billing.gateway_sales()) == 15
    # and again, both at once, a period later
    feb = T0 + timedelta(days=28)
    one, two = await asyncio.gather(container.subscriptions.bill_due(feb), second.subscriptions.bill_due(feb))
    assert one.approved + two.approved == 15 and len(await billing.gateway_sales()) == 30


async def test_a_run_taking_over_an_attempt_still_in_flight_never_charges_it_again(
    billing, customer, container, second
):
    """Run A is slow at the gateway; its claim lapses and run B claims the same subscription: B
    finds A's attempt (same transaction, same key) in flight and leaves it alone."""
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0, amount=4100)
    await billing.sim_control.add_fault(
        {"match": {"amount": "41.00"}, "action": {"type": "latency", "ms": 700}, "first": 1}
    )
    run_a = asyncio.ensure_future(container.subscriptions.bill_due(T0))

    async def in_flight():
        return [p for p in await billing.payments(sub["id"]) if p["status"] == "pending"]

    await until(in_flight)
    report_b = await second.subscriptions.bill_due(T0 + LEASE + timedelta(minutes=1))
    assert (report_b.claimed, report_b.pending, report_b.approved) == (1, 1, 0)
    report_a = await run_a
    assert report_a.approved == 1
    charges = await billing.charges(sub["id"])
    assert [(c["attempt"], c["status"]) for c in charges] == [(1, "approved")]
    assert len(await billing.sales_of(sub["id"])) == 1 and len(await billing.gateway_sales()) == 1
    assert (await billing.get(sub["id"]))["current_period_end"] is not None


async def test_a_run_killed_between_the_pending_payment_and_its_outcome(billing, customer, container):
    """The gateway processed the charge but the run died before hearing back: the attempt stays
    pending and its payment is reconciled; re-runs never send it again, then record its outcome."""
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0, amount=4200)
    await billing.sim_control.add_fault(
        {"match": {"amount": "42.00"}, "action": {"type": "process_then_fail", "fail": "hang"}, "first": 1}
    )
    run = asyncio.ensure_future(svc.bill_due(T0))

    async def processed():
        return await billing.sales_of(sub["id"])

    await until(processed)  # charged at the gateway, no answer yet
    run.cancel()  # the run dies here (a killed job)
    with pytest.raises(asyncio.CancelledError):
        await run
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "pending"
    await billing.sim_control.clear_faults()

    assert (await billing.run(T0 + timedelta(minutes=1))).claimed == 0  # still held by the dead run
    resumed = await billing.run(T0 + LEASE + timedelta(seconds=1))  # the claim lapsed: taken over
    assert (resumed.claimed, resumed.pending) == (1, 1)
    [payment] = await billing.payments(sub["id"])
    assert payment["status"] in ("pending", "unknown") and payment["id"] == attempt["transaction_id"]

    async def reconciled():
        await container.payments.reconcile(older_than=0)
        [p] = await billing.payments(sub["id"])
        return p["status"] == "approved"

    await until(reconciled)
    final = await billing.run(T0 + 2 * LEASE + timedelta(seconds=2))
    assert final.approved == 1
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "approved" and attempt["transaction_id"] == payment["id"]
    assert len(await billing.sales_of(sub["id"])) == 1 and len(await billing.gateway_sales()) == 1
    assert await billing.event_types(sub["id"]) == ["subscription.created", "subscription.renewed"]


async def test_a_run_that_dies_before_the_gateway_call_charges_once_later(billing, customer, container):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    real = svc.payments

    class Crashing:
        async def charge_subscription(self, merchant, charge):
            raise RuntimeError("worker lost")

    svc.payments = Crashing()
    try:
        report = await billing.run(T0)
    finally:
        svc.payments = real
    assert (report.claimed, report.errors) == (1, 1)
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "pending" and await billing.payments(sub["id"]) == []
    assert (await billing.run(T0 + LEASE + timedelta(seconds=1))).approved == 1
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "approved"
    assert len(await billing.gateway_sales()) == 1


async def test_a_run_that_dies_after_the_gateway_answered_records_it_later(
    billing, customer, container, monkeypatch
):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    real = svc.repo.record_charge

    async def lost(*args, **kwargs):
        raise ConnectionResetError("the database connection was lost")

    monkeypatch.setattr(svc.repo, "record_charge", lost)
    report = await billing.run(T0)
    assert report.errors == 1
    [payment] = await billing.payments(sub["id"])
    assert payment["status"] == "approved"  # paid at the gateway, not yet on the subscription
    monkeypatch.setattr(svc.repo, "record_charge", real)
    assert (await billing.run(T0 + LEASE - timedelta(seconds=1))).claimed == 0
    assert (await billing.run(T0 + LEASE)).approved == 1
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "approved" and attempt["transaction_id"] == payment["id"]
    assert len(await billing.gateway_sales()) == 1


async def test_the_database_refuses_a_second_live_attempt_for_a_period(billing, customer, container):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    await billing.run(T0)  # attempt 1 approved
    con = await asyncpg.connect(container.settings.database_url)
    try:
        insert = """INSERT INTO subscription_charges (id, subscription_id, merchant_id, period_index,
                        period_start, period_end, attempt, status, amount, currency, payment_method_id,
                        transaction_id, idempotency_key)
                    SELECT $1, id, merchant_id, $2, now(), now() + interval '1 day', $3, $4, 100, 'USD',
                           payment_method_id, $5, 'k' FROM subscriptions WHERE id = $6"""
        sid = uuid.UUID(sub["id"])
        with pytest.raises(asyncpg.UniqueViolationError) as info:
            await con.execute(insert, uuid.uuid4(), 0, 2, "pending", uuid.uuid4(), sid)
        assert info.value.constraint_name == "uq_subscription_charges_one_live_per_period"
        # declined and failed attempts may pile up; a pending one only beside them
        await con.execute(insert, uuid.uuid4(), 1, 1, "declined", uuid.uuid4(), sid)
        await con.execute(insert, uuid.uuid4(), 1, 2, "pending", uuid.uuid4(), sid)
        with pytest.raises(asyncpg.UniqueViolationError):
            await con.execute(insert, uuid.uuid4(), 1, 3, "approved", uuid.uuid4(), sid)
        with pytest.raises(asyncpg.UniqueViolationError) as info:
            await con.execute(insert, uuid.uuid4(), 1, 2, "declined", uuid.uuid4(), sid)
        assert info.value.constraint_name == "uq_subscription_charges_attempt"
    finally:
        await con.close()


async def test_a_paid_period_is_never_charged_again_even_if_the_subscription_lags(
    billing, customer, container
):
    """Defence in depth: should a subscription ever point at a period already approved, the run
    moves it on instead of charging."""
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    await billing.run(T0)
    con = await asyncpg.connect(container.settings.database_url)
    try:
        await con.execute(
            "UPDATE subscriptions SET period_index = 0, next_billing_at = $2 WHERE id = $1",
            uuid.UUID(sub["id"]),
            T0,
        )
    finally:
        await con.close()
    report = await billing.run(T0 + timedelta(days=1))
    assert report.claimed == 1 and report.approved == 0
    assert [c["status"] for c in await billing.charges(sub["id"])] == ["approved"]
    assert (await billing.get(sub["id"]))["next_billing_at"] == "2026-02-28T10:00:00Z"
    assert len(await billing.gateway_sales()) == 1


async def test_a_run_charges_concurrently_and_loads_each_merchant_once(billing, customer, container, clock):
    """SCALE-3: a batch is charged `PAYCORE_BILLING_CONCURRENCY` at a time, and each merchant's
    credentials are loaded once per run, not once per subscription."""
    settings = stack_settings(
        container.settings.database_url,
        _Urls(container.settings),
        PAYCORE_BILLING_BATCH_SIZE="100",
        PAYCORE_BILLING_CONCURRENCY="10",
    )
    runner = await build_container(settings)
    try:
        svc = runner.subscriptions
        assert svc is not None
        pm = await billing.save_card(customer)
        subs = [await billing.create(pm, start=T0, amount=5000 + i) for i in range(40)]
        await billing.sim_control.add_fault(
            {"match": {"tran_type": "CCE1"}, "action": {"type": "latency", "ms": 300}, "first": 1000}
        )
        real_payments, real_lookup = svc.payments, svc.merchant_lookup
        in_flight, peak, lookups = 0, 0, 0

        class Counting:
            async def charge_subscription(self, merchant, charge):
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                try:
                    return await real_payments.charge_subscription(merchant, charge)
                finally:
                    in_flight -= 1

        async def lookup(merchant_id):
            nonlocal lookups
            lookups += 1
            return await real_lookup(merchant_id)

        svc.payments, svc.merchant_lookup = Counting(), lookup
        started = asyncio.get_running_loop().time()
        report = await svc.bill_due(T0)
        elapsed = asyncio.get_running_loop().time() - started
        assert report.approved == 40 and report.batches == 1
        assert peak == 10 and lookups == 1
        assert elapsed < 40 * 0.3 / 2  # far from one at a time (12 s); about 4 × 0.3 s
        for sub in subs:
            assert len(await billing.charges(sub["id"])) == 1
        assert len(await billing.gateway_sales()) == 40
    finally:
        await runner.aclose()


async def test_an_unknown_outcome_waits_for_reconciliation_and_is_never_charged_again(
    billing, customer, container
):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0, amount=4300)
    # processed by the gateway, then a 503: the retry of the same TRAN_NBR is a duplicate → unknown
    await billing.sim_control.add_fault(
        {"match": {"amount": "43.00"}, "action": {"type": "process_then_fail", "fail": 503}, "first": 1}
    )
    report = await billing.run(T0)
    assert (report.claimed, report.pending, report.approved, report.declined) == (1, 1, 0, 0)
    [payment] = await billing.payments(sub["id"])
    assert payment["status"] == "unknown"
    for minutes in (1, 6, 12):  # re-runs before reconciliation: nothing sent, nothing decided
        await billing.run(T0 + timedelta(minutes=minutes))
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "pending" and len(await billing.payments(sub["id"])) == 1
    assert (await billing.get(sub["id"]))["failed_attempts"] == 0
    counts = await container.payments.reconcile(older_than=0)
    assert counts["approved"] >= 1
    [payment] = await billing.payments(sub["id"])
    assert payment["status"] == "approved"
    assert (await billing.run(T0 + timedelta(minutes=20))).approved == 1
    [attempt] = await billing.charges(sub["id"])
    assert attempt["status"] == "approved" and len(await billing.sales_of(sub["id"])) == 1
    assert len(await billing.gateway_sales()) == 1
