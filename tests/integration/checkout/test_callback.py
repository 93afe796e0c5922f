"""The Browser Post callback against the real database and the simulator: replays, tampering,
mismatches, open redirects, TAC expiry and reuse, double submission, re-issued forms, expiry and late
callbacks, card saves, and reconciliation's hands off pending Browser Post rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from paycore.idempotency.model import Replay
from paycore.kernel.errors import PaycoreError
from tests.integration.checkout.conftest import (
    DECLINE_CARD,
    DECLINE_URL,
    RETURN_URL,
    Redirect,
    create,
    deliver,
    idem,
    location_params,
    new_merchant,
    pay,
)

pytestmark = pytest.mark.integration


async def row(dsn: str, txn_id: uuid.UUID) -> asyncpg.Record:
    con = await asyncpg.connect(dsn)
    try:
        found = await con.fetchrow(
            "SELECT t.status, t.updated_at, t.auth_guid, t.card_last4, t.card_brand, t.failure_code, "
            "t.amount_captured, s.state, s.result_status, s.payment_method_id, s.expires_at, s.tacs_issued "
            "FROM transactions t JOIN checkout_sessions s ON s.transaction_id = t.id WHERE t.id = $1",
            txn_id,
        )
        assert found is not None
        return found
    finally:
        await con.close()


async def events(dsn: str, txn_id: uuid.UUID) -> list[str]:
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT event_type FROM outbox_events WHERE aggregate_id = $1 ORDER BY created_at", txn_id
        )
        return [r["event_type"] for r in rows]
    finally:
        await con.close()


# --- creation ---------------------------------------------------------------------------------------
async def test_session_creates_a_pending_browser_post_transaction_and_its_form(
    container, principal, clean_db, sim_control
):
    form = await create(container, principal, customer_id="cus_7")
    f = form.fields
    assert form.action == container.settings.epx_browser_post_url
    assert f["TRAN_CODE"] == "SALE" and f["AMOUNT"] == "10.50" and f["INDUSTRY_TYPE"] == "E"
    assert (
        f["CUST_NBR"] == principal.merchant.epx.cust_nbr
        and f["MERCH_NBR"] == principal.merchant.epx.merch_nbr
    )
    assert f["USER_DATA_1"] == str(form.payment_id) and f["USER_DATA_2"] == "cus_7"
    assert f["REDIRECT_URL"] == (
        f"http://paycore.test/v1/epx/browser-post/callback?txn={form.payment_id}&m={principal.merchant.id}"
    )
    assert f["REDIRECT_URL_DECLINE"] == f["REDIRECT_URL_ERROR"] == f["REDIRECT_URL"]
    r = await row(clean_db, form.payment_id)
    assert r["status"] == "pending" and r["state"] == "open" and r["tacs_issued"] == 1
    assert r["expires_at"] - form.expires_at == timedelta(minutes=10)  # last TAC + grace
    # the TAC is bound to this transaction at the gateway
    [entry] = await sim_control.ledger(endpoint="key_exchange", tran_nbr=int(f["TRAN_NBR"]))
    assert entry["outcome"] == "tac_issued" and entry["amount"] == "10.50"


async def test_create_is_idempotent_and_validation_stores_nothing(container, principal, clean_db):
    form = await create(container, principal, key="k-1")
    body = {
        "mode": "sale",
        "amount": 1050,
        "currency": "USD",
        "return_url": RETURN_URL,
        "decline_url": DECLINE_URL,
    }
    import msgspec

    from paycore.checkout import schemas

    cmd = msgspec.convert(body, schemas.CreateCheckoutSession)
    with pytest.raises(Replay) as replay:
        await container.checkout.create(principal, cmd, idem(body, "k-1"))
    assert msgspec.json.decode(replay.value.body)["payment_id"] == str(form.payment_id)
    with pytest.raises(PaycoreError) as reused:
        other = msgspec.convert({**body, "amount": 99}, schemas.CreateCheckoutSession)
        await container.checkout.create(principal, other, idem({**body, "amount": 99}, "k-1"))
    assert reused.value.spec.code == "idempotency_key_reused"
    for bad, code in (
        ({"return_url": "https://evil.example/checkout/return"}, "return_url_not_allowed"),
        ({"decline_url": "https://shop.example@evil.example/x"}, "return_url_not_allowed"),
        ({"currency": "EUR"}, "currency_not_supported"),
        ({"amount": None}, "amount_invalid"),
        ({"mode": "save", "amount": 0}, "validation_failed"),  # a save needs a customer
    ):
        with pytest.raises(PaycoreError) as exc:
            await create(container, principal, key="k-bad", **bad)
        assert exc.value.spec.code == code
    con = await asyncpg.connect(clean_db)
    try:
        assert await con.fetchval("SELECT count(*) FROM transactions") == 1
        assert await con.fetchval("SELECT count(*) FROM idempotency_keys WHERE key = 'k-bad'") == 0
    finally:
        await con.close()


async def test_key_exchange_failure_fails_the_session_and_releases_the_key(
    container, principal, clean_db, sim_control
):
    await sim_control.add_fault({"target": "key_exchange", "action": {"type": "http_error", "status": 503}})
    with pytest.raises(PaycoreError) as exc:
        await create(container, principal, key="kx")
    assert exc.value.spec.code == "gateway_unavailable"
    await sim_control.clear_faults()
    form = await create(container, principal, key="kx")  # the same key works once the gateway is back
    con = await asyncpg.connect(clean_db)
    try:
        statuses = await con.fetch("SELECT status, failure_code FROM transactions ORDER BY created_at")
        assert [(r["status"], r["failure_code"]) for r in statuses] == [
            ("failed", "key_exchange_failed"),
            ("pending", None),
        ]
    finally:
        await con.close()
    assert form.fields["TAC"]


# --- replays and tampering -----------------------------------------------------------------------------
async def test_replayed_callback_gets_the_same_redirect_and_changes_nothing(
    container, principal, browser, epx_sim, clean_db
):
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form)
    first = await deliver(container, redirect)
    before = await row(clean_db, form.payment_id)
    again = await deliver(container, redirect)
    as_get = await deliver(container, redirect, as_get=True)  # the 303 mode carries the same fields
    assert first.location == again.location == as_get.location
    after = await row(clean_db, form.payment_id)
    assert after["updated_at"] == before["updated_at"] and after["status"] == "approved"
    assert await events(clean_db, form.payment_id) == ["payment.succeeded"]
    assert before["amount_captured"] == 1050 and before["card_last4"] == "1111"


async def test_duplicated_redirect_from_the_gateway_records_once(
    container, principal, browser, epx_sim, clean_db, sim_control
):
    await sim_control.add_fault({"target": "redirect", "action": {"type": "bp_duplicate", "repeat": 2}})
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form)
    assert redirect.repeat == 2
    answers = [await deliver(container, redirect) for _ in range(redirect.repeat)]
    assert answers[0].location == answers[1].location
    assert await events(clean_db, form.payment_id) == ["payment.succeeded"]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ({"type": "bp_tamper", "field": "AUTH_RESP", "value": "00", "mac": "keep"}, "bad_mac"),
        ({"type": "bp_tamper", "field": "AUTH_RESP", "value": "00", "mac": "drop"}, "missing_mac"),
        ({"type": "bp_tamper", "field": "AUTH_RESP", "value": "00", "mac": "bad"}, "bad_mac"),
    ],
)
async def test_tampered_result_is_rejected_alerted_and_leaves_the_row_pending(
    container, principal, browser, epx_sim, clean_db, sim_control, action, reason
):
    await sim_control.add_fault({"target": "redirect", "action": action})
    form = await create(container, principal)
    before = await row(clean_db, form.payment_id)
    redirect = await pay(browser, epx_sim, form, card=DECLINE_CARD)  # declined, then "upgraded"
    with capture_logs() as logs:
        answer = await deliver(container, redirect)
    assert answer.status == 400 and answer.reason == reason and answer.location is None
    assert any(e["event"] == "checkout_callback_rejected" and e["log_level"] == "error" for e in logs)
    after = await row(clean_db, form.payment_id)
    assert after["status"] == "pending" and after["updated_at"] == before["updated_at"]
    assert await events(clean_db, form.payment_id) == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("AMOUNT", "1.00", "amount_mismatch"),
        ("AUTH_AMOUNT", "1.00", "amount_mismatch"),
        ("TRAN_NBR", "1000000001", "tran_nbr_mismatch"),
        ("TRAN_GROUP", "AUTH", "tran_group_mismatch"),
        ("USER_DATA_2", "someone-else", "user_data_mismatch"),
    ],
)
async def test_mismatch_with_a_valid_mac_is_rejected_and_the_row_untouched(
    container, principal, browser, epx_sim, clean_db, sim_control, field, value, reason
):
    """Even correctly signed, a result for another amount/TRAN_NBR/type never changes the row."""
    await sim_control.add_fault(
        {
            "target": "redirect",
            "action": {"type": "bp_tamper", "field": field, "value": value, "mac": "recompute"},
        }
    )
    form = await create(container, principal)
    before = await row(clean_db, form.payment_id)
    redirect = await pay(browser, epx_sim, form)
    with capture_logs() as logs:
        answer = await deliver(container, redirect)
    assert answer.status == 400 and answer.reason == reason
    assert [e for e in logs if e["event"] == "checkout_callback_rejected" and e["log_level"] == "error"]
    after = await row(clean_db, form.payment_id)
    assert (after["status"], after["updated_at"]) == ("pending", before["updated_at"])


async def test_callback_for_another_merchant_or_an_unknown_transaction_is_refused(
    container, principal, browser, epx_sim, clean_db, sim_control
):
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form)
    other = await new_merchant(container, sim_control)
    moved = Redirect(redirect.target.replace(str(principal.merchant.id), str(other.id)), redirect.fields, 1)
    assert (await deliver(container, moved)).status == 400
    unknown = Redirect(redirect.target.replace(str(form.payment_id), str(uuid.uuid4())), redirect.fields, 1)
    assert (await deliver(container, unknown)).status == 400
    assert (await row(clean_db, form.payment_id))["status"] == "pending"
    # the genuine one still applies afterwards
    assert location_params(await deliver(container, redirect))[1]["status"] == "approved"


async def test_open_redirect_attempts_in_the_callback_are_ignored(container, principal, browser, epx_sim):
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form)
    evil = Redirect(
        redirect.target + "&return_url=https%3A%2F%2Fevil.example%2F&next=//evil.example",
        [
            *redirect.fields,
            ("REDIRECT_URL_DECLINE", "https://evil.example/"),
            ("decline_url", "https://evil.example"),
        ],
        1,
    )
    answer = await deliver(container, evil)
    assert urlsplit(answer.location or "").netloc == "shop.example"
    url, params = location_params(answer)
    assert url == RETURN_URL and set(params) == {"payment_id", "status"}


async def test_conflicting_query_and_body_values_are_rejected(
    container, principal, browser, epx_sim, clean_db
):
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form, card=DECLINE_CARD)
    answer = await container.checkout.handle_callback([*redirect.query, ("AUTH_RESP", "00")], redirect.fields)
    assert answer.status == 400 and answer.reason == "conflicting_parameter"
    assert (await row(clean_db, form.payment_id))["status"] == "pending"


# --- TACs: expiry, reuse, double submission -------------------------------------------------------------
async def test_expired_tac_is_refused_by_the_gateway_and_resolved_by_reconciliation(
    container, principal, browser, epx_sim, clean_db, sim_control
):
    form = await create(container, principal)
    await sim_control.advance_clock(seconds=16 * 60)
    redirect = await pay(browser, epx_sim, form)
    assert redirect.field("AUTH_RESP") == "58"
    url, params = location_params(await deliver(container, redirect))
    assert (
        params["status"] == "unknown" and url == RETURN_URL
    )  # never declined: maybe an earlier try went through
    assert (await row(clean_db, form.payment_id))["failure_code"] == "tac_rejected"
    counts = await container.payments.reconcile(older_than=0)
    assert counts["failed"] == 1  # the gateway never processed this TRAN_NBR
    assert (await row(clean_db, form.payment_id))["status"] == "failed"


async def test_reused_tac_never_overwrites_the_approval(container, principal, browser, epx_sim, clean_db):
    form = await create(container, principal)
    first = await pay(browser, epx_sim, form)
    second = await pay(browser, epx_sim, form)  # the same form again: the TAC is single-use
    assert second.field("AUTH_RESP") == "58"
    approved = await deliver(container, first)
    with capture_logs() as logs:
        again = await deliver(container, second)
    assert again.location == approved.location  # the shopper sees the recorded outcome
    assert [e for e in logs if e["event"] == "checkout_callback_conflict" and e["log_level"] == "error"]
    assert (await row(clean_db, form.payment_id))["status"] == "approved"
    assert await events(clean_db, form.payment_id) == ["payment.succeeded"]


async def test_double_submitted_form_answered_duplicate(
    container, principal, browser, epx_sim, clean_db, sim_control
):
    """§6.7: the second submission of a double-clicked form is answered "Duplicate TRAN_NBR". In
    order it never overwrites the approval; alone (the first redirect lost) it is `unknown`, and
    reconciliation finds the approval — never a decline, never a second charge."""
    await sim_control.settings(tac_single_use=False)
    form = await create(container, principal)
    first = await pay(browser, epx_sim, form)
    second = await pay(browser, epx_sim, form)
    assert "Duplicate TRAN_NBR" in (second.field("AUTH_RESP_TEXT") or "")
    await deliver(container, first)
    await deliver(container, second)
    assert (await row(clean_db, form.payment_id))["status"] == "approved"

    lost = await create(container, principal)
    await pay(browser, epx_sim, lost)  # approved at the gateway, its redirect never delivered
    duplicate = await pay(browser, epx_sim, lost)
    _, params = location_params(await deliver(container, duplicate))
    assert params["status"] == "unknown"
    assert (await row(clean_db, lost.payment_id))["status"] == "unknown"
    counts = await container.payments.reconcile(older_than=0)
    assert counts["approved"] == 1
    assert (await row(clean_db, lost.payment_id))["status"] == "approved"
    ledger = await sim_control.ledger(tran_nbr=int(lost.fields["TRAN_NBR"]), endpoint="browser_post")
    assert [e["outcome"] for e in ledger if e["processed"]] == ["approved"]


async def test_a_fresh_form_keeps_the_tran_nbr_while_pending(
    container, principal, browser, epx_sim, clean_db
):
    form = await create(container, principal)
    import msgspec

    from paycore.checkout import schemas

    again = msgspec.json.decode(
        await container.checkout.new_form(principal, form.session_id), type=schemas.CheckoutForm
    )
    assert again.fields["TRAN_NBR"] == form.fields["TRAN_NBR"] and again.fields["TAC"] != form.fields["TAC"]
    assert (await row(clean_db, form.payment_id))["tacs_issued"] == 2
    await deliver(container, await pay(browser, epx_sim, again))
    with pytest.raises(PaycoreError) as exc:
        await container.checkout.new_form(principal, form.session_id)
    assert exc.value.spec.code == "checkout_session_not_open"
    session = await container.checkout.get(principal, form.session_id)
    assert session.state == "completed" and session.payment_status == "approved"


# --- expiry and late callbacks --------------------------------------------------------------------------
async def test_expiry_job_expires_never_declines_and_a_late_callback_still_applies(
    container, principal, browser, epx_sim, clean_db
):
    from paycore.checkout.jobs import JOBS, expire_sessions

    assert [j.name for j in JOBS] == ["checkout.expire_sessions"]
    form = await create(container, principal)
    kept = await create(container, principal)
    redirect = await pay(browser, epx_sim, form)  # paid, but the redirect arrives late
    con = await asyncpg.connect(clean_db)
    try:
        await con.execute(
            "UPDATE checkout_sessions SET expires_at = now() - interval '1 second' WHERE transaction_id = $1",
            form.payment_id,
        )
    finally:
        await con.close()
    assert await expire_sessions(container.checkout) == {"sessions": 1, "transactions": 1}
    assert await expire_sessions(container.checkout) == {"sessions": 0, "transactions": 0}
    expired = await row(clean_db, form.payment_id)
    assert (expired["status"], expired["state"]) == ("expired", "expired")
    assert (await row(clean_db, kept.payment_id))["status"] == "pending"
    with pytest.raises(PaycoreError):
        await container.checkout.new_form(principal, form.session_id)  # no TAC once expired
    with capture_logs() as logs:
        _, params = location_params(await deliver(container, redirect))
    assert params["status"] == "approved"
    assert [e for e in logs if e["event"] == "checkout_late_callback_applied" and e["log_level"] == "error"]
    assert (await row(clean_db, form.payment_id))["status"] == "approved"


async def test_reconciliation_leaves_pending_browser_post_rows_alone(container, principal, clean_db):
    form = await create(container, principal)
    counts = await container.payments.reconcile(older_than=0)
    assert counts.get("failed", 0) == 0
    assert (await row(clean_db, form.payment_id))["status"] == "pending"


# --- card saves ------------------------------------------------------------------------------------------
class FakeSaver:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.invalidated: list[tuple] = []
        self.id = uuid.uuid4()

    async def save_card_from_storage(self, merchant, **kwargs):
        self.calls.append(kwargs)
        assert kwargs["con"] is not None  # in the callback's transaction

        class Method:
            id = self.id

        return Method()

    def invalidate_customer(self, merchant_id, customer_id):
        self.invalidated.append((merchant_id, customer_id))


async def test_save_mode_records_the_storage_result_as_a_payment_method(
    container, principal, browser, epx_sim, clean_db, monkeypatch
):
    saver = FakeSaver()
    monkeypatch.setattr(container.checkout, "card_saver", saver)
    form = await create(container, principal, mode="save", amount=None, customer_id="cus_9")
    assert form.fields["TRAN_CODE"] == "STORAGE" and form.fields["AMOUNT"] == "0.00"
    redirect = await pay(browser, epx_sim, form)
    url, params = location_params(await deliver(container, redirect))
    assert url == RETURN_URL and params["status"] == "approved"
    [call] = saver.calls
    assert call["customer_id"] == "cus_9" and call["storage_bric"] == redirect.field("AUTH_GUID")
    assert (call["last4"], call["exp_month"], call["exp_year"], call["brand"]) == ("1111", 12, 2030, "visa")
    assert saver.invalidated == [(principal.merchant.id, "cus_9")]
    r = await row(clean_db, form.payment_id)
    assert r["payment_method_id"] == saver.id and r["status"] == "approved"
    assert await events(clean_db, form.payment_id) == []  # a save is not a payment
    with pytest.raises(PaycoreError):
        await container.payments.get(principal, form.payment_id)
    assert all(
        p.id != form.payment_id for p in (await container.payments.list(principal, _list_query())).data
    )
    await deliver(container, redirect)
    assert len(saver.calls) == 1  # a replay saves nothing more


def _list_query():
    from paycore.payments.service import ListQuery

    return ListQuery(limit=100)


async def test_declined_sale_emits_payment_failed(container, principal, browser, epx_sim, clean_db):
    form = await create(container, principal)
    url, params = location_params(
        await deliver(container, await pay(browser, epx_sim, form, card=DECLINE_CARD))
    )
    assert url == DECLINE_URL and params["status"] == "declined"
    assert await events(clean_db, form.payment_id) == ["payment.failed"]


async def test_paid_session_whose_redirect_was_lost_is_reconciled_not_left_expired(
    container, principal, browser, epx_sim, clean_db
):
    paid = await create(container, principal)
    unpaid = await create(container, principal)
    await pay(browser, epx_sim, paid)  # the gateway approves; the shopper's redirect never arrives
    con = await asyncpg.connect(clean_db)
    try:
        await con.execute("UPDATE checkout_sessions SET expires_at = now() - interval '1 second'")
    finally:
        await con.close()
    from paycore.checkout.jobs import expire_sessions

    assert await expire_sessions(container.checkout) == {"sessions": 2, "transactions": 2}
    assert (await row(clean_db, paid.payment_id))["status"] == "expired"
    with capture_logs() as logs:
        counts = await container.payments.reconcile(older_than=3600)
    assert counts["approved"] == 1 and counts["expired"] == 1
    assert [e for e in logs if e["event"] == "browser_post_paid_after_expiry"]
    found = await row(clean_db, paid.payment_id)
    assert found["status"] == "approved" and found["auth_guid"] and found["amount_captured"] == 1050
    assert "payment.unknown_resolved" in await events(clean_db, paid.payment_id)
    never = await row(clean_db, unpaid.payment_id)
    assert (never["status"], never["failure_code"]) == ("expired", "checkout_expired_unpaid")
    # each expired row is looked up once
    again = await container.payments.reconcile(older_than=3600)
    assert again.get("expired", 0) == 0 and again["approved"] == 0
