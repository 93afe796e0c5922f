"""Bank accounts and ACH against the real database and the simulator process: validation, the $0
pre-note and the storage of its token, verification after 3 banking days (the simulated clock),
pre-note returns, debits/refunds/voids through the payment routes, live-debit returns and the
NACHA return-rate gauges."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from paycore.kernel.errors import PaycoreError
from paycore.payment_methods import calendar
from paycore.payments import schemas as pay_schemas
from tests.integration.payment_methods.helpers import (
    ACCOUNT,
    ROUTING,
    SAVINGS_ACCOUNT,
    bank_body,
    decode,
    events,
    pay,
    pay_idem,
    save,
    saved_id,
    sim_now,
    sql,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
async def _fresh_simulator(sim_control):
    """The returns feed lists every return of the sandbox merchant: start each test from an empty
    simulator so returns left by earlier tests (same worker, same simulator) are not ingested."""
    await sim_control.reset()


async def created_at(dsn: str, method_id: uuid.UUID) -> datetime:
    [row] = await sql(dsn, "SELECT created_at FROM customer_payment_methods WHERE id = $1", method_id)
    return row["created_at"]


async def advance_until_due(sim_control, dsn: str, method_id: uuid.UUID, days: int = 3) -> datetime:
    """Move the simulated clock `days` banking days on (and, from a weekend start, on to the due
    instant of the calendar); returns the simulated now."""
    await sim_control.advance_clock(banking_days=days)
    now = await sim_now(sim_control)
    due = calendar.due_at(await created_at(dsn, method_id), days)
    if now < due:
        await sim_control.advance_clock(seconds=(due - now).total_seconds() + 1)
        now = await sim_now(sim_control)
    return now


async def verified_account(container, principal, sim_control, dsn, account=ACCOUNT, account_type="checking"):
    pm_id = await saved_id(container, principal, "cus_1", bank_body(account, account_type=account_type))
    now = await advance_until_due(sim_control, dsn, pm_id)
    assert await container.payment_methods.verify_due(now=now) >= 1
    return pm_id


def effects(result) -> dict[str, int]:
    """The actions that changed a payment method (the simulator's feed also lists returns of
    earlier tests' transactions, which this database does not know: recorded only)."""
    return {k: v for k, v in result.actions.items() if k != "record"}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_save_checking_account_prenote_then_storage_never_storing_the_number(
    container, principal, recorder, sim_control, clean_db
):
    resp = await save(container, principal, "cus_1", bank_body())
    assert resp.status == 201, resp.body
    out = decode(resp)
    assert out["type"] == "ach" and out["verification_status"] == "pending" and out["status"] == "active"
    bank = out["bank_account"]
    assert bank["last4"] == ACCOUNT[-4:] and bank["routing_number"] == ROUTING
    assert bank["account_type"] == "checking" and bank["holder_name"] == "Ada Lovelace"
    assert bank["sec_code"] == "WEB" and bank["verified_at"] is None and out["card"] is None
    [prenote] = recorder.of("CKC0")
    assert (
        prenote["AMOUNT"] == "0.00" and prenote["ACCOUNT_NBR"] == ACCOUNT and prenote["CARD_ENT_METH"] == "X"
    )
    assert prenote["STD_ENTRY_CLASS"] == "WEB" and prenote["FIRST_NAME"] == "Ada"
    [storage] = recorder.of("CKC8")
    assert "ACCOUNT_NBR" not in storage and storage["CARD_ENT_METH"] == "Z"
    [row] = await sql(clean_db, "SELECT * FROM customer_payment_methods")
    assert row["bric_kind"] == "storage" and row["bric"] != prenote.get("ORIG_AUTH_GUID")
    txns = {r["type"]: r for r in await sql(clean_db, "SELECT * FROM transactions")}
    assert txns["prenote"]["tran_type"] == "CKC0" and txns["prenote"]["status"] == "approved"
    assert (
        txns["storage"]["tran_type"] == "CKC8"
        and txns["storage"]["orig_auth_guid"] == txns["prenote"]["auth_guid"]
    )
    assert row["prenote_transaction_id"] == txns["prenote"]["id"]
    for txn in txns.values():
        assert ACCOUNT not in (txn["gateway_request"] or "") and ROUTING not in (txn["gateway_request"] or "")
    [idem] = await sql(clean_db, "SELECT fingerprint, response_body FROM idempotency_keys")
    assert ACCOUNT.encode() not in idem["response_body"]
    [event] = await events(clean_db, "payment_method.created")
    assert event["payload"]["object"] == out
    for tran_type in ("CKC0", "CKC8"):
        [entry] = [
            e
            for e in await sim_control.ledger(tran_type=tran_type)
            if e["tran_nbr"] == int(recorder.of(tran_type)[0]["TRAN_NBR"])
        ]
        assert entry["processed"] and entry["outcome"] == "approved"


async def test_savings_account_keeps_the_prenote_token(container, principal, recorder, clean_db):
    resp = await save(container, principal, "cus_1", bank_body(SAVINGS_ACCOUNT, account_type="savings"))
    assert resp.status == 201, resp.body
    assert len(recorder.of("CKS0")) == 1 and recorder.of("CKC8") == [] and recorder.of("CKS8") == []
    [row] = await sql(clean_db, "SELECT bric, bric_kind, bric_expires_at FROM customer_payment_methods")
    [prenote] = await sql(clean_db, "SELECT auth_guid FROM transactions WHERE type = 'prenote'")
    assert row["bric_kind"] == "financial" and row["bric"] == prenote["auth_guid"]
    assert row["bric_expires_at"] is not None


def months_later(at: datetime, months: int) -> datetime:
    return at + timedelta(days=round(months * 30.44))


async def token_row(dsn: str, method_id: uuid.UUID):
    [row] = await sql(
        dsn,
        "SELECT bric, bric_kind, bric_expires_at, prenote_transaction_id, verification_status, is_active"
        " FROM customer_payment_methods WHERE id = $1",
        method_id,
    )
    return row


async def test_a_lapsing_savings_token_is_renewed_by_a_prenote_from_the_token(
    container, principal, recorder, sim_control, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db, SAVINGS_ACCOUNT, "savings")
    before = await token_row(clean_db, pm_id)
    svc = container.payment_methods
    # a year on, nothing is due yet (the token lapses in 13 months; renewal 30 days before)
    assert (await svc.refresh_ach_tokens(now=months_later(before["bric_expires_at"], -2))).outcomes == {}
    now = before["bric_expires_at"] - timedelta(days=10)
    result = await svc.refresh_ach_tokens(now=now)
    assert result.outcomes == {"financial": 1}
    [renewal] = recorder.of("CKS0")[1:]  # after the save's own pre-note
    assert renewal["ORIG_AUTH_GUID"] == before["bric"] and renewal["CARD_ENT_METH"] == "Z"
    assert "ACCOUNT_NBR" not in renewal and renewal["AMOUNT"] == "0.00"
    after = await token_row(clean_db, pm_id)
    [txn] = await sql(
        clean_db, "SELECT id, auth_guid, status, payment_method_id FROM transactions WHERE tran_nbr = $1",
        int(renewal["TRAN_NBR"]),
    )  # fmt: skip
    assert after["bric"] == txn["auth_guid"] != before["bric"] and after["bric_kind"] == "financial"
    assert after["bric_expires_at"] > before["bric_expires_at"] + timedelta(days=300)
    assert after["prenote_transaction_id"] == txn["id"]  # a return on the new pre-note finds the account
    assert (txn["status"], txn["payment_method_id"]) == ("approved", pm_id)
    assert (after["verification_status"], after["is_active"]) == ("verified", True)
    # renewed once: the same run again finds nothing due
    assert (await svc.refresh_ach_tokens(now=now)).outcomes == {}
    # the next debit goes out on the new token (the cache saw the change)
    decode(await pay(container, principal, pm_id))
    [debit] = recorder.of("CKS2")
    assert debit["ORIG_AUTH_GUID"] == after["bric"]


async def test_a_checking_account_left_on_its_prenote_token_is_converted_at_renewal(
    container, principal, recorder, sim_control, clean_db
):
    await sim_control.add_fault(
        {"target": "server_post", "match": {"tran_type": ["CKC8"]},
         "action": {"type": "http_error", "status": 500}}
    )  # fmt: skip
    try:
        pm_id = await verified_account(container, principal, sim_control, clean_db)
    finally:
        await sim_control.clear_faults()
    before = await token_row(clean_db, pm_id)
    assert before["bric_kind"] == "financial" and before["bric_expires_at"] is not None
    result = await container.payment_methods.refresh_ach_tokens(
        now=before["bric_expires_at"] - timedelta(days=1)
    )
    assert result.outcomes == {"storage": 1}
    after = await token_row(clean_db, pm_id)
    [storage] = recorder.of("CKC8")[1:]
    assert after["bric_kind"] == "storage" and after["bric_expires_at"] is None
    [row] = await sql(
        clean_db, "SELECT auth_guid FROM transactions WHERE tran_nbr = $1", int(storage["TRAN_NBR"])
    )
    assert after["bric"] == row["auth_guid"]
    assert await container.payment_methods.refresh_ach_tokens(now=before["bric_expires_at"]) == type(result)()


async def test_a_declined_renewal_deactivates_and_a_failed_one_is_retried(
    container, principal, recorder, sim_control, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db, SAVINGS_ACCOUNT, "savings")
    before = await token_row(clean_db, pm_id)
    now = before["bric_expires_at"] - timedelta(days=5)
    svc = container.payment_methods
    await sim_control.add_fault(
        {"target": "server_post", "match": {"tran_type": ["CKS0"]},
         "action": {"type": "fail_before_process", "fail": "reset"}}
    )  # fmt: skip
    try:
        assert (await svc.refresh_ach_tokens(now=now)).outcomes == {"failed": 1}
    finally:
        await sim_control.clear_faults()
    assert (await token_row(clean_db, pm_id))["bric"] == before["bric"]  # unchanged: tried again later
    # the bank account is closed meanwhile (an R02 the returns job has not ingested yet): the
    # simulator refuses the pre-note at once (05)
    debit = decode(await pay(container, principal, pm_id))
    await sim_control.inject_ach_return(int(debit["gateway"]["tran_nbr"]), "R02")
    result = await svc.refresh_ach_tokens(now=now)
    assert result.outcomes == {"declined": 1}
    [refused] = await sql(
        clean_db,
        "SELECT status, payment_method_id FROM transactions WHERE type = 'prenote'"
        " ORDER BY created_at DESC LIMIT 1",
    )
    assert (refused["status"], refused["payment_method_id"]) == ("declined", pm_id)
    got = await svc.get(principal, "cus_1", pm_id)
    assert got.status == "inactive" and got.deactivation_reason == "token_refresh_declined"
    assert [e["id"] for e in await events(clean_db, "payment_method.deactivated")] == [pm_id]
    assert (await svc.refresh_ach_tokens(now=now)).outcomes == {}  # inactive: no longer renewed


async def test_a_lapsed_token_cannot_be_debited_and_is_deactivated(
    container, principal, recorder, sim_control, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db, SAVINGS_ACCOUNT, "savings")
    await sql(
        clean_db,
        "UPDATE customer_payment_methods SET bric_expires_at = now() - interval '1 day' WHERE id = $1",
        pm_id,
    )
    container.payment_methods.methods.clear()
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id)
    assert info.value.code == "payment_method_expired"
    sent = len(recorder.requests)
    result = await container.payment_methods.refresh_ach_tokens()
    assert result.outcomes == {"lapsed": 1} and len(recorder.requests) == sent  # nothing sent
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.status == "inactive" and got.deactivation_reason == "token_expired"


