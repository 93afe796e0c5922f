"""Recurring billing against the real database and the simulator process: one charge per period,
month ends, catch-up, merchant-initiated indicators, events, dunning, pause/resume/cancel and
changes at the next period."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import msgspec
import pytest

from paycore.bootstrap import job_definitions
from paycore.kernel.errors import PaycoreError
from paycore.platform.observability import metrics as m
from paycore.platform.resilience import deadline as dl
from paycore.subscriptions import jobs, schemas
from tests.integration.subscriptions.conftest import T0
from tests.integration.subscriptions.helpers import create_idem, z

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
FEB_28 = datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
MAR_31 = datetime(2026, 3, 31, 10, 0, tzinfo=UTC)
APR_30 = datetime(2026, 4, 30, 10, 0, tzinfo=UTC)


def sent_fields(payment: dict) -> dict[str, str]:
    """The gateway form paycore stored for a transaction (never card data)."""
    return dict(parse_qsl(payment["gateway_request"]))


async def test_each_period_is_charged_once_on_its_calendar_date(billing, customer):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=1999, start=T0)  # Jan 31
    before = m.SUBSCRIPTION_BILLINGS.labels("approved")._value.get()
    revenue = m.SUBSCRIPTION_REVENUE.labels("other", "USD")._value.get()

    first = await billing.run(T0)
    assert (first.claimed, first.approved) == (1, 1)
    again = await billing.run(T0 + timedelta(hours=12))  # a retried job, the same day
    assert again.claimed == 0
    assert (await billing.run(FEB_28 - timedelta(seconds=1))).claimed == 0
    assert (await billing.run(FEB_28)).approved == 1
    assert (await billing.run(MAR_31 + timedelta(hours=1))).approved == 1

    charges = await billing.charges(sub["id"])
    assert [(c["period_index"], c["attempt"], c["status"]) for c in charges] == [
        (0, 1, "approved"),
        (1, 1, "approved"),
        (2, 1, "approved"),
    ]
    assert [c["period_start"] for c in charges] == [T0, FEB_28, MAR_31]
    assert [c["period_end"] for c in charges] == [FEB_28, MAR_31, APR_30]
    payments = await billing.payments(sub["id"])
    assert [p["id"] for p in payments] == [c["transaction_id"] for c in charges]
    assert {(p["source"], p["status"], p["amount"], p["type"]) for p in payments} == {
        ("subscription", "approved", 1999, "sale")
    }
    assert all(p["payment_method_id"] == pm and p["customer_id"] == customer for p in payments)
    sales = await billing.sales_of(sub["id"])
    assert len(sales) == 3 and sorted(e["tran_nbr"] for e in sales) == sorted(p["tran_nbr"] for p in payments)
    assert len(await billing.gateway_sales()) == 3  # nothing else was charged

    after = await billing.get(sub["id"])
    assert after["status"] == "active" and after["current_period_start"] == z(MAR_31)
    assert after["current_period_end"] == z(APR_30) == after["next_billing_at"]
    assert await billing.event_types(sub["id"]) == ["subscription.created"] + ["subscription.renewed"] * 3
    renewed = (await billing.events(sub["id"]))[-1]["payload"]
    assert renewed["object"]["id"] == sub["id"] and renewed["charge"]["period_index"] == 2
    assert renewed["charge"]["payment_id"] == str(payments[-1]["id"])
    assert m.SUBSCRIPTION_BILLINGS.labels("approved")._value.get() - before == 3
    assert m.SUBSCRIPTION_REVENUE.labels("other", "USD")._value.get() - revenue == 3 * 1999


async def test_charges_are_merchant_initiated_recurring_transactions(billing, customer, container):
    pm = await billing.save_card(customer)
    method = await container.payment_methods.resolve_for_payment(billing.principal.merchant, pm)
    sub = await billing.create(pm, amount=2500, start=T0)
    await billing.run(T0)
    await billing.run(FEB_28)
    first, second = await billing.payments(sub["id"])
    for payment in (first, second):
        fields = sent_fields(payment)
        assert fields["TRAN_TYPE"] == "CCE1" and fields["ACI_EXT"] == "RB"
        assert fields["CARD_ENT_METH"] == "Z" and fields["ORIG_AUTH_GUID"] == method.bric
        assert fields["ORIG_AUTH_TRAN_IDENT"] == method.ntid and method.ntid
    assert "ORIG_AUTH_AMOUNT" not in sent_fields(first)  # no earlier charge yet
    assert sent_fields(second)["ORIG_AUTH_AMOUNT"] == "25.00"  # the first approved charge


async def test_a_bank_account_is_debited_by_ach_once_verified(billing, customer, container):
    pm = await billing.save_bank_account(customer)
    body = schemas.CreateSubscription(amount=5000, currency="USD", interval="month", payment_method_id=pm)
    with pytest.raises(PaycoreError) as info:  # the pre-note has not cleared yet
        await container.subscriptions.create(billing.principal, body, create_idem(body))
    assert info.value.code == "payment_method_not_verified"
    assert await container.payment_methods.verify_due(now=datetime.now(UTC) + 10 * DAY) == 1
    sub = await billing.create(pm, amount=5000, start=T0)
    assert (await billing.run(T0)).approved == 1
    [payment] = await billing.payments(sub["id"])
    fields = sent_fields(payment)
    assert (fields["TRAN_TYPE"], fields["STD_ENTRY_CLASS"], fields["CARD_ENT_METH"]) == ("CKC2", "WEB", "Z")
    assert "ACI_EXT" not in fields and payment["payment_type"] == "ach" and payment["amount"] == 5000
    assert [c["status"] for c in await billing.charges(sub["id"])] == ["approved"]


async def test_a_subscription_behind_by_several_periods_is_billed_once_per_period(billing, customer):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, interval="week", start=T0)
    report = await billing.run(T0 + 3 * 7 * DAY + timedelta(hours=1))  # 4 periods started
    assert report.approved == 4
    charges = await billing.charges(sub["id"])
    assert [c["period_index"] for c in charges] == [0, 1, 2, 3]
    assert [c["period_start"] for c in charges] == [T0 + i * 7 * DAY for i in range(4)]
    assert len(await billing.sales_of(sub["id"])) == 4
    assert (await billing.run(T0 + 4 * 7 * DAY - timedelta(seconds=1))).claimed == 0


async def test_many_subscriptions_in_batches_and_merchants(billing, customer, other_principal):
    pm = await billing.save_card(customer)
    other_pm = await billing.save_card("cus_other", principal=other_principal)
    subs = [await billing.create(pm, start=T0, amount=1000 + i) for i in range(9)]
    subs += [await billing.create(other_pm, start=T0, principal=other_principal) for _ in range(3)]
    report = await billing.run(T0)  # batches of 7 (PAYCORE_BILLING_BATCH_SIZE in this suite)
    assert report.approved == 12 and report.batches == 2 and len(report.merchants) == 2
    for sub in subs:
        assert [c["status"] for c in await billing.charges(sub["id"])] == ["approved"]
    assert len(await billing.gateway_sales()) == 12


async def test_the_job_body_is_a_plain_coroutine(billing, customer, container):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    report = await jobs.bill_due(container.subscriptions, T0)
    assert report.approved == 1
    assert [c["status"] for c in await billing.charges(sub["id"])] == ["approved"]
    [definition] = jobs.jobs(container.settings)
    assert definition.name == "subscriptions.bill_due" and definition.every == 60.0
    assert "subscriptions.bill_due" in {d.name for d in job_definitions(container.settings)}


async def test_a_run_near_its_deadline_claims_no_more(billing, customer, container):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    async with dl.budget(2.0):  # below PAYCORE_SERVICE_CRITICAL_TIMEOUT (3 s in tests)
        report = await container.subscriptions.bill_due(T0)
    assert report.stopped_early and report.claimed == 0
    assert await billing.charges(sub["id"]) == []
    async with dl.budget(30.0):
        assert (await container.subscriptions.bill_due(T0)).approved == 1


# --- dunning ---------------------------------------------------------------------------------------
async def test_soft_declines_are_retried_after_1_3_5_days_then_past_due(billing, customer):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=120, start=T0)  # $1.20: the simulator answers 51 (soft)
    assert (await billing.run(T0)).declined == 1
    charge = (await billing.charges(sub["id"]))[0]
    assert charge["next_retry_at"] == T0 + DAY and charge["decline_category"] == "soft_decline"
    assert charge["gateway_code"] == "51"
    assert (await billing.run(T0 + DAY - timedelta(minutes=1))).claimed == 0
    assert (await billing.run(T0 + DAY)).declined == 1
    assert (await billing.run(T0 + 2 * DAY)).claimed == 0
    assert (await billing.run(T0 + 3 * DAY)).declined == 1
    last = await billing.run(T0 + 5 * DAY)
    assert last.declined == 1 and last.past_due == 1

    charges = await billing.charges(sub["id"])
    assert [(c["period_index"], c["attempt"], c["status"]) for c in charges] == [
        (0, n, "declined") for n in (1, 2, 3, 4)
    ]
    assert [c["next_retry_at"] for c in charges] == [T0 + DAY, T0 + 3 * DAY, T0 + 5 * DAY, None]
    payments = await billing.payments(sub["id"])
    assert [p["id"] for p in payments] == [c["transaction_id"] for c in charges]
    assert len({p["tran_nbr"] for p in payments}) == 4  # every retry is a new transaction
    assert {p["status"] for p in payments} == {"declined"}
    state = await billing.get(sub["id"])
    assert state["status"] == "past_due" and state["failed_attempts"] == 4
    assert state["next_billing_at"] is None and state["current_period_end"] is None
    assert await billing.event_types(sub["id"]) == [
        "subscription.created",
        *["subscription.payment_failed"] * 4,
        "subscription.past_due",
    ]
    assert (await billing.run(T0 + 40 * DAY)).claimed == 0  # past_due is not billed


async def test_a_hard_decline_is_past_due_at_once(billing, customer):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=114, start=T0)  # $1.14: 14 invalid card (hard)
    report = await billing.run(T0)
    assert report.declined == 1 and report.past_due == 1
    [charge] = await billing.charges(sub["id"])
    assert charge["decline_category"] == "hard_decline" and charge["next_retry_at"] is None
    assert (await billing.get(sub["id"]))["status"] == "past_due"
    assert (await billing.run(T0 + 10 * DAY)).claimed == 0


async def test_a_retry_that_succeeds_renews_and_keeps_the_calendar(billing, customer, container):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=120, start=T0)
    await billing.run(T0)  # declined (51)
    # the customer fixes the problem: the next attempt of the unpaid period uses the new card
    new_pm = await billing.save_card(customer)
    body = schemas.UpdateSubscription(payment_method_id=new_pm)
    await container.subscriptions.update(billing.principal, uuid.UUID(sub["id"]), body)
    await container.subscriptions.update(
        billing.principal, uuid.UUID(sub["id"]), schemas.UpdateSubscription(amount=2000)
    )
    # the simulator declines $1.20 on any card: the gateway refuses the retry instead (HTTP 400,
    # provably not processed)
    await billing.sim_control.add_fault(
        {"match": {"amount": "1.20"}, "action": {"type": "http_error", "status": 400}, "first": 100}
    )
    report = await billing.run(T0 + DAY)
    assert report.failed == 1  # refused before processing: no decline, nothing counted
    state = await billing.get(sub["id"])
    assert state["failed_attempts"] == 1 and state["payment_method_id"] == str(new_pm)
    charges = await billing.charges(sub["id"])
    assert [(c["attempt"], c["status"], c["payment_method_id"]) for c in charges] == [
        (1, "declined", pm),
        (2, "failed", new_pm),
    ]
    assert (await billing.run(T0 + DAY + timedelta(minutes=4))).claimed == 0  # waits PAYCORE_BILLING_LEASE
    await billing.sim_control.clear_faults()
    assert (await billing.run(T0 + DAY + timedelta(minutes=5))).declined == 1  # still $1.20 this period
    assert len(await billing.sales_of(sub["id"])) == 2  # the 503s were never processed


async def test_gateway_unavailable_is_no_decline_and_the_period_is_charged_once_later(billing, customer):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=3100, start=T0)
    await billing.sim_control.add_fault(
        {"match": {"amount": "31.00"}, "action": {"type": "http_error", "status": 400}, "first": 1}
    )
    assert (await billing.run(T0)).failed == 1
    state = await billing.get(sub["id"])
    assert state["failed_attempts"] == 0 and state["status"] == "active"
    assert (await billing.run(T0 + timedelta(minutes=5))).approved == 1
    charges = await billing.charges(sub["id"])
    assert [(c["attempt"], c["status"]) for c in charges] == [(1, "failed"), (2, "approved")]
    assert charges[0]["failure_code"] and charges[0]["transaction_id"] != charges[1]["transaction_id"]
    assert len(await billing.sales_of(sub["id"])) == 1
    assert await billing.event_types(sub["id"]) == ["subscription.created", "subscription.renewed"]


async def test_a_payment_method_that_can_no_longer_be_charged_is_past_due(billing, customer, container):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    await container.payment_methods.delete(billing.principal, customer, pm)
    report = await billing.run(T0)
    assert report.past_due == 1 and report.failed == 1
    [charge] = await billing.charges(sub["id"])
    assert charge["status"] == "failed" and charge["failure_code"] == "payment_method_not_found"
    assert charge["transaction_id"] is None
    assert await billing.payments(sub["id"]) == [] and await billing.gateway_sales() == []
    assert (await billing.get(sub["id"]))["status"] == "past_due"


# --- pause, resume, cancel, changes --------------------------------------------------------------
async def test_paused_periods_are_not_billed_and_resume_bills_the_period_in_progress(billing, customer):
    svc = billing.service
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    sid = uuid.UUID(sub["id"])
    await billing.run(T0)
    billing.clock.set(T0 + 5 * DAY)
    paused = msgspec.json.decode((await svc.pause(billing.principal, sid)).body)
    assert paused["status"] == "paused" and paused["next_billing_at"] is None
    assert (await billing.run(FEB_28)).claimed == 0
    assert (await billing.run(MAR_31 + DAY)).claimed == 0
    billing.clock.set(datetime(2026, 4, 2, tzinfo=UTC))  # Feb 28 and Mar 31 periods passed entirely
    resumed = msgspec.json.decode((await svc.resume(billing.principal, sid)).body)
    assert resumed["status"] == "active" and resumed["next_billing_at"] == z(MAR_31)
    report = await billing.run()
    assert report.approved == 1
    charges = await billing.charges(sub["id"])
    assert [(c["period_index"], c["period_start"]) for c in charges] == [(0, T0), (2, MAR_31)]
    assert (await billing.get(sid))["current_period_end"] == z(APR_30)


async def test_cancel_at_period_end_then_nothing_more_is_charged(billing, customer):
    svc = billing.service
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    sid = uuid.UUID(sub["id"])
    await billing.run(T0)
    billing.clock.set(T0 + 3 * DAY)
    body = schemas.CancelSubscription(at_period_end=True)
    scheduled = msgspec.json.decode((await svc.cancel(billing.principal, sid, body)).body)
    assert scheduled["status"] == "active" and scheduled["cancel_at_period_end"] is True
    report = await billing.run(FEB_28)
    assert (report.canceled, report.approved) == (1, 0)
    state = await billing.get(sid)
    assert state["status"] == "canceled" and state["canceled_at"] == z(FEB_28)
    assert state["cancellation_reason"] == "period_end"
    assert (await billing.run(MAR_31)).claimed == 0
    assert len(await billing.charges(sid)) == 1
    assert await billing.event_types(sid) == [
        "subscription.created",
        "subscription.renewed",
        "subscription.canceled",
    ]


async def test_cancel_now_stops_billing_and_is_idempotent(billing, customer):
    svc = billing.service
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    sid = uuid.UUID(sub["id"])
    await billing.run(T0)
    billing.clock.set(T0 + DAY)
    body = schemas.CancelSubscription()
    first = msgspec.json.decode((await svc.cancel(billing.principal, sid, body)).body)
    second = msgspec.json.decode((await svc.cancel(billing.principal, sid, body)).body)
    assert first["status"] == second["status"] == "canceled" and first["canceled_at"] == second["canceled_at"]
    assert (await billing.run(FEB_28 + DAY)).claimed == 0
    assert await billing.event_types(sid) == [
        "subscription.created",
        "subscription.renewed",
        "subscription.canceled",
    ]


async def test_updates_take_effect_at_the_next_period(billing, customer):
    svc = billing.service
    pm = await billing.save_card(customer)
    new_pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=1000, start=T0)
    sid = uuid.UUID(sub["id"])
    await billing.run(T0)
    billing.clock.set(T0 + DAY)
    body = schemas.UpdateSubscription(
        amount=2000, interval="week", interval_count=2, payment_method_id=new_pm
    )
    updated = msgspec.json.decode((await svc.update(billing.principal, sid, body)).body)
    assert updated["amount"] == 1000 and updated["interval"] == "month"
    assert updated["pending_update"] == {
        "effective_at": z(FEB_28),
        "amount": 2000,
        "interval": "week",
        "interval_count": 2,
        "payment_method_id": str(new_pm),
    }
    await billing.run(FEB_28)
    await billing.run(FEB_28 + 14 * DAY)
    charges = await billing.charges(sid)
    assert [(c["amount"], c["payment_method_id"], c["period_start"]) for c in charges] == [
        (1000, pm, T0),
        (2000, new_pm, FEB_28),
        (2000, new_pm, FEB_28 + 14 * DAY),
    ]
    state = await billing.get(sid)
    assert state["amount"] == 2000 and state["interval"] == "week" and state["interval_count"] == 2
    assert state["pending_update"] is None and state["billing_cycle_anchor"] == z(FEB_28)
    assert state["current_period_end"] == z(FEB_28 + 28 * DAY)
    payments = await billing.payments(sid)
    assert [p["payment_method_id"] for p in payments] == [pm, new_pm, new_pm]
