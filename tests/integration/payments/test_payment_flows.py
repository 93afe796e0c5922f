"""Card payment flows through the service, against the real database and the simulator process."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from paycore.idempotency.model import Replay, request_for
from paycore.kernel.errors import PaycoreError
from paycore.payments import schemas
from paycore.payments.service import ListQuery
from tests.support.tokens import DECLINE_CARD, mint_token

pytestmark = pytest.mark.integration


def idem(body, path="/v1/payments", key=None):
    return request_for(key or uuid.uuid4().hex, "POST", path, msgspec.to_builtins(body))


def decode(resp):
    return msgspec.json.decode(resp.body)


async def create(container, principal, token, amount=1050, capture=True, key=None, **extra):
    body = schemas.CreatePayment(amount=amount, currency="USD", token=token, capture=capture, **extra)
    return await container.payments.create(principal, body, idem(body, key=key))


async def ledger(sim_control, tran_nbr):
    return [e for e in await sim_control.ledger(tran_nbr=int(tran_nbr)) if e.get("processed")]


async def test_sale_is_approved_and_recorded_once(container, principal, token, sim_control):
    resp = await create(container, principal, token, customer_id="cus_1", metadata={"order": "42"})
    assert resp.status == 201
    payment = decode(resp)
    assert payment["status"] == "approved" and payment["amount_captured"] == 1050
    assert payment["card"]["last4"] == "1111" and payment["metadata"] == {"order": "42"}
    entries = await ledger(sim_control, payment["gateway"]["tran_nbr"])
    assert [e["tran_type"] for e in entries] == ["CCE1"]
    got = await container.payments.get(principal, uuid.UUID(payment["id"]))
    assert got.status == "approved" and got.amount_refundable == 1050


async def test_authorization_partial_captures_and_refunds(container, principal, token):
    auth = decode(await create(container, principal, token, amount=10_000, capture=False))
    pid = uuid.UUID(auth["id"])
    assert auth["amount_capturable"] == 10_000
    for amount in (4_000, 6_000):
        body = schemas.CapturePayment(amount=amount)
        resp = await container.payments.capture(
            principal, pid, body, idem(body, f"/v1/payments/{pid}/capture")
        )
        assert resp.status == 201, resp.body
    with pytest.raises(PaycoreError) as info:
        body = schemas.CapturePayment(amount=1)
        await container.payments.capture(principal, pid, body, idem(body, f"/v1/payments/{pid}/capture"))
    assert info.value.code == "amount_exceeds_capturable"
    for amount in (5_000, 5_000):
        body = schemas.RefundPayment(amount=amount)
        resp = await container.payments.refund(
            principal, pid, body, idem(body, f"/v1/payments/{pid}/refunds")
        )
        assert resp.status == 201, resp.body
    with pytest.raises(PaycoreError) as info:
        body = schemas.RefundPayment(amount=1)
        await container.payments.refund(principal, pid, body, idem(body, f"/v1/payments/{pid}/refunds"))
    assert info.value.code == "amount_exceeds_refundable"
    final = await container.payments.get(principal, pid)
    assert (final.amount_captured, final.amount_refunded, final.amount_refundable) == (10_000, 10_000, 0)
    assert [t.object for t in final.transactions] == ["capture", "capture", "refund", "refund"]


async def test_void_an_authorization_then_nothing_more(container, principal, token):
    auth = decode(await create(container, principal, token, amount=2_000, capture=False))
    pid = uuid.UUID(auth["id"])
    body = schemas.VoidPayment()
    resp = await container.payments.void(principal, pid, body, idem(body, f"/v1/payments/{pid}/void"))
    assert resp.status == 200
    assert decode(resp)["payment"]["voided"] is True
    with pytest.raises(PaycoreError) as info:
        cap = schemas.CapturePayment(amount=100)
        await container.payments.capture(principal, pid, cap, idem(cap, f"/v1/payments/{pid}/capture"))
    assert info.value.code == "payment_already_voided"


async def test_void_an_unsettled_sale_and_a_single_capture(container, principal, token):
    sale = decode(await create(container, principal, token, amount=3_000))
    sid = uuid.UUID(sale["id"])
    body = schemas.VoidPayment()
    resp = await container.payments.void(principal, sid, body, idem(body, f"/v1/payments/{sid}/void"))
    assert resp.status == 200 and decode(resp)["payment"]["amount_captured"] == 0

    auth = decode(await create(container, principal, token, amount=3_000, capture=False))
    aid = uuid.UUID(auth["id"])
    cap = schemas.CapturePayment(amount=1_000)
    captured = decode(
        await container.payments.capture(principal, aid, cap, idem(cap, f"/v1/payments/{aid}/capture"))
    )
    void = schemas.VoidPayment(capture_id=uuid.UUID(captured["id"]))
    resp = await container.payments.void(principal, aid, void, idem(void, f"/v1/payments/{aid}/void"))
    assert resp.status == 200
    after = decode(resp)["payment"]
    assert after["amount_captured"] == 0 and after["amount_capturable"] == 3_000 and after["voided"] is False


async def test_settled_sale_must_be_refunded_not_voided(container, principal, token, sim_control):
    sale = decode(await create(container, principal, token, amount=1_500))
    sid = uuid.UUID(sale["id"])
    await sim_control.close_batch()
    body = schemas.VoidPayment()
    resp = await container.payments.void(principal, sid, body, idem(body, f"/v1/payments/{sid}/void"))
    problem = decode(resp)
    assert resp.status == 409 and problem["code"] == "payment_settled"
    refund = schemas.RefundPayment()
    resp = await container.payments.refund(
        principal, sid, refund, idem(refund, f"/v1/payments/{sid}/refunds")
    )
    assert resp.status == 201 and decode(resp)["payment"]["amount_refunded"] == 1_500


async def test_decline_answers_402_with_category_and_code(container, principal, epx_sim):
    decline_token = await mint_token(epx_sim.server_post_url, pan=DECLINE_CARD)
    resp = await create(container, principal, decline_token, amount=105)
    assert resp.status == 402
    problem = decode(resp)
    assert problem["code"] == "card_declined"
    assert problem["gateway_code"] == "05" and problem["decline_category"] == "soft_decline"
    assert problem["payment"]["status"] == "declined"


async def test_idempotent_replay_reuse_and_validation(container, principal, token, sim_control):
    body = schemas.CreatePayment(amount=777, currency="USD", token=token)
    key = uuid.uuid4().hex
    first = await container.payments.create(principal, body, idem(body, key=key))
    with pytest.raises(Replay) as replay:
        await container.payments.create(principal, body, idem(body, key=key))
    assert replay.value.status == first.status and replay.value.body == first.body
    other = schemas.CreatePayment(amount=778, currency="USD", token=token)
    with pytest.raises(PaycoreError) as info:
        await container.payments.create(principal, other, idem(other, key=key))
    assert info.value.code == "idempotency_key_reused" and info.value.status == 422
    entries = await ledger(sim_control, decode(first)["gateway"]["tran_nbr"])
    assert len(entries) == 1


async def test_validation_failure_stores_nothing(container, principal, token):
    key = uuid.uuid4().hex
    bad = schemas.CreatePayment(amount=100, currency="EUR", token=token)
    with pytest.raises(PaycoreError) as info:
        await container.payments.create(principal, bad, idem(bad, key=key))
    assert info.value.code == "currency_not_supported"
    good = schemas.CreatePayment(amount=100, currency="USD", token=token)
    resp = await container.payments.create(principal, good, idem(good, key=key))
    assert resp.status == 201


async def test_business_rule_failure_stores_nothing(container, principal, token):
    auth = decode(await create(container, principal, token, amount=500, capture=False))
    pid = uuid.UUID(auth["id"])
    key = uuid.uuid4().hex
    too_much = schemas.CapturePayment(amount=501)
    with pytest.raises(PaycoreError):
        await container.payments.capture(
            principal, pid, too_much, idem(too_much, f"/v1/payments/{pid}/capture", key)
        )
    fine = schemas.CapturePayment(amount=500)
    resp = await container.payments.capture(
        principal, pid, fine, idem(fine, f"/v1/payments/{pid}/capture", key)
    )
    assert resp.status == 201


async def test_another_merchants_payment_is_not_found(container, principal, other_principal, token):
    payment = decode(await create(container, principal, token))
    pid = uuid.UUID(payment["id"])
    with pytest.raises(PaycoreError) as info:
        await container.payments.get(other_principal, pid)
    assert info.value.status == 404
    body = schemas.RefundPayment(amount=1)
    with pytest.raises(PaycoreError) as info:
        await container.payments.refund(other_principal, pid, body, idem(body, f"/v1/payments/{pid}/refunds"))
    assert info.value.status == 404
    listed = await container.payments.list(other_principal, ListQuery(limit=10))
    assert listed.data == []


async def test_concurrent_captures_never_exceed_the_authorization(container, principal, token, sim_control):
    auth = decode(await create(container, principal, token, amount=1_000, capture=False))
    pid = uuid.UUID(auth["id"])

    async def capture():
        body = schemas.CapturePayment(amount=100)
        try:
            resp = await container.payments.capture(
                principal, pid, body, idem(body, f"/v1/payments/{pid}/capture")
            )
            return resp.status
        except PaycoreError as exc:
            return exc.code

    results = await asyncio.gather(*(capture() for _ in range(15)))
    assert results.count(201) == 10
    assert set(results) <= {201, "amount_exceeds_capturable"}
    final = await container.payments.get(principal, pid)
    assert final.amount_captured == 1_000
    captures = [e for e in await sim_control.ledger(tran_type="CCE4") if e.get("processed")]
    mine = {int(t.gateway.tran_nbr) for t in final.transactions}
    assert len([e for e in captures if int(e["tran_nbr"]) in mine]) == 10


async def test_listing_pages_with_cursors_and_filters(container, principal, token):
    ids = []
    for i in range(7):
        payment = decode(await create(container, principal, token, amount=2_000 + i, customer_id="cus_page"))
        ids.append(payment["id"])
    await create(container, principal, token, amount=2_099, customer_id="cus_other")
    seen = []
    cursor = None
    while True:
        page = await container.payments.list(
            principal, ListQuery(limit=3, customer_id="cus_page", starting_after=cursor)
        )
        seen.extend(str(p.id) for p in page.data)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    # and back again
    page = await container.payments.list(
        principal, ListQuery(limit=3, customer_id="cus_page", starting_after=None)
    )
    nxt = await container.payments.list(
        principal, ListQuery(limit=3, customer_id="cus_page", starting_after=page.next_cursor)
    )
    prev = await container.payments.list(
        principal, ListQuery(limit=3, customer_id="cus_page", ending_before=nxt.prev_cursor)
    )
    assert [p.id for p in prev.data] == [p.id for p in page.data]
    approved = await container.payments.list(principal, ListQuery(limit=100, status="approved"))
    assert len(approved.data) == 8