@pytest.mark.parametrize(
    ("routing", "account", "code"),
    [("021000022", ACCOUNT, "routing_number_invalid"), ("02100002", ACCOUNT, "routing_number_invalid"),
     (ROUTING, "123", "account_number_invalid"), (ROUTING, "12345678901234567890", "account_number_invalid"),
     (ROUTING, "4099-9927", "account_number_invalid")],
)  # fmt: skip
async def test_invalid_numbers_are_refused_before_anything_is_sent_or_stored(
    container, principal, recorder, clean_db, routing, account, code
):
    with pytest.raises(PaycoreError) as info:
        await save(container, principal, "cus_1", bank_body(account, routing=routing))
    assert info.value.code == code and info.value.status == 422
    assert account not in str(info.value.problem(None))
    assert recorder.requests == []
    for table in ("transactions", "customer_payment_methods", "idempotency_keys"):
        assert await sql(clean_db, f"SELECT 1 FROM {table}") == []


async def test_pending_account_cannot_be_debited_until_verified_after_three_banking_days(
    container, principal, sim_control, clean_db
):
    pm_id = await saved_id(container, principal, "cus_1", bank_body())
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id)
    assert info.value.code == "payment_method_not_verified" and info.value.status == 409
    # two banking days later: still pending
    await sim_control.advance_clock(banking_days=2)
    early = await sim_now(sim_control)
    assert early < calendar.due_at(await created_at(clean_db, pm_id), 3)
    assert await container.payment_methods.verify_due(now=early) == 0
    before = metric("ach_verifications_total", status="verified")
    now = await advance_until_due(sim_control, clean_db, pm_id)
    assert await container.payment_methods.verify_due(now=now) == 1
    assert await container.payment_methods.verify_due(now=now) == 0  # idempotent
    assert metric("ach_verifications_total", status="verified") == before + 1
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.verification_status == "verified" and got.bank_account.verified_at is not None
    [event] = await events(clean_db, "payment_method.verified")
    assert event["id"] == pm_id and event["payload"]["object"]["verification_status"] == "verified"
    assert event["payload"]["object"]["bank_account"]["last4"] == ACCOUNT[-4:]
    assert (await pay(container, principal, pm_id)).status == 201


