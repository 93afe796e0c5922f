"""Saved cards against the real database and the simulator: save (CCE8 with its $0 verification),
idempotency, read, list, default, (de)activation, delete and retention, paying with a saved card."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from paycore.idempotency.model import Replay
from paycore.kernel.errors import PaycoreError
from paycore.payment_methods import schemas
from paycore.payment_methods.service import ListQuery
from tests.integration.payment_methods.helpers import (
    card_body,
    decode,
    events,
    idem_for,
    mint_financial_bric,
    pay,
    save,
    saved_id,
    sql,
)
from tests.support.tokens import DECLINE_CARD, mint_token

pytestmark = pytest.mark.integration


@pytest.fixture
async def financial_bric(epx_sim) -> str:
    return await mint_financial_bric(epx_sim.server_post_url)


async def test_save_card_converts_the_financial_bric_with_a_zero_dollar_storage(
    container, principal, financial_bric, recorder, sim_control, clean_db
):
    labels = {"merchant": "other", "payment_type": "card"}
    created_before = REGISTRY.get_sample_value("payment_methods_created_total", labels) or 0.0
    resp = await save(container, principal, "cus_1", card_body(financial_bric, exp_month=12, exp_year=2031))
    assert resp.status == 201, resp.body
    assert REGISTRY.get_sample_value("payment_methods_created_total", labels) == created_before + 1
    out = decode(resp)
    assert out["object"] == "payment_method" and out["type"] == "card" and out["customer_id"] == "cus_1"
    assert out["status"] == "active" and out["verification_status"] == "verified"
    assert out["card"] == {"brand": "visa", "last4": "1111", "exp_month": 12, "exp_year": 2031}
    assert out["bank_account"] is None and out["is_default"] is False
    # the gateway request: CCE8, $0, converting the Financial BRIC, with billing (AVS)
    [fields] = recorder.of("CCE8")
    assert fields["AMOUNT"] == "0.00" and fields["ORIG_AUTH_GUID"] == financial_bric
    assert fields["CARD_ENT_METH"] == "Z" and fields["ZIP_CODE"] == "12345" and "ACCOUNT_NBR" not in fields
    [entry] = [e for e in await sim_control.ledger(tran_nbr=int(fields["TRAN_NBR"])) if e["processed"]]
    assert entry["tran_type"] == "CCE8" and entry["outcome"] == "approved"
    # what is stored: a Storage BRIC (not the financial one), the NTID and the $0 transaction
    [row] = await sql(clean_db, "SELECT * FROM customer_payment_methods")
    assert row["bric"] != financial_bric and row["bric_kind"] == "storage" and row["ntid"]
    [txn] = await sql(clean_db, "SELECT * FROM transactions WHERE type = 'storage'")
    assert txn["status"] == "approved" and txn["amount"] == 0 and txn["payment_method_id"] == row["id"]
    assert txn["auth_guid"] == row["bric"]
    # the event carries exactly the API object
    [event] = await events(clean_db, "payment_method.created")
    assert event["payload"]["object"] == out


async def test_save_is_idempotent_and_a_reused_key_is_refused(container, principal, financial_bric, recorder):
    body = card_body(financial_bric)
    key = uuid.uuid4().hex
    first = await save(container, principal, "cus_1", body, key=key)
    with pytest.raises(Replay) as replay:
        await save(container, principal, "cus_1", body, key=key)
    assert replay.value.status == 201 and replay.value.body == first.body
    with pytest.raises(PaycoreError) as info:
        await save(
            container, principal, "cus_1", card_body(financial_bric, exp_month=1, exp_year=2030), key=key
        )
    assert info.value.code == "idempotency_key_reused"
    assert len(recorder.of("CCE8")) == 1


async def test_a_card_number_as_token_is_refused_and_nothing_is_stored(
    container, principal, recorder, clean_db
):
    with pytest.raises(PaycoreError) as info:
        await save(container, principal, "cus_1", card_body("4111111111111111"))
    assert info.value.code == "token_looks_like_card_number" and info.value.status == 422
    assert recorder.requests == []
    for table in ("transactions", "customer_payment_methods", "idempotency_keys"):
        assert await sql(clean_db, f"SELECT 1 FROM {table}") == []


async def test_unknown_token_is_a_gateway_error_nothing_saved_key_released(
    container, principal, clean_db, recorder
):
    body = card_body("09AAAAAAAAAAAAAAAAAA")
    key = uuid.uuid4().hex
    with pytest.raises(PaycoreError) as info:
        await save(container, principal, "cus_1", body, key=key)
    assert info.value.status == 424
    assert await sql(clean_db, "SELECT 1 FROM customer_payment_methods") == []
    [txn] = await sql(clean_db, "SELECT status, failure_code FROM transactions")
    assert txn["status"] == "failed" and txn["failure_code"]
    assert await sql(clean_db, "SELECT 1 FROM idempotency_keys") == []  # the same key may be retried
    with pytest.raises(PaycoreError):
        await save(container, principal, "cus_1", body, key=key)
    assert len(recorder.of("CCE8")) == 2


async def test_bad_billing_is_a_validation_error_before_anything_is_sent(
    container, principal, recorder, clean_db
):
    body = card_body("09AAAAAAAAAAAAAAAAAA", billing=schemas.BillingIn(state="X1"))
    with pytest.raises(PaycoreError) as info:
        await save(container, principal, "cus_1", body)
    assert info.value.code == "validation_failed" and recorder.requests == []
    assert await sql(clean_db, "SELECT 1 FROM transactions") == []


async def test_get_is_scoped_to_merchant_and_customer(container, principal, other_principal, financial_bric):
    pm_id = await saved_id(container, principal, "cus_1", card_body(financial_bric))
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.id == pm_id and got.card is not None and got.card.last4 == "1111"
    for who, customer in ((other_principal, "cus_1"), (principal, "cus_2")):
        with pytest.raises(PaycoreError) as info:
            await container.payment_methods.get(who, customer, pm_id)
        assert info.value.code == "payment_method_not_found" and info.value.status == 404


async def test_list_default_first_then_newest_with_filters_and_cursor(container, principal, epx_sim):
    ids = []
    for _ in range(4):
        bric = await mint_financial_bric(epx_sim.server_post_url)
        ids.append(await saved_id(container, principal, "cus_1", card_body(bric)))
    await container.payment_methods.set_default(principal, "cus_1", ids[1])
    await container.payment_methods.set_active(principal, "cus_1", ids[2], active=False)
    svc = container.payment_methods
    listed = await svc.list(principal, "cus_1", ListQuery())
    assert [m.id for m in listed.data] == [ids[1], ids[3], ids[2], ids[0]]
    assert listed.data[0].is_default and not listed.has_more
    active = await svc.list(principal, "cus_1", ListQuery(state="active"))
    assert [m.id for m in active.data] == [ids[1], ids[3], ids[0]]
    assert [m.id for m in (await svc.list(principal, "cus_1", ListQuery(state="inactive"))).data] == [ids[2]]
    assert (await svc.list(principal, "cus_1", ListQuery(type="ach"))).data == []
    page1 = await svc.list(principal, "cus_1", ListQuery(limit=3))
    assert page1.has_more and page1.next_cursor
    page2 = await svc.list(principal, "cus_1", ListQuery(limit=3, starting_after=page1.next_cursor))
    assert [m.id for m in page1.data + page2.data] == [ids[1], ids[3], ids[2], ids[0]]
    assert not page2.has_more
    assert (await svc.list(principal, "cus_2", ListQuery())).data == []


async def test_set_default_keeps_exactly_one(container, principal, epx_sim, clean_db):
    ids = [
        await saved_id(
            container, principal, "cus_1", card_body(await mint_financial_bric(epx_sim.server_post_url))
        )
        for _ in range(3)
    ]
    for target in (ids[0], ids[2], ids[2], ids[1]):
        out = await container.payment_methods.set_default(principal, "cus_1", target)
        assert out.id == target and out.is_default
        rows = await sql(clean_db, "SELECT id FROM customer_payment_methods WHERE is_default")
        assert [r["id"] for r in rows] == [target]


async def test_concurrent_set_default_leaves_exactly_one_default(container, principal, epx_sim, clean_db):
    ids = [
        await saved_id(
            container, principal, "cus_1", card_body(await mint_financial_bric(epx_sim.server_post_url))
        )
        for _ in range(5)
    ]
    for _ in range(3):
        targets = [ids[i % len(ids)] for i in range(20)]
        results = await asyncio.gather(
            *(container.payment_methods.set_default(principal, "cus_1", t) for t in targets),
            return_exceptions=True,
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        rows = await sql(clean_db, "SELECT id FROM customer_payment_methods WHERE is_default")
        assert len(rows) == 1 and rows[0]["id"] in ids


async def test_inactive_method_cannot_be_default_nor_charged_until_activated(
    container, principal, financial_bric, clean_db
):
    pm_id = await saved_id(container, principal, "cus_1", card_body(financial_bric))
    off = await container.payment_methods.set_active(principal, "cus_1", pm_id, active=False)
    assert off.status == "inactive" and off.deactivation_reason == "merchant_request"
    again = await container.payment_methods.set_active(principal, "cus_1", pm_id, active=False)
    assert again.status == "inactive"  # idempotent
    assert len(await events(clean_db, "payment_method.deactivated")) == 1
    with pytest.raises(PaycoreError) as info:
        await container.payment_methods.set_default(principal, "cus_1", pm_id)
    assert info.value.code == "payment_method_inactive"
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id)
    assert info.value.code == "payment_method_inactive" and info.value.status == 409
    on = await container.payment_methods.set_active(principal, "cus_1", pm_id, active=True)
    assert on.status == "active" and on.deactivation_reason is None
    assert (await pay(container, principal, pm_id)).status == 201


async def test_pay_with_a_saved_card_sale_and_authorization_as_card_on_file(
    container, principal, financial_bric, recorder, clean_db
):
    pm_id = await saved_id(container, principal, "cus_1", card_body(financial_bric))
    [stored] = await sql(clean_db, "SELECT bric FROM customer_payment_methods")
    sale = await pay(container, principal, pm_id, amount=2500)
    assert sale.status == 201, sale.body
    payment = decode(sale)
    assert payment["payment_method_id"] == str(pm_id) and payment["customer_id"] == "cus_1"
    assert payment["payment_type"] == "card" and payment["card"]["last4"] == "1111"
    [cce1] = recorder.of("CCE1")
    assert cce1["ORIG_AUTH_GUID"] == stored["bric"] and cce1["CARD_ENT_METH"] == "Z"
    assert "ACI_EXT" not in cce1 and "ACCOUNT_NBR" not in cce1 and "CVV2" not in cce1
    auth = await pay(container, principal, pm_id, amount=700, capture=False)
    assert auth.status == 201 and decode(auth)["type"] == "auth"
    [cce2] = recorder.of("CCE2")
    assert cce2["ORIG_AUTH_GUID"] == stored["bric"] and "ACI_EXT" not in cce2
    # last_used_at is written by a supervised background task
    await container.tasks.drain(5.0)
    [row] = await sql(clean_db, "SELECT last_used_at FROM customer_payment_methods")
    assert row["last_used_at"] is not None
    assert (await container.payment_methods.get(principal, "cus_1", pm_id)).last_used_at is not None


async def test_saved_card_decline_is_402(container, principal, epx_sim):
    # a declined sale leaves no usable BRIC: the decline card is stored keyed (as a merchant's
    # hosted form would), and that token saved
    bric = await mint_token(epx_sim.server_post_url, pan=DECLINE_CARD)
    pm_id = await saved_id(container, principal, "cus_1", card_body(bric))
    resp = await pay(container, principal, pm_id, amount=1050)
    assert resp.status == 402 and decode(resp)["code"] == "card_declined"


async def test_paying_is_refused_for_other_merchants_customers_and_expired_cards(
    container, principal, other_principal, epx_sim
):
    pm_id = await saved_id(
        container, principal, "cus_1", card_body(await mint_financial_bric(epx_sim.server_post_url))
    )
    with pytest.raises(PaycoreError) as info:
        await pay(container, other_principal, pm_id)
    assert info.value.code == "payment_method_not_found" and info.value.status == 404
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id, customer_id="cus_2")
    assert info.value.code == "payment_method_customer_mismatch"
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, uuid.uuid4())
    assert info.value.code == "payment_method_not_found"
    expired = await saved_id(
        container,
        principal,
        "cus_1",
        card_body(await mint_financial_bric(epx_sim.server_post_url), exp_month=1, exp_year=2020),
    )
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, expired)
    assert info.value.code == "payment_method_expired" and info.value.status == 422
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id, token="09AAAAAAAAAAAAAAAAAA")
    assert info.value.code == "validation_failed"


async def test_delete_is_soft_then_purged_after_ninety_days(container, principal, epx_sim, clean_db):
    keep = await saved_id(
        container, principal, "cus_1", card_body(await mint_financial_bric(epx_sim.server_post_url))
    )
    gone = await saved_id(
        container, principal, "cus_1", card_body(await mint_financial_bric(epx_sim.server_post_url))
    )
    recent = await saved_id(
        container, principal, "cus_1", card_body(await mint_financial_bric(epx_sim.server_post_url))
    )
    await container.payment_methods.set_default(principal, "cus_1", gone)
    deleted = await container.payment_methods.delete(principal, "cus_1", gone)
    assert deleted.id == gone and deleted.deleted
    await container.payment_methods.delete(principal, "cus_1", recent)
    with pytest.raises(PaycoreError) as info:
        await container.payment_methods.get(principal, "cus_1", gone)
    assert info.value.code == "payment_method_not_found"
    with pytest.raises(PaycoreError) as info:
        await container.payment_methods.delete(principal, "cus_1", gone)
    assert info.value.code == "payment_method_not_found"
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, gone)
    assert info.value.code == "payment_method_not_found"
    listed = await container.payment_methods.list(principal, "cus_1", ListQuery())
    assert [m.id for m in listed.data] == [keep]
    [row] = await sql(
        clean_db, "SELECT is_default, is_active FROM customer_payment_methods WHERE id = $1", gone
    )
    assert (row["is_default"], row["is_active"]) == (False, False)
    await sql(
        clean_db,
        "UPDATE customer_payment_methods SET deleted_at = now() - interval '91 days' WHERE id = $1",
        gone,
    )
    await sql(
        clean_db,
        "UPDATE customer_payment_methods SET deleted_at = now() - interval '89 days' WHERE id = $1",
        recent,
    )
    assert await container.payment_methods.purge_deleted() == 1
    left = {r["id"] for r in await sql(clean_db, "SELECT id FROM customer_payment_methods")}
    assert left == {keep, recent}


async def test_methods_per_customer_are_capped(container, principal, financial_bric, clean_db, monkeypatch):
    from paycore.payment_methods import model

    monkeypatch.setattr(model, "MAX_METHODS_PER_CUSTOMER", 1)
    await saved_id(container, principal, "cus_1", card_body(financial_bric))
    body = card_body(financial_bric)
    with pytest.raises(PaycoreError) as info:
        await container.payment_methods.save(principal, "cus_1", body, idem_for(container, "cus_1", body))
    assert info.value.code == "payment_method_limit_reached"
