"""The simulator's gateway rules (pure engine, frozen clock)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from paycore.epx_sim.engine import Engine, PostOutcome, aba_ok, card_brand, luhn_ok, redirect_mac
from paycore.epx_sim.model import DEFAULT_MAC, Merchant, SimClock

pytestmark = pytest.mark.unit

KEY = {"CUST_NBR": "9001", "MERCH_NBR": "900300", "DBA_NBR": "2", "TERMINAL_NBR": "77"}
VISA = {"ACCOUNT_NBR": "4111111111111111", "EXP_DATE": "3012", "CVV2": "123", "CARD_ENT_METH": "E"}
ACH = {
    "ACCOUNT_NBR": "1234567890",
    "ROUTING_NBR": "021000021",
    "FIRST_NAME": "Ada",
    "LAST_NAME": "Lovelace",
    "CARD_ENT_METH": "X",
    "STD_ENTRY_CLASS": "WEB",
    "INDUSTRY_TYPE": "E",
}
_numbers = itertools.count(1_000_000_001)


def post(engine: Engine, tran_type: str, amount: str | None = None, **fields: str) -> PostOutcome:
    f = {**KEY, "TRAN_TYPE": tran_type, "BATCH_ID": "20260302", "TRAN_NBR": str(next(_numbers))}
    if amount is not None:
        f["AMOUNT"] = amount
    f.update(fields)
    return engine.server_post(f)


def sale(engine: Engine, amount: str = "10.00", **fields: str) -> PostOutcome:
    return post(engine, "CCE1", amount, **{**VISA, **fields})


def auth(engine: Engine, amount: str = "10.00", **fields: str) -> PostOutcome:
    return post(engine, "CCE2", amount, **{**VISA, **fields})


def guid(out: PostOutcome) -> str:
    value = out.field("AUTH_GUID")
    assert value is not None, out.fields
    return value


# --- validation ----------------------------------------------------------------------------------


def test_approved_sale_echoes_and_issues_a_bric(engine: Engine) -> None:
    out = sale(engine, "10.50", USER_DATA_1="abc")
    f = dict(out.fields)
    assert out.processed and out.outcome == "approved"
    assert f["AUTH_RESP"] == "00"
    assert len(f["AUTH_GUID"]) == 20 and f["AUTH_GUID"].isalnum() and f["AUTH_GUID"].isupper()
    assert f["AUTH_AMOUNT"] == "10.50" and f["AMOUNT"] == "10.50"
    assert f["BATCH_ID"] == "20260302" and f["TRAN_NBR"] == out.tran_nbr_raw
    assert f["AUTH_CARD_TYPE"] == "V" and f["AUTH_MASKED_ACCOUNT_NBR"] == "************1111"
    assert f["AUTH_CVV2"] == "M" and f["USER_DATA_1"] == "abc"
    assert len(f["AUTH_CODE"]) == 6 and f["AUTH_TRAN_IDENT"]


def test_unknown_merchant_is_http_401(engine: Engine) -> None:
    out = post(engine, "CCE1", "1.00", **{**VISA, "MERCH_NBR": "999"})
    assert out.http_status == 401 and not out.processed


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"TRAN_NBR": "12345678901"}, "Invalid TRAN_NBR[LEN]"),
        ({"TRAN_NBR": "12a"}, "Invalid TRAN_NBR[LEN]"),
        ({"BATCH_ID": "202603021"}, "Invalid BATCH_ID[LEN]"),
        ({"AMOUNT": "10.5"}, "Invalid AMOUNT format"),
        ({"AMOUNT": "10.500"}, "Invalid AMOUNT format"),
        ({"AMOUNT": "-1.00"}, "Invalid AMOUNT format"),
        ({"AMOUNT": "$1.00"}, "Invalid AMOUNT format"),
        ({"AMOUNT": "0.00"}, "Invalid AMOUNT[ZERO]"),
        ({"TRAN_TYPE": "CCE3"}, "Invalid TRAN_TYPE"),
        ({"TRAN_TYPE": "CCX8"}, "Invalid TRAN_TYPE"),
        ({"TRAN_TYPE": "A"}, "Invalid TRAN_TYPE"),
        ({"AUTH_GUID": "09ABCDEFGHIJKLMNOPQR"}, "Invalid AUTH_GUID[REQUEST_FIELD]"),
        ({"ORIG_AUTH_GUID": "09ABC"}, "Invalid AUTH_GUID[LEN]"),
        ({"EXP_DATE": "1225x"}, "Invalid EXP_DATE[FORMAT]"),
        ({"EXP_DATE": "3013"}, "Invalid EXP_DATE[FORMAT]"),
    ],
)
def test_validation_errors_use_code_12_and_do_not_consume_the_tran_nbr(
    engine: Engine, fields: dict[str, str], text: str
) -> None:
    tran_nbr = str(next(_numbers))
    f = {**KEY, **VISA, "TRAN_TYPE": "CCE1", "AMOUNT": "1.00", "BATCH_ID": "20260302", "TRAN_NBR": tran_nbr}
    f.update(fields)
    out = engine.server_post(f)
    assert out.auth_resp == "12"
    assert out.field("AUTH_RESP_TEXT") == text
    assert not out.processed and out.field("AUTH_GUID") is None
    assert out.field("TRAN_NBR") == f["TRAN_NBR"]
    if f["TRAN_NBR"] == tran_nbr:
        retry = sale(engine, "1.00", TRAN_NBR=tran_nbr)
        assert retry.auth_resp == "00"


def test_missing_fields(engine: Engine) -> None:
    out = post(engine, "CCE1", None, **VISA)
    assert out.field("AUTH_RESP_TEXT") == "Missing required field AMOUNT"
    out = post(engine, "CCE4", "1.00")
    assert out.field("AUTH_RESP_TEXT") == "Missing required field ORIG_AUTH_GUID"
    out = post(engine, "CCE1", "1.00", ACCOUNT_NBR="4111111111111111")
    assert out.field("AUTH_RESP_TEXT") == "Missing required field EXP_DATE"


def test_duplicate_tran_nbr_is_rejected_with_94(engine: Engine) -> None:
    first = sale(engine, "5.00")
    again = sale(engine, "5.00", TRAN_NBR=first.tran_nbr_raw)
    assert again.auth_resp == "94"
    assert "Duplicate TRAN_NBR" in (again.field("AUTH_RESP_TEXT") or "")
    assert again.duplicate and not again.processed


def test_duplicate_is_per_merchant(engine: Engine) -> None:
    engine.add_merchant(Merchant(("9001", "900301", "2", "77"), "other-mac"))
    first = sale(engine, "5.00")
    other = sale(engine, "5.00", TRAN_NBR=first.tran_nbr_raw, MERCH_NBR="900301")
    assert other.auth_resp == "00"


def test_duplicate_replay_mode_returns_the_original(engine: Engine) -> None:
    engine.settings.duplicate_mode = "replay"
    first = sale(engine, "5.00")
    again = sale(engine, "5.00", TRAN_NBR=first.tran_nbr_raw)
    assert again.fields == first.fields and again.duplicate and not again.processed


def test_declines_consume_the_tran_nbr(engine: Engine) -> None:
    first = sale(engine, "1.05")
    assert first.auth_resp == "05" and first.processed
    assert sale(engine, "2.00", TRAN_NBR=first.tran_nbr_raw).auth_resp == "94"


def test_xml_detail_request_body_is_accepted(engine: Engine) -> None:
    from paycore.epx_sim.wire import parse_request

    body = (
        b'<DETAIL cust_nbr="9001" merch_nbr="900300" dba_nbr="2" terminal_nbr="77">'
        b"<TRAN_TYPE>CCE1</TRAN_TYPE><AMOUNT>3.00</AMOUNT><TRAN_NBR>42</TRAN_NBR><BATCH_ID>1</BATCH_ID>"
        b"<ACCOUNT_NBR>4111111111111111</ACCOUNT_NBR><EXP_DATE>3012</EXP_DATE></DETAIL>"
    )
    assert engine.server_post(parse_request(body)).auth_resp == "00"


def test_strict_mode(engine: Engine) -> None:
    engine.settings.strict = True
    assert sale(engine, "1.00").field("AUTH_RESP_TEXT") == "Missing required field INDUSTRY_TYPE"
    out = sale(engine, "1.00", INDUSTRY_TYPE="E")
    assert out.field("AUTH_RESP_TEXT") == "Missing required field LOCAL_DATE"
    base = {"LOCAL_DATE": "030226", "LOCAL_TIME": "100000", "INDUSTRY_TYPE": "E"}
    stored = post(engine, "CCE8", None, **VISA, **base)
    assert stored.auth_resp == "00"
    token = {"ORIG_AUTH_GUID": guid(stored), "CARD_ENT_METH": "Z", **base}
    rb = post(engine, "CCE1", "9.00", ACI_EXT="RB", **token)
    assert rb.field("AUTH_RESP_TEXT") == "Missing required field ORIG_AUTH_TRAN_IDENT"
    ntid = stored.field("AUTH_TRAN_IDENT") or ""
    ok = post(engine, "CCE1", "9.00", ACI_EXT="RB", ORIG_AUTH_TRAN_IDENT=ntid, **token)
    assert ok.auth_resp == "00"
    assert post(engine, "CCE1", "9.00", MAC="x", **{**VISA, **base}).field("AUTH_RESP_TEXT") == (
        "Invalid MAC[NOT_ALLOWED]"
    )


# --- card checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "code"),
    [("1.05", "05"), ("1.20", "51"), ("1.54", "54"), ("1.82", "82"), ("1.91", "91"), ("1.14", "14")],
)
def test_amount_triggers(engine: Engine, amount: str, code: str) -> None:
    out = sale(engine, amount)
    assert out.auth_resp == code and out.outcome == "declined"
    assert out.field("AUTH_AMOUNT") is None and out.field("AUTH_CODE") == ""


def test_cent_codes_and_plain_amounts(engine: Engine) -> None:
    assert sale(engine, "1.41").auth_resp == "41"
    assert sale(engine, "1.96").auth_resp == "96"
    assert sale(engine, "1.00").auth_resp == "00"
    assert sale(engine, "1.33").auth_resp == "00"
    assert sale(engine, "11.05").auth_resp == "00"


def test_decline_card(engine: Engine) -> None:
    assert sale(engine, "10.00", ACCOUNT_NBR="4000000000000002").auth_resp == "05"
    assert sale(engine, "1.20", ACCOUNT_NBR="4000000000000002").auth_resp == "51"


def test_luhn_expiry_and_unknown_pans(engine: Engine) -> None:
    assert sale(engine, "2.00", ACCOUNT_NBR="4111111111111112").auth_resp == "14"
    assert sale(engine, "2.00", EXP_DATE="2602").auth_resp == "54"  # February 2026 < March 2026
    assert sale(engine, "2.00", EXP_DATE="2603").auth_resp == "00"
    assert sale(engine, "2.00", ACCOUNT_NBR="4242424242424242").auth_resp == "14"
    engine.settings.allow_any_pan = True
    assert sale(engine, "2.00", ACCOUNT_NBR="4242424242424242").auth_resp == "00"


@pytest.mark.parametrize(
    ("fields", "avs", "cvv"),
    [
        ({"ZIP_CODE": "12345", "ADDRESS": "123 N CENTRAL"}, "Y", "M"),
        ({"ZIP_CODE": "12345"}, "Z", "M"),
        ({"ZIP_CODE": "99999"}, "N", "M"),
        ({}, "U", "M"),
        ({"CVV2": "999"}, "U", "N"),
    ],
)
def test_avs_and_cvv(engine: Engine, fields: dict[str, str], avs: str, cvv: str) -> None:
    out = sale(engine, "3.00", **fields)
    assert out.auth_resp == "00"
    assert out.field("AUTH_AVS") == avs and out.field("AUTH_CVV2") == cvv


def test_amex_cvv_and_no_cvv(engine: Engine) -> None:
    out = sale(engine, "3.00", ACCOUNT_NBR="378282246310005", CVV2="1234")
    assert out.field("AUTH_CARD_TYPE") == "A" and out.field("AUTH_CVV2") == "M"
    f = {k: v for k, v in VISA.items() if k != "CVV2"}
    assert post(engine, "CCE1", "3.00", **f).field("AUTH_CVV2") == "P"


def test_helpers() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert aba_ok("021000021") and not aba_ok("021000022")
    assert [card_brand(p) for p in ("4111", "5454", "3714", "6011", "3530")] == ["V", "M", "A", "D", "J"]
    mac = redirect_mac("k", {"CUST_NBR": "1", "AMOUNT": "2.00"})
    assert len(mac) == 64 and mac == mac.lower()


# --- BRICs and storage ---------------------------------------------------------------------------


def test_storage_bric_and_token_sales_keep_the_card(engine: Engine) -> None:
    stored = post(engine, "CCE8", None, **VISA, ZIP_CODE="12345")
    assert stored.auth_resp == "00" and stored.field("AUTH_TRAN_IDENT")
    token = guid(stored)
    assert engine.brics[token].kind == "storage" and engine.brics[token].expires_at is None
    sale_out = post(engine, "CCE1", "10.00", ORIG_AUTH_GUID=token, CARD_ENT_METH="Z")
    assert sale_out.auth_resp == "00" and sale_out.field("AUTH_MASKED_ACCOUNT_NBR") == "************1111"
    assert post(engine, "CCE2", "1.05", ORIG_AUTH_GUID=token).auth_resp == "05"
    decline_token = guid(post(engine, "CCE8", None, **{**VISA, "ACCOUNT_NBR": "4000000000000002"}))
    assert post(engine, "CCE1", "10.00", ORIG_AUTH_GUID=decline_token).auth_resp == "05"


def test_storage_code_85_and_cof_period(engine: Engine, clock: SimClock) -> None:
    engine.settings.storage_code = "85"
    stored = post(engine, "CCE8", "0.00", **VISA, COF_PERIOD="13")
    assert stored.auth_resp == "85" and stored.outcome == "approved"
    token = guid(stored)
    clock.advance(timedelta(days=400))
    out = post(engine, "CCE1", "1.00", ORIG_AUTH_GUID=token)
    assert out.field("AUTH_RESP_TEXT") == "Invalid AUTH_GUID[EXPIRED]"


def test_financial_bric_conversion_and_update(engine: Engine) -> None:
    fin = guid(sale(engine, "4.00"))
    converted = post(engine, "CCE8", None, ORIG_AUTH_GUID=fin, CARD_ENT_METH="Z")
    storage = guid(converted)
    assert storage != fin and engine.brics[storage].kind == "storage"
    update = post(engine, "CCE8", None, ORIG_AUTH_GUID=storage, EXP_DATE="3112")
    assert update.auth_resp == "00" and guid(update) != storage
    assert post(engine, "CCE1", "2.00", ORIG_AUTH_GUID=storage).auth_resp == "00"  # original still valid


def test_bric_rejections(engine: Engine) -> None:
    engine.add_merchant(Merchant(("9001", "900301", "2", "77"), "m2"))
    token = guid(sale(engine, "4.00"))
    assert post(engine, "CCE4", "1.00", ORIG_AUTH_GUID="09AAAAAAAAAAAAAAAAAA").field("AUTH_RESP_TEXT") == (
        "Invalid AUTH_GUID[NOT_FOUND]"
    )
    foreign = post(engine, "CCE9", "1.00", ORIG_AUTH_GUID=token, MERCH_NBR="900301")
    assert foreign.field("AUTH_RESP_TEXT") == "Invalid AUTH_GUID[MERCHANT]"
    assert (
        post(engine, "CCE4", "1.00", ORIG_AUTH_GUID=token).field("AUTH_RESP_TEXT")
        == "Invalid AUTH_GUID[KIND]"
    )
    debit = post(engine, "CKC2", "1.00", ORIG_AUTH_GUID=token, STD_ENTRY_CLASS="WEB")
    assert debit.field("AUTH_RESP_TEXT") == "Invalid AUTH_GUID[KIND]"


def test_brics_are_deterministic_per_seed(clock: SimClock) -> None:
    from paycore.epx_sim.model import Settings

    def run(seed: int) -> list[str]:
        e = Engine(Settings(), seed=seed, clock=clock)
        f = {**KEY, **VISA, "TRAN_TYPE": "CCE1", "AMOUNT": "1.00", "BATCH_ID": "1"}
        return [guid(e.server_post({**f, "TRAN_NBR": str(n)})) for n in range(1, 4)]

    assert run(7) == run(7)
    assert run(7) != run(8)


# --- follow-ons ----------------------------------------------------------------------------------


def test_multiple_captures_up_to_the_authorised_amount(engine: Engine) -> None:
    a = guid(auth(engine, "10.00"))
    assert post(engine, "CCE4", "4.00", ORIG_AUTH_GUID=a).auth_resp == "00"
    assert post(engine, "CCE4", "6.00", ORIG_AUTH_GUID=a).auth_resp == "00"
    over = post(engine, "CCE4", "0.01", ORIG_AUTH_GUID=a)
    assert over.auth_resp == "12" and over.field("AUTH_RESP_TEXT") == "Amount exceeds authorized amount"
    assert not over.processed


def test_single_capture_switch(engine: Engine) -> None:
    engine.settings.single_capture = True
    a = guid(auth(engine, "10.00"))
    assert post(engine, "CCE4", "4.00", ORIG_AUTH_GUID=a).auth_resp == "00"
    assert post(engine, "CCE4", "1.00", ORIG_AUTH_GUID=a).field("AUTH_RESP_TEXT") == (
        "Authorization already captured"
    )


def test_auth_lapses(engine: Engine, clock: SimClock) -> None:
    engine.settings.auth_lapse_days = 7
    a = guid(auth(engine, "10.00"))
    clock.advance(timedelta(days=7, seconds=1))
    assert post(engine, "CCE4", "1.00", ORIG_AUTH_GUID=a).field("AUTH_RESP_TEXT") == "Authorization expired"


def test_refunds_up_to_the_captured_total(engine: Engine) -> None:
    s = guid(sale(engine, "200.00"))
    assert post(engine, "CCE9", "50.00", ORIG_AUTH_GUID=s).auth_resp == "00"
    assert post(engine, "CCE9", "75.00", ORIG_AUTH_GUID=s).auth_resp == "00"
    assert post(engine, "CCE9", "75.01", ORIG_AUTH_GUID=s).field("AUTH_RESP_TEXT") == (
        "Amount exceeds refundable amount"
    )
    assert post(engine, "CCE9", "75.00", ORIG_AUTH_GUID=s).auth_resp == "00"

    a = guid(auth(engine, "10.00"))
    c1 = guid(post(engine, "CCE4", "3.00", ORIG_AUTH_GUID=a))
    c2 = guid(post(engine, "CCE4", "4.00", ORIG_AUTH_GUID=a))
    assert post(engine, "CCE9", "1.00", ORIG_AUTH_GUID=a).field("AUTH_RESP_TEXT") == "Invalid AUTH_GUID[KIND]"
    assert post(engine, "CCE9", "5.00", ORIG_AUTH_GUID=c2).auth_resp == "00"
    assert post(engine, "CCE9", "2.01", ORIG_AUTH_GUID=c1).auth_resp == "12"
    assert post(engine, "CCE9", "2.00", ORIG_AUTH_GUID=c1).auth_resp == "00"


def test_void_rules(engine: Engine) -> None:
    s = guid(sale(engine, "10.00"))
    partial = post(engine, "CCEX", "5.00", ORIG_AUTH_GUID=s)
    assert partial.auth_resp == "12" and "Partial void" in (partial.field("AUTH_RESP_TEXT") or "")
    assert post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=s).auth_resp == "00"
    assert (
        post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=s).field("AUTH_RESP_TEXT")
        == "Transaction already voided"
    )
    assert post(engine, "CCE9", "1.00", ORIG_AUTH_GUID=s).field("AUTH_RESP_TEXT") == "Transaction voided"

    a = guid(auth(engine, "10.00"))
    c = guid(post(engine, "CCE4", "10.00", ORIG_AUTH_GUID=a))
    assert "captures" in (post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=a).field("AUTH_RESP_TEXT") or "")
    assert post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=c).auth_resp == "00"  # void the capture
    assert post(engine, "CCE4", "10.00", ORIG_AUTH_GUID=a).auth_resp == "00"  # capturable again

    a2 = guid(auth(engine, "7.00"))
    assert post(engine, "CCEX", "7.00", ORIG_AUTH_GUID=a2).auth_resp == "00"
    assert post(engine, "CCE4", "1.00", ORIG_AUTH_GUID=a2).field("AUTH_RESP_TEXT") == "Transaction voided"


def test_batch_close_blocks_voids_and_allows_refunds(engine: Engine) -> None:
    s = guid(sale(engine, "10.00"))
    result = engine.close_batch()
    assert result["settled"] >= 1
    void = post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=s)
    assert void.auth_resp == "12" and "settled" in (void.field("AUTH_RESP_TEXT") or "")
    assert post(engine, "CCE9", "10.00", ORIG_AUTH_GUID=s).auth_resp == "00"


def test_automatic_cutoff(engine: Engine, clock: SimClock) -> None:
    from datetime import time

    engine.settings.batch_cutoff = time(18, 0)
    before = guid(sale(engine, "10.00"))  # 10:00
    clock.advance(timedelta(hours=9))  # 19:00: the 18:00 cut-off has passed
    after = guid(sale(engine, "10.00"))
    assert "settled" in (post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=before).field("AUTH_RESP_TEXT") or "")
    assert post(engine, "CCEX", "10.00", ORIG_AUTH_GUID=after).auth_resp == "00"


# --- ACH -----------------------------------------------------------------------------------------


def test_ach_prenote_storage_debit_credit_void(engine: Engine) -> None:
    pre = post(engine, "CKC0", "0.00", **ACH)
    assert pre.auth_resp == "00" and pre.field("AUTH_RESP_TEXT") == "ACH ACCEPTED"
    assert (pre.field("AUTH_CODE") or "").startswith("ACH")
    storage = guid(
        post(engine, "CKC8", None, ORIG_AUTH_GUID=guid(pre), CARD_ENT_METH="Z", STD_ENTRY_CLASS="WEB")
    )
    debit = post(engine, "CKC2", "25.00", ORIG_AUTH_GUID=storage, CARD_ENT_METH="Z", STD_ENTRY_CLASS="WEB")
    assert debit.auth_resp == "00" and debit.field("AUTH_AMOUNT") == "25.00"
    assert debit.txn is not None and debit.txn.ach_settle_date is not None
    assert str(debit.txn.ach_settle_date) == "2026-03-03"
    d = guid(debit)
    assert post(engine, "CKS2", "1.00", ORIG_AUTH_GUID=storage, STD_ENTRY_CLASS="WEB").field(
        "AUTH_RESP_TEXT"
    ) == ("Invalid AUTH_GUID[KIND]")
    assert post(engine, "CKC3", "10.00", ORIG_AUTH_GUID=d).auth_resp == "00"
    assert post(engine, "CKC3", "15.01", ORIG_AUTH_GUID=d).auth_resp == "12"
    d2 = guid(post(engine, "CKC2", "5.00", ORIG_AUTH_GUID=storage, STD_ENTRY_CLASS="WEB"))
    assert post(engine, "CKCX", "5.00", ORIG_AUTH_GUID=d2).auth_resp == "00"
    engine.close_batch()
    assert "settled" in (post(engine, "CKCX", "25.00", ORIG_AUTH_GUID=d).field("AUTH_RESP_TEXT") or "")


def test_ach_bad_routing_and_required_fields(engine: Engine) -> None:
    assert post(engine, "CKC0", "0.00", **{**ACH, "ROUTING_NBR": "021000022"}).auth_resp == "14"
    f = {k: v for k, v in ACH.items() if k != "STD_ENTRY_CLASS"}
    assert (
        post(engine, "CKC0", "0.00", **f).field("AUTH_RESP_TEXT") == "Missing required field STD_ENTRY_CLASS"
    )
    f = {k: v for k, v in ACH.items() if k != "LAST_NAME"}
    assert post(engine, "CKC0", "0.00", **f).field("AUTH_RESP_TEXT") == "Missing required field LAST_NAME"
    assert post(engine, "CKC0", "1.00", **ACH).field("AUTH_RESP_TEXT") == "Invalid AMOUNT[NONZERO]"


def test_ach_trigger_accounts_return_after_banking_days(engine: Engine, clock: SimClock) -> None:
    # Wednesday 25 Nov 2026; Thursday 26 is Thanksgiving: the entry settles Friday 27,
    # and returns 2 banking days later, on Tuesday 1 December (the weekend is skipped).
    clock.set(clock.now().replace(year=2026, month=11, day=25))
    pre = post(engine, "CKC0", "0.00", **{**ACH, "ACCOUNT_NBR": "900000003"})
    assert pre.auth_resp == "00"
    assert pre.txn is not None and str(pre.txn.ach_settle_date) == "2026-11-27"
    noc = post(engine, "CKC0", "0.00", **{**ACH, "ACCOUNT_NBR": "800000001"})
    assert noc.auth_resp == "00"
    assert engine.ach_returns("900300", None) == []
    clock.set(clock.now().replace(day=30))
    assert engine.ach_returns("900300", None) == []
    clock.set(clock.now().replace(month=12, day=1))
    rows = engine.ach_returns("900300", None)
    codes = sorted((r["returnCode"] or "", r.get("changeCode")) for r in rows)
    assert codes == [("", "C01"), ("R03", None)]
    r03 = next(r for r in rows if r["returnCode"] == "R03")
    assert r03["returnDate"] == "2026-12-01" and r03["accountLast4"] == "0003" and r03["secCode"] == "WEB"
    assert engine.ach_returns("900300", engine.clock.now().date() + timedelta(days=1)) == []


def test_injected_return(engine: Engine) -> None:
    pre = post(engine, "CKC0", "0.00", **ACH)
    ret = engine.inject_ach_return("900300", int(pre.tran_nbr_raw), "R01", None)
    assert ret.return_code == "R01"
    assert [r["returnCode"] for r in engine.ach_returns("900300", None)] == ["R01"]
    with pytest.raises(KeyError):
        engine.inject_ach_return("900300", 1, "R01", None)


def test_an_account_returned_r02_is_refused_at_once_afterwards(engine: Engine) -> None:
    pre = post(engine, "CKC0", "0.00", **ACH)
    other = post(engine, "CKC0", "0.00", **{**ACH, "ACCOUNT_NBR": "4099992719"})
    engine.inject_ach_return("900300", int(pre.tran_nbr_raw), "R01", None)  # funds: still open
    assert (
        post(
            engine, "CKC0", "0.00", ORIG_AUTH_GUID=guid(pre), CARD_ENT_METH="Z", STD_ENTRY_CLASS="WEB"
        ).auth_resp
        == "00"
    )
    engine.inject_ach_return("900300", int(pre.tran_nbr_raw), "R02", None)  # account closed
    closed = post(engine, "CKC0", "0.00", ORIG_AUTH_GUID=guid(pre), CARD_ENT_METH="Z", STD_ENTRY_CLASS="WEB")
    assert (closed.auth_resp, closed.field("AUTH_RESP_TEXT")) == ("05", "ACCOUNT CLOSED")
    assert post(engine, "CKC0", "0.00", **ACH).auth_resp == "05"  # keyed again: the same account
    assert (
        post(
            engine, "CKC0", "0.00", ORIG_AUTH_GUID=guid(other), CARD_ENT_METH="Z", STD_ENTRY_CLASS="WEB"
        ).auth_resp
        == "00"
    )


# --- Key Exchange and Browser Post ---------------------------------------------------------------


def _tac(engine: Engine, **over: str) -> str:
    f = {
        "MAC": DEFAULT_MAC,
        "TRAN_NBR": "5550000001",
        "AMOUNT": "12.00",
        "TRAN_GROUP": "SALE",
        "REDIRECT_URL": "https://shop.example/cb?txn=1&m=2",
    }
    f.update(over)
    out = engine.key_exchange(f)
    assert out.http_status == 200 and out.tac is not None, out.error
    return out.tac.value


def _bp(tac: str, **over: str) -> dict[str, str]:
    f = {
        "TAC": tac,
        **KEY,
        "TRAN_NBR": "5550000001",
        "AMOUNT": "12.00",
        "TRAN_CODE": "SALE",
        "INDUSTRY_TYPE": "E",
        "ACCOUNT_NBR": "4111111111111111",
        "EXP_DATE": "3012",
        "CVV": "123",
        "ZIP_CODE": "12345",
        "USER_DATA_1": "txn-1",
    }
    f.update(over)
    return f


def test_key_exchange_checks(engine: Engine) -> None:
    assert engine.key_exchange({"MAC": "wrong"}).http_status == 401
    out = engine.key_exchange({"MAC": DEFAULT_MAC, "TRAN_NBR": "1", "AMOUNT": "1.00", "TRAN_GROUP": "SALE"})
    assert out.http_status == 400 and "REDIRECT_URL" in out.error
    bad_group = {
        "MAC": DEFAULT_MAC,
        "TRAN_NBR": "1",
        "AMOUNT": "1.00",
        "TRAN_GROUP": "U",
        "REDIRECT_URL": "https://x",
    }
    assert engine.key_exchange(bad_group).http_status == 400


def test_browser_post_sale_redirect_with_mac(engine: Engine) -> None:
    tac = _tac(engine)
    out = engine.browser_post(_bp(tac))
    assert out.kind == "redirect" and out.target == "https://shop.example/cb?txn=1&m=2"
    f = dict(out.fields or [])
    assert f["AUTH_RESP"] == "00" and f["AUTH_AMOUNT"] == "12.00" and f["TRAN_GROUP"] == "SALE"
    assert f["CUST_NBR"] == "9001" and f["MERCH_NBR"] == "900300" and f["AMOUNT"] == "12.00"
    assert f["USER_DATA_1"] == "txn-1" and f["AUTH_MASKED_ACCOUNT_NBR"].endswith("1111")
    plain = {k: v for k, v in f.items() if k != "MAC"}
    assert f["MAC"] == redirect_mac(DEFAULT_MAC, plain)
    again = engine.browser_post(_bp(tac))
    assert dict(again.fields or [])["AUTH_RESP"] == "58"


def test_browser_post_tac_binding_and_expiry(engine: Engine, clock: SimClock) -> None:
    tac = _tac(engine)
    assert dict(engine.browser_post(_bp(tac, AMOUNT="13.00")).fields or [])["AUTH_RESP"] == "58"
    tac = _tac(engine, TRAN_NBR="5550000002")
    clock.advance(timedelta(minutes=16))
    out = engine.browser_post(_bp(tac, TRAN_NBR="5550000002"))
    assert dict(out.fields or [])["AUTH_RESP"] == "58" and "expired" in out.reason


def test_browser_post_field_errors_hosted_form_decline_and_storage(engine: Engine) -> None:
    tac = _tac(engine, TRAN_NBR="5550000003")
    out = engine.browser_post(_bp(tac, TRAN_NBR="5550000003", CARD_NBR="4111111111111111"))
    f = dict(out.fields or [])
    assert f["BP_RESP_CODE"] == "BP_140" and "CARD_NBR" in f["BP_FIELD_ERRORS"]

    form = engine.browser_post(
        {k: v for k, v in _bp(tac, TRAN_NBR="5550000003").items() if k != "ACCOUNT_NBR"}
    )
    assert form.kind == "form"

    tac = _tac(engine, TRAN_NBR="5550000004", AMOUNT="1.05")
    out = engine.browser_post(
        _bp(tac, TRAN_NBR="5550000004", AMOUNT="1.05", REDIRECT_URL_DECLINE="https://shop.example/declined")
    )
    f = dict(out.fields or [])
    assert out.target == "https://shop.example/declined" and f["AUTH_RESP"] == "05" and "AUTH_AMOUNT" not in f

    tac = _tac(engine, TRAN_NBR="5550000005", AMOUNT="0.00", TRAN_GROUP="STORAGE")
    out = engine.browser_post(_bp(tac, TRAN_NBR="5550000005", AMOUNT="0.00", TRAN_CODE="STORAGE"))
    f = dict(out.fields or [])
    assert f["AUTH_RESP"] == "00" and "AUTH_AMOUNT" not in f
    assert engine.brics[f["AUTH_GUID"]].kind == "storage"


# --- disputes ------------------------------------------------------------------------------------


def test_disputes_are_tied_to_transactions_and_paged(engine: Engine) -> None:
    s = sale(engine, "20.00")
    d = engine.create_dispute({"merchant": "900300", "tran_nbr": int(s.tran_nbr_raw)})
    assert d.transaction_amount == 2000 and d.last4 == "1111" and d.status == "NEW"
    engine.update_dispute(d.case_number, {"status": "WON"})
    assert engine.disputes[d.case_number].status == "WON"
    with pytest.raises(KeyError):
        engine.create_dispute({"merchant": "900300", "tran_nbr": 1})
    for _ in range(3):
        engine.create_dispute({"merchant": "900300", "tran_nbr": int(s.tran_nbr_raw)})
    engine.settings.north_page_cap = 2
    page, total = engine.search_disputes("900300", None, None)
    assert len(page) == 2 and total == 4


def test_verification_and_reversal(engine: Engine) -> None:
    verify = post(engine, "CCE0", "0.00", **VISA)
    assert verify.auth_resp == "00" and verify.field("AUTH_TRAN_IDENT")
    assert engine.brics[guid(verify)].kind == "financial"
    a = guid(auth(engine, "8.00"))
    assert post(engine, "CCE7", None, ORIG_AUTH_GUID=a).auth_resp == "00"
    assert post(engine, "CCE4", "1.00", ORIG_AUTH_GUID=a).field("AUTH_RESP_TEXT") == "Transaction voided"


def test_multi_use_tac_second_submission_is_a_duplicate(engine: Engine) -> None:
    engine.settings.tac_single_use = False
    tac = _tac(engine, TRAN_NBR="5550000009")
    first = engine.browser_post(_bp(tac, TRAN_NBR="5550000009"))
    second = engine.browser_post(_bp(tac, TRAN_NBR="5550000009"))
    assert dict(first.fields or [])["AUTH_RESP"] == "00"
    f = dict(second.fields or [])
    assert f["AUTH_RESP"] == "94" and "Duplicate TRAN_NBR" in f["AUTH_RESP_TEXT"]


def test_full_reset_keeps_cli_merchants(engine: Engine) -> None:
    engine.base_merchants.append(Merchant(("1", "2", "3", "4"), "m"))
    engine.extra_merchants.append(Merchant(("5", "6", "7", "8"), "n"))
    sale(engine, "1.00")
    engine.reset()
    assert not engine.txns and not engine.ledger
    assert {("1", "2", "3", "4"), ("5", "6", "7", "8")} <= set(engine.merchants)