async def test_ach_debit_refund_and_void_through_the_payment_routes(
    container, principal, sim_control, recorder, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db)
    [stored] = await sql(clean_db, "SELECT bric FROM customer_payment_methods")
    resp = await pay(container, principal, pm_id, amount=4_200)
    assert resp.status == 201, resp.body
    debit = decode(resp)
    assert debit["payment_type"] == "ach" and debit["type"] == "sale" and debit["card"] is None
    assert debit["payment_method_id"] == str(pm_id) and debit["customer_id"] == "cus_1"
    [ckc2] = recorder.of("CKC2")
    assert ckc2["ORIG_AUTH_GUID"] == stored["bric"] and ckc2["AMOUNT"] == "42.00"
    assert ckc2["STD_ENTRY_CLASS"] == "WEB" and ckc2["CARD_ENT_METH"] == "Z"
    # an ACH debit has no authorization
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id, capture=False)
    assert info.value.code == "ach_authorization_not_supported"
    # partial refund: CKC3 on the debit's BRIC
    pid = uuid.UUID(debit["id"])
    refund = pay_schemas.RefundPayment(amount=1_000)
    resp = await container.payments.refund(
        principal, pid, refund, pay_idem(refund, f"/v1/payments/{pid}/refunds")
    )
    assert resp.status == 201, resp.body
    [ckc3] = recorder.of("CKC3")
    [debit_row] = await sql(clean_db, "SELECT auth_guid FROM transactions WHERE id = $1", pid)
    assert ckc3["ORIG_AUTH_GUID"] == debit_row["auth_guid"] and ckc3["AMOUNT"] == "10.00"
    assert decode(resp)["payment"]["amount_refunded"] == 1_000
    # void of another (unsettled) debit: CKCX for the full amount
    other = decode(await pay(container, principal, pm_id, amount=1_234))
    oid = uuid.UUID(other["id"])
    void = pay_schemas.VoidPayment()
    resp = await container.payments.void(principal, oid, void, pay_idem(void, f"/v1/payments/{oid}/void"))
    assert resp.status == 200, resp.body
    assert decode(resp)["payment"]["voided"] is True
    [ckcx] = recorder.of("CKCX")
    assert ckcx["AMOUNT"] == "12.34"


