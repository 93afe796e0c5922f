"""The subscriptions use cases through the service: create (validation, idempotency, tenancy), get,
list (filters, cursor pagination), update, pause/resume/cancel rules and their events."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec
import pytest

from paycore.idempotency.model import Replay, request_for
from paycore.kernel.errors import PaycoreError
from paycore.subscriptions import schemas
from paycore.subscriptions.service import ListQuery
from tests.integration.subscriptions.conftest import T0
from tests.integration.subscriptions.helpers import create_idem, z

pytestmark = pytest.mark.integration


def decode(resp):
    return msgspec.json.decode(resp.body)


async def test_create_and_get(billing, customer, container):
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, amount=1500, interval="month", interval_count=3, description="Pro plan",
                               metadata={"plan": "pro"})  # fmt: skip
    assert sub["object"] == "subscription" and sub["status"] == "active"
    assert sub["customer_id"] == customer and sub["payment_method_id"] == str(pm)
    assert (sub["amount"], sub["currency"], sub["interval"], sub["interval_count"]) == (
        1500,
        "USD",
        "month",
        3,
    )
    assert sub["start_date"] == sub["billing_cycle_anchor"] == sub["next_billing_at"] == z(T0)
    assert sub["current_period_start"] is None and sub["pending_update"] is None
    assert sub["metadata"] == {"plan": "pro"} and sub["livemode"] is False
    got = await billing.get(sub["id"])
    assert got == sub
    [event] = await billing.events(sub["id"])
    assert event["event_type"] == "subscription.created" and event["payload"]["object"]["id"] == sub["id"]


async def test_create_is_idempotent_and_validation_failures_store_nothing(billing, customer, container):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    body = schemas.CreateSubscription(amount=900, currency="USD", interval="week", payment_method_id=pm)
    idem = create_idem(body, "key-1")
    first = await svc.create(billing.principal, body, idem)
    with pytest.raises(Replay) as replay:
        await svc.create(billing.principal, body, idem)
    assert replay.value.status == 201 and replay.value.body == first.body
    other = schemas.CreateSubscription(amount=901, currency="USD", interval="week", payment_method_id=pm)
    with pytest.raises(PaycoreError) as info:
        await svc.create(billing.principal, other, create_idem(other, "key-1"))
    assert info.value.code == "idempotency_key_reused"
    # a refused request stores nothing: the key stays free for a corrected one
    bad = schemas.CreateSubscription(
        amount=900, currency="USD", interval="day", interval_count=2000, payment_method_id=pm
    )
    with pytest.raises(PaycoreError) as info:
        await svc.create(billing.principal, bad, create_idem(bad, "key-2"))
    assert info.value.code == "subscription_interval_invalid" and info.value.status == 422
    good = schemas.CreateSubscription(amount=900, currency="USD", interval="day", payment_method_id=pm)
    assert (await svc.create(billing.principal, good, create_idem(good, "key-2"))).status == 201
    listed = await svc.list_subscriptions(billing.principal, ListQuery(limit=10))
    assert len(listed.data) == 2


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"currency": "EUR"}, "currency_not_supported"),
        ({"start_date": T0 - timedelta(days=2)}, "subscription_start_invalid"),
        ({"start_date": T0 + timedelta(days=400)}, "subscription_start_invalid"),
        ({"customer_id": "cus_someone_else"}, "payment_method_customer_mismatch"),
        ({"payment_method_id": uuid.uuid4()}, "payment_method_not_found"),
    ],
)
async def test_create_refusals(billing, customer, container, change, code):
    pm = await billing.save_card(customer)
    fields = {"amount": 1000, "currency": "USD", "interval": "month", "payment_method_id": pm, **change}
    body = schemas.CreateSubscription(**fields)
    with pytest.raises(PaycoreError) as info:
        await container.subscriptions.create(billing.principal, body, create_idem(body))
    assert info.value.code == code
    assert (await container.subscriptions.list_subscriptions(billing.principal, ListQuery())).data == []


async def test_another_merchants_subscription_and_payment_method_are_not_found(
    billing, customer, container, other_principal
):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    sub = await billing.create(pm)
    sid = uuid.UUID(sub["id"])
    for call in (
        svc.get(other_principal, sid),
        svc.pause(other_principal, sid),
        svc.cancel(other_principal, sid, schemas.CancelSubscription()),
        svc.update(other_principal, sid, schemas.UpdateSubscription(amount=5)),
        svc.list_charges(other_principal, sid, 10),
    ):
        with pytest.raises(PaycoreError) as info:
            await call
        assert info.value.code == "subscription_not_found" and info.value.status == 404
    body = schemas.CreateSubscription(amount=100, currency="USD", interval="month", payment_method_id=pm)
    with pytest.raises(PaycoreError) as info:
        await svc.create(other_principal, body, create_idem(body))
    assert info.value.code == "payment_method_not_found"
    assert (await svc.list_subscriptions(other_principal, ListQuery())).data == []
    assert (await billing.get(sid))["status"] == "active"


async def test_list_filters_and_cursor_pagination(billing, customer, container):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    pm2 = await billing.save_card("cus_two")
    mine = [await billing.create(pm, amount=100 + i) for i in range(5)]
    theirs = [await billing.create(pm2, amount=200 + i) for i in range(2)]
    await svc.pause(billing.principal, uuid.UUID(mine[1]["id"]))
    await svc.cancel(billing.principal, uuid.UUID(theirs[0]["id"]), schemas.CancelSubscription())

    async def ids(**query):
        page = await svc.list_subscriptions(billing.principal, ListQuery(**query))
        return [str(s.id) for s in page.data], page

    newest_first = [s["id"] for s in reversed(mine + theirs)]
    assert (await ids(limit=20))[0] == newest_first
    assert (await ids(customer_id="cus_two"))[0] == [s["id"] for s in reversed(theirs)]
    assert (await ids(payment_method_id=pm))[0] == [s["id"] for s in reversed(mine)]
    assert (await ids(status="paused"))[0] == [mine[1]["id"]]
    assert (await ids(status="canceled"))[0] == [theirs[0]["id"]]
    assert (await ids(status="active", customer_id=customer))[0] == [
        s["id"] for s in reversed(mine) if s["id"] != mine[1]["id"]
    ]
    first, page1 = await ids(limit=3)
    assert first == newest_first[:3] and page1.has_more and page1.prev_cursor is None
    second, page2 = await ids(limit=3, starting_after=page1.next_cursor)
    assert second == newest_first[3:6] and page2.has_more
    third, page3 = await ids(limit=3, starting_after=page2.next_cursor)
    assert third == newest_first[6:] and not page3.has_more and page3.next_cursor is None
    back, _ = await ids(limit=3, ending_before=page3.prev_cursor)
    assert back == newest_first[3:6]
    with pytest.raises(PaycoreError) as info:
        await ids(starting_after="not-a-cursor")
    assert info.value.code == "invalid_cursor"


async def test_state_changes_and_their_refusals(billing, customer, container):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    sub = await billing.create(pm, start=T0)
    sid = uuid.UUID(sub["id"])
    idem = request_for("pause-1", "POST", f"/v1/subscriptions/{sid}/pause", {})
    paused = decode(await svc.pause(billing.principal, sid, idem))
    with pytest.raises(Replay) as replay:
        await svc.pause(billing.principal, sid, idem)  # the same key replays the first answer
    assert msgspec.json.decode(replay.value.body) == paused
    assert decode(await svc.pause(billing.principal, sid))["status"] == "paused"  # idempotent anyway
    assert decode(await svc.resume(billing.principal, sid))["status"] == "active"
    canceled = decode(
        await svc.cancel(billing.principal, sid, schemas.CancelSubscription(at_period_end=True))
    )
    assert canceled["status"] == "canceled"  # nothing paid yet: at_period_end cancels now
    for call, code in (
        (svc.pause(billing.principal, sid), "subscription_canceled"),
        (svc.resume(billing.principal, sid), "subscription_canceled"),
        (svc.update(billing.principal, sid, schemas.UpdateSubscription(amount=10)), "subscription_canceled"),
    ):
        with pytest.raises(PaycoreError) as info:
            await call
        assert info.value.code == code and info.value.status == 409
    assert await billing.event_types(sid) == ["subscription.created", "subscription.canceled"]


async def test_update_validates_the_new_payment_method_and_interval(billing, customer, container):
    svc = container.subscriptions
    pm = await billing.save_card(customer)
    someone_elses = await billing.save_card("cus_else")
    sub = await billing.create(pm, start=T0)
    sid = uuid.UUID(sub["id"])
    with pytest.raises(PaycoreError) as info:
        await svc.update(billing.principal, sid, schemas.UpdateSubscription(payment_method_id=someone_elses))
    assert info.value.code == "payment_method_customer_mismatch"
    with pytest.raises(PaycoreError) as info:
        await svc.update(
            billing.principal, sid, schemas.UpdateSubscription(interval="year", interval_count=4)
        )
    assert info.value.code == "subscription_interval_invalid"
    counted = decode(await svc.update(billing.principal, sid, schemas.UpdateSubscription(interval_count=2)))
    assert (
        counted["pending_update"]["interval"] == "month" and counted["pending_update"]["interval_count"] == 2
    )
    assert counted["pending_update"]["effective_at"] == z(T0)  # nothing billed yet: the first period
    described = decode(
        await svc.update(
            billing.principal, sid, schemas.UpdateSubscription(description="d", metadata={"a": "b"})
        )
    )
    assert described["description"] == "d" and described["metadata"] == {"a": "b"}
    await billing.run(T0)
    [charge] = await billing.charges(sid)
    assert charge["period_end"] == T0 + timedelta(days=59)  # Jan 31 + 2 months = Mar 31
    listed = await svc.list_charges(billing.principal, sid, 10)
    assert [c.status for c in listed.data] == ["approved"] and not listed.has_more