async def test_savings_debit_and_refund_use_the_savings_codes(
    container, principal, sim_control, recorder, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db, SAVINGS_ACCOUNT, "savings")
    resp = await pay(container, principal, pm_id, amount=900)
    assert resp.status == 201, resp.body
    assert len(recorder.of("CKS2")) == 1 and recorder.of("CKC2") == []
    pid = uuid.UUID(decode(resp)["id"])
    refund = pay_schemas.RefundPayment()
    resp = await container.payments.refund(
        principal, pid, refund, pay_idem(refund, f"/v1/payments/{pid}/refunds")
    )
    assert resp.status == 201, resp.body
    assert len(recorder.of("CKS3")) == 1


@pytest.mark.parametrize("code", ["R02", "R03", "R04", "R20"])
async def test_prenote_return_fails_verification(container, principal, sim_control, clean_db, code):
    account = "9000000" + code[1:]  # simulator trigger: 9000000NN returns every entry as RNN
    pm_id = await saved_id(container, principal, "cus_1", bank_body(account))
    failed_before = metric("ach_verifications_total", status="failed")
    now = await advance_until_due(sim_control, clean_db, pm_id)
    result = await container.payment_methods.ingest_returns(now=now)
    assert result.actions.get("fail_verification") == 1
    # the sweep runs after: the account is not verified
    assert await container.payment_methods.verify_due(now=now) == 0
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.verification_status == "failed" and got.status == "inactive"
    assert got.bank_account.verification_failure_code == code
    assert got.deactivation_reason == "verification_failed"
    assert metric("ach_verifications_total", status="failed") == failed_before + 1
    [event] = await events(clean_db, "payment_method.verification_failed")
    assert event["id"] == pm_id
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id)
    assert info.value.code == "payment_method_verification_failed"
    with pytest.raises(PaycoreError) as info:
        await container.payment_methods.set_active(principal, "cus_1", pm_id, active=True)
    assert info.value.code == "payment_method_verification_failed"
    # ingestion is idempotent per return
    again = await container.payment_methods.ingest_returns(now=now)
    assert "fail_verification" not in again.actions and again.duplicates >= 1
    [row] = await sql(clean_db, "SELECT count(*) AS n FROM ach_returns WHERE code = $1", code)
    assert row["n"] == 1
    assert len(await events(clean_db, "payment_method.verification_failed")) == 1


async def test_live_debit_returns_count_then_deactivate_and_feed_the_return_rates(
    container, principal, sim_control, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db)
    debits = [decode(await pay(container, principal, pm_id, amount=1_000 + i)) for i in range(4)]
    assert all(d["status"] == "approved" for d in debits)
    before = metric("ach_returns_total", merchant="other", **{"class": "other"})
    await sim_control.inject_ach_return(int(debits[0]["gateway"]["tran_nbr"]), "R01")
    now = await sim_now(sim_control)
    result = await container.payment_methods.ingest_returns(now=now)
    assert effects(result) == {"count": 1}
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.status == "active" and got.bank_account.return_count == 1
    # the threshold (PAYCORE_ACH_RETURN_DEACTIVATE_THRESHOLD = 2) deactivates
    await sim_control.inject_ach_return(int(debits[1]["gateway"]["tran_nbr"]), "R09")
    result = await container.payment_methods.ingest_returns(now=now)
    assert effects(result) == {"deactivate": 1}
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.status == "inactive" and got.deactivation_reason == "excessive_returns"
    assert got.bank_account.return_count == 2
    [event] = await events(clean_db, "payment_method.deactivated")
    assert event["id"] == pm_id
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id)
    assert info.value.code == "payment_method_inactive"
    # (returns of earlier tests' debits on the shared simulator count too: at least ours)
    assert metric("ach_returns_total", merchant="other", **{"class": "other"}) >= before + 2
    # an unauthorised return: class `unauthorized`; 3 returns on 4 debits
    await sim_control.inject_ach_return(int(debits[2]["gateway"]["tran_nbr"]), "R10")
    await container.payment_methods.ingest_returns(now=now)
    assert metric("ach_return_rate", merchant="other", **{"class": "overall"}) == pytest.approx(3 / 4)
    assert metric("ach_return_rate", merchant="other", **{"class": "unauthorized"}) == pytest.approx(1 / 4)
    assert metric("ach_return_rate", merchant="other", **{"class": "administrative"}) == 0.0
    assert len(await events(clean_db, "payment_method.deactivated")) == 1  # already inactive


async def test_unauthorised_return_deactivates_at_once(container, principal, sim_control, clean_db):
    pm_id = await verified_account(container, principal, sim_control, clean_db)
    debit = decode(await pay(container, principal, pm_id))
    await sim_control.inject_ach_return(int(debit["gateway"]["tran_nbr"]), "R07")
    result = await container.payment_methods.ingest_returns(now=await sim_now(sim_control))
    assert effects(result) == {"deactivate": 1}
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.status == "inactive" and got.deactivation_reason == "unauthorized_return"


async def test_concurrent_ingest_runs_apply_each_return_once(container, principal, sim_control, clean_db):
    pm_id = await verified_account(container, principal, sim_control, clean_db)
    debit = decode(await pay(container, principal, pm_id))
    await sim_control.inject_ach_return(int(debit["gateway"]["tran_nbr"]), "R01")
    now = await sim_now(sim_control)
    results = await asyncio.gather(*(container.payment_methods.ingest_returns(now=now) for _ in range(4)))
    assert sum(effects(r).get("count", 0) for r in results) == 1
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.bank_account.return_count == 1


async def test_account_noc_on_the_prenote_fails_verification(container, principal, sim_control, clean_db):
    """§7.2: verified only "with no return and no NOC". A C01 (wrong account number) cannot be
    applied to a token: the account fails verification and must be saved anew."""
    pm_id = await saved_id(container, principal, "cus_1", bank_body("800000001"))  # NOC trigger C01
    now = await advance_until_due(sim_control, clean_db, pm_id)
    result = await container.payment_methods.ingest_returns(now=now)
    assert effects(result) == {"fail_verification": 1}
    [noc] = await sql(clean_db, "SELECT kind, code, action FROM ach_returns WHERE kind = 'noc'")
    assert (noc["code"], noc["action"]) == ("C01", "fail_verification")
    assert await container.payment_methods.verify_due(now=now) == 0
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.verification_status == "failed" and got.deactivation_reason == "notification_of_change"
    assert got.bank_account.return_count == 0  # a NOC is not a return
    assert [e["id"] for e in await events(clean_db, "payment_method.verification_failed")] == [pm_id]
    # ingesting the same report again changes nothing
    again = await container.payment_methods.ingest_returns(now=now)
    assert effects(again) == {}


async def test_account_noc_on_a_live_debit_stops_further_debits(container, principal, sim_control, clean_db):
    pm_id = await verified_account(container, principal, sim_control, clean_db)
    debit = decode(await pay(container, principal, pm_id))
    await sim_control.inject_ach_return(int(debit["gateway"]["tran_nbr"]), "C03")
    result = await container.payment_methods.ingest_returns(now=await sim_now(sim_control))
    assert effects(result) == {"deactivate": 1}
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.status == "inactive" and got.deactivation_reason == "notification_of_change"
    assert got.verification_status == "verified" and got.bank_account.return_count == 0
    assert [e["id"] for e in await events(clean_db, "payment_method.deactivated")] == [pm_id]
    with pytest.raises(PaycoreError) as info:
        await pay(container, principal, pm_id)
    assert info.value.code == "payment_method_inactive"
    # a NOC counts in no NACHA return rate
    [row] = await sql(clean_db, "SELECT count(*) AS n FROM ach_returns WHERE return_class IS NOT NULL")
    assert row["n"] == 0


async def test_c05_on_the_prenote_fails_verification_too(container, principal, sim_control, clean_db):
    """A checking account that is really savings: the gateway token is bound to the account type, so
    the account is saved anew as savings (the simulator refuses a savings debit on a checking BRIC)."""
    pm_id = await saved_id(container, principal, "cus_1", bank_body("800000005"))  # NOC trigger C05
    now = await advance_until_due(sim_control, clean_db, pm_id)
    result = await container.payment_methods.ingest_returns(now=now)
    assert effects(result) == {"fail_verification": 1}
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.verification_status == "failed" and got.deactivation_reason == "notification_of_change"


async def test_informational_nocs_and_unmatched_entries_are_only_recorded(
    container, principal, sim_control, clean_db
):
    pm_id = await verified_account(container, principal, sim_control, clean_db)
    debit = decode(await pay(container, principal, pm_id))
    await sim_control.inject_ach_return(int(debit["gateway"]["tran_nbr"]), "C09")  # individual id
    result = await container.payment_methods.ingest_returns(now=await sim_now(sim_control))
    assert effects(result) == {}
    [noc] = await sql(clean_db, "SELECT code, action FROM ach_returns WHERE kind = 'noc'")
    assert (noc["code"], noc["action"]) == ("C09", "record")
    got = await container.payment_methods.get(principal, "cus_1", pm_id)
    assert got.status == "active"


async def test_returns_report_unavailable_is_skipped(container, principal, sim_control):
    await sim_control.add_fault({"target": "ach_returns", "action": {"type": "http_error", "status": 503}})
    try:
        result = await container.payment_methods.ingest_returns()
    finally:
        await sim_control.clear_faults()
    assert result.unavailable == 1 and result.applied == 0


async def test_verification_sweep_works_in_batches(container, principal, sim_control, clean_db):
    container.payment_methods.policy = dataclasses.replace(container.payment_methods.policy, batch_size=2)
    ids = [await saved_id(container, principal, f"cus_{i}", bank_body()) for i in range(5)]
    now = await advance_until_due(sim_control, clean_db, ids[-1])
    assert await container.payment_methods.verify_due(now=now) == 5
    rows = await sql(clean_db, "SELECT verification_status FROM customer_payment_methods")
    assert {r["verification_status"] for r in rows} == {"verified"}
    assert len(await events(clean_db, "payment_method.verified")) == 5


async def test_due_cutoff_uses_the_calendar(container, principal, clean_db):
    pm_id = await saved_id(container, principal, "cus_1", bank_body())
    created = await created_at(clean_db, pm_id)
    due = calendar.due_at(created, 3)
    assert await container.payment_methods.verify_due(now=due - timedelta(seconds=1)) == 0
    assert await container.payment_methods.verify_due(now=due) == 1
