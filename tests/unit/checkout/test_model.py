"""Hosted checkout's pure rules: callback formats, merge, MAC, matching, classification, return URLs,
expiry."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paycore.checkout import model
from paycore.checkout.model import CallbackRejected, Expected, Mode
from paycore.gateway.port import MerchantKey

pytestmark = pytest.mark.unit

KEY = MerchantKey(cust_nbr="9001", merch_nbr="900300", dba_nbr="2", terminal_nbr="77")
SECRET = "<MAC_SECRET>"
TXN = uuid.UUID("0190abcd-0000-7000-8000-00000000000f")
MERCHANT = uuid.UUID("01900000-0000-7000-8000-0000000000aa")


def signed(**overrides: str) -> dict[str, str]:
    fields = {
        "txn": str(TXN),
        "m": str(MERCHANT),
        "AUTH_RESP": "00",
        "AUTH_GUID": "09ABCDEFGHIJKLMNOPQR",
        "AUTH_CODE": "052585",
        "AUTH_RESP_TEXT": "APPROVAL",
        "AUTH_CARD_TYPE": "V",
        "AUTH_AVS": "Z",
        "AUTH_CVV2": "M",
        "AUTH_AMOUNT": "10.50",
        "AUTH_MASKED_ACCOUNT_NBR": "************1111",
        "EXP_DATE": "3012",
        "TRAN_NBR": "1234567890",
        "TRAN_GROUP": "SALE",
        "USER_DATA_1": str(TXN),
        "USER_DATA_2": "cus_1",
        "USER_DATA_3": str(MERCHANT),
        "CUST_NBR": "9001",
        "MERCH_NBR": "900300",
        "AMOUNT": "10.50",
    }
    fields.update(overrides)
    fields = {k: v for k, v in fields.items() if v is not None}
    fields["MAC"] = model.expected_mac(SECRET, fields)
    return fields


EXPECTED = Expected(tran_nbr=1234567890, tran_group="SALE", amount_cents=1050, customer_id="cus_1")


def parse(fields: dict[str, str]) -> model.Callback:
    return model.parse_callback(fields)


# --- merge ------------------------------------------------------------------------------------------
def test_merge_accepts_identical_repeats_and_rejects_conflicts():
    assert model.merge_params([("txn", "a"), ("m", "b")], [("txn", "a"), ("X", "1")]) == {
        "txn": "a",
        "m": "b",
        "X": "1",
    }
    with pytest.raises(CallbackRejected, match="conflicting_parameter"):
        model.merge_params([("AUTH_RESP", "05")], [("AUTH_RESP", "00")])
    with pytest.raises(CallbackRejected, match="conflicting_parameter"):
        model.merge_params([("txn", "a"), ("txn", "b")], [])
    with pytest.raises(CallbackRejected, match="too_many_parameters"):
        model.merge_params([(f"K{i}", "v") for i in range(model.MAX_PARAMS + 1)], [])
    with pytest.raises(CallbackRejected, match="oversized_parameter"):
        model.merge_params([("K", "v" * (model.MAX_VALUE + 1))], [])


# --- formats ------------------------------------------------------------------------------------------
def test_a_genuine_callback_parses():
    cb = parse(signed())
    assert cb.txn_id == TXN and cb.merchant_id == MERCHANT and cb.tran_nbr == 1234567890
    assert cb.auth_amount_cents == 1050 == cb.amount_cents
    assert cb.card_last4 == "1111" and cb.expiry == (12, 2030)
    assert "09ABC" not in repr(cb)  # no BRIC in logs


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("txn", "not-a-uuid", "malformed_txn"),
        ("txn", str(TXN).upper(), "malformed_txn"),
        ("txn", "", "missing_txn"),
        ("m", "{" + str(MERCHANT) + "}", "malformed_m"),
        ("AUTH_RESP", "0", "malformed_auth_resp"),
        ("AUTH_RESP", "000", "malformed_auth_resp"),
        ("AUTH_RESP", "", "missing_auth_resp"),
        ("TRAN_NBR", "123456789", "malformed_tran_nbr"),
        ("TRAN_NBR", "12345678901", "malformed_tran_nbr"),
        ("TRAN_NBR", "0123456789", "malformed_tran_nbr"),
        ("TRAN_NBR", "", "missing_tran_nbr"),
        ("AMOUNT", "10.5", "malformed_amount"),
        ("AMOUNT", "010.50", "malformed_amount"),
        ("AMOUNT", "-10.50", "malformed_amount"),
        ("AUTH_AMOUNT", "10,50", "malformed_auth_amount"),
        ("TRAN_GROUP", "U", "malformed_tran_group"),
        ("TRAN_GROUP", "sale", "malformed_tran_group"),
        ("TRAN_GROUP", "", "missing_tran_group"),
        ("AUTH_GUID", "09AB-CD", "malformed_auth_guid"),
        ("AUTH_GUID", "A" * 41, "malformed_auth_guid"),
        ("CUST_NBR", "90a1", "malformed_cust_nbr"),
        ("MAC", "zz" * 32, "malformed_mac"),
        ("EXP_DATE", "3013", "malformed_exp_date"),
        ("AUTH_RESP_TEXT", "APPROVAL\x00", "control_characters"),
    ],
)
def test_format_checks_run_first(field, value, reason):
    fields = signed(**{field: value})
    fields[field] = value  # also the MAC itself
    with pytest.raises(CallbackRejected) as exc:
        parse(fields)
    assert exc.value.reason == reason
    assert value not in str(exc.value) or value == ""  # reasons never echo values


def test_bp_error_needs_no_auth_resp():
    cb = parse(signed(AUTH_RESP=None, AUTH_GUID=None, BP_RESP_CODE="BP_140"))
    assert cb.bp_resp_code == "BP_140" and cb.auth_resp is None


# --- prechecks and matching ------------------------------------------------------------------------
def test_precheck_refuses_another_merchant_and_foreign_user_data():
    model.precheck(parse(signed()), KEY)
    for overrides, reason in (
        ({"MERCH_NBR": "900301"}, "merchant_mismatch"),
        ({"CUST_NBR": "9002"}, "merchant_mismatch"),
        ({"USER_DATA_1": str(uuid.uuid4())}, "user_data_mismatch"),
        ({"USER_DATA_3": str(uuid.uuid4())}, "user_data_mismatch"),
        ({"USER_DATA_1": None}, "user_data_mismatch"),
        ({"AUTH_AMOUNT": "5.00"}, "amount_mismatch"),
    ):
        with pytest.raises(CallbackRejected) as exc:
            model.precheck(parse(signed(**overrides)), KEY)
        assert exc.value.reason == reason


def test_mismatches_name_every_difference():
    assert model.mismatches(parse(signed()), EXPECTED) == []
    cb = parse(
        signed(TRAN_NBR="1234567891", TRAN_GROUP="AUTH", AMOUNT="10.51", AUTH_AMOUNT="10.51", USER_DATA_2="x")
    )
    assert model.mismatches(cb, EXPECTED) == [
        "tran_nbr_mismatch",
        "tran_group_mismatch",
        "amount_mismatch",
        "user_data_mismatch",
    ]
    # amounts are optional (declines and STORAGE omit AUTH_AMOUNT) but never different
    assert model.mismatches(parse(signed(AUTH_AMOUNT=None, AMOUNT=None)), EXPECTED) == []


# --- MAC ---------------------------------------------------------------------------------------------
def test_mac_is_the_candidate_hmac_over_seven_fields():
    fields = signed()
    message = "9001" + "900300" + "09ABCDEFGHIJKLMNOPQR" + "00" + "10.50" + "1234567890" + "SALE"
    assert fields["MAC"] == hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    model.verify_mac(parse(fields), SECRET)
    model.verify_mac(parse({**fields, "MAC": fields["MAC"].upper()}), SECRET)


def test_wrong_missing_or_foreign_mac_is_rejected():
    fields = signed()
    with pytest.raises(CallbackRejected, match="bad_mac"):
        model.verify_mac(parse(fields), "another-secret")
    with pytest.raises(CallbackRejected, match="missing_mac"):
        model.verify_mac(parse({k: v for k, v in fields.items() if k != "MAC"}), SECRET)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(["AUTH_RESP", "AUTH_GUID", "AMOUNT", "TRAN_NBR", "TRAN_GROUP", "MERCH_NBR"]),
    data=st.data(),
)
def test_changing_any_signed_field_breaks_the_mac(field, data):
    original = signed()
    replacement = {
        "AUTH_RESP": st.sampled_from(["05", "51", "12", "58"]),
        "AUTH_GUID": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=18, max_size=18).map(
            lambda s: "09" + s
        ),
        "AMOUNT": st.integers(0, 10**6).map(lambda c: f"{c // 100}.{c % 100:02d}"),
        "TRAN_NBR": st.integers(1_000_000_000, 9_999_999_999).map(str),
        "TRAN_GROUP": st.sampled_from(["AUTH", "STORAGE"]),
        "MERCH_NBR": st.integers(1, 999_999).map(str),
    }[field]
    value = data.draw(replacement.filter(lambda v: v != original[field]))
    tampered = {**original, field: value}  # the MAC is kept: now wrong
    with pytest.raises(CallbackRejected, match="bad_mac"):
        model.verify_mac(parse(tampered), SECRET)


# --- classification ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({}, "approved", None),
        ({"AUTH_RESP": "05", "AUTH_AMOUNT": None}, "declined", None),
        ({"AUTH_RESP": "14", "AUTH_AMOUNT": None}, "declined", None),
        ({"AUTH_RESP": "96"}, "failed", "gateway_error"),
        ({"AUTH_RESP": "12", "AUTH_RESP_TEXT": "Invalid AMOUNT format"}, "failed", "gateway_error"),
        ({"AUTH_RESP": "94", "AUTH_RESP_TEXT": "Duplicate TRAN_NBR 12"}, "unknown", "duplicate_tran_nbr"),
        ({"AUTH_RESP": "58", "AUTH_RESP_TEXT": "TAC VALIDATION FAILED: reused"}, "unknown", "tac_rejected"),
        ({"AUTH_GUID": None}, "unknown", "approval_without_auth_guid"),
        ({"AUTH_RESP": "85"}, "unknown", "unexpected_code_85"),
        ({"AUTH_RESP": None, "BP_RESP_CODE": "BP_140"}, "failed", "browser_post_rejected"),
        ({"TRAN_GROUP": "STORAGE", "AUTH_RESP": "85", "AUTH_AMOUNT": None}, "approved", None),
        ({"TRAN_GROUP": "STORAGE", "AUTH_RESP": "58"}, "failed", "tac_rejected"),
        ({"TRAN_GROUP": "STORAGE", "AUTH_RESP": "94", "AUTH_RESP_TEXT": "Duplicate TRAN_NBR"}, "failed", ""),
    ],
)
def test_classify(overrides, status, code):
    outcome = model.classify(parse(signed(**overrides)))
    assert outcome.status == status
    if code:
        assert outcome.failure_code == code
    if status == "declined":
        assert outcome.decline_category in {"soft_decline", "hard_decline"}


def test_a_duplicate_answer_is_never_a_decline():
    """§6.7: a double-submitted form's "duplicate" must not record a decline over a possible approval."""
    outcome = model.classify(parse(signed(AUTH_RESP="94", AUTH_RESP_TEXT="Duplicate TRAN_NBR 1234567890")))
    assert outcome.status != "declined"


def test_digest_tells_identical_from_different():
    a = model.callback_digest(signed())
    assert a == model.callback_digest(dict(reversed(list(signed().items()))))
    assert a != model.callback_digest(signed(AUTH_CODE="999999"))


# --- return URLs ---------------------------------------------------------------------------------------
REGISTERED = ("https://shop.example/checkout/return", "https://shop.example/checkout/declined?src=paycore")


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/checkout/return",
        "https://SHOP.example:443/checkout/return",
        "https://shop.example/checkout/return?order=42",
        "https://shop.example/checkout/declined?src=paycore",
    ],
)
def test_registered_return_urls_are_accepted(url):
    assert model.check_return_url(url, REGISTERED) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/checkout/return",
        "https://shop.example.evil.example/checkout/return",
        "https://shop.example@evil.example/checkout/return",
        "https://user:pw@shop.example/checkout/return",
        "https://shop.example/checkout/return/../../admin",
        "https://shop.example/checkout/returnx",
        "https://shop.example/checkout/return#frag",
        "http://shop.example/checkout/return",
        "https://shop.example:8443/checkout/return",
        "//evil.example/checkout/return",
        "/checkout/return",
        "javascript:alert(1)",
        "https://shop.example\\@evil.example/checkout/return",
        "https://shop.example/checkout/return\r\nLocation: https://evil.example",
        "https://shop.example/checkout/return?payment_id=x",
        "https://shop.example/checkout/return?status=approved",
        "https://shop.example/checkout/declined?src=other",
        "https://shop.example/checkout/return " + "x",
        "data:text/html,hi",
    ],
)
def test_open_redirect_attempts_are_refused(url):
    with pytest.raises(model.ReturnUrlRejected):
        model.check_return_url(url, REGISTERED)


@given(st.text(max_size=80))
def test_any_accepted_url_targets_a_registered_host_and_path(suffix):
    candidate = "https://shop.example/checkout/return" + suffix
    try:
        accepted = model.check_return_url(candidate, REGISTERED)
    except model.ReturnUrlRejected:
        return
    from urllib.parse import urlsplit

    split = urlsplit(accepted)
    assert split.hostname == "shop.example" and split.path == "/checkout/return" and not split.fragment


def test_result_url_appends_only_payment_id_and_status():
    pid = uuid.uuid4()
    assert model.result_url("https://shop.example/r", pid, "approved") == (
        f"https://shop.example/r?payment_id={pid}&status=approved"
    )
    assert model.result_url("https://shop.example/r?order=4", pid, "declined") == (
        f"https://shop.example/r?order=4&payment_id={pid}&status=declined"
    )
    assert model.redirect_target(status="approved", return_url="R", decline_url="D") == "R"
    assert model.redirect_target(status="unknown", return_url="R", decline_url="D") == "R"
    for status in ("declined", "failed", "expired"):
        assert model.redirect_target(status=status, return_url="R", decline_url="D") == "D"


# --- form and expiry --------------------------------------------------------------------------------------
def test_form_fields_follow_section_6_2():
    redirect = model.callback_url("https://pay.example/", TXN, MERCHANT)
    assert redirect == f"https://pay.example/v1/epx/browser-post/callback?txn={TXN}&m={MERCHANT}"
    fields = model.form_fields(
        tac="<TAC>",
        merchant=KEY,
        tran_nbr=1234567890,
        amount_cents=0,
        mode=Mode.SAVE,
        redirect_url=redirect,
        txn_id=TXN,
        merchant_id=MERCHANT,
        customer_id=None,
    )
    assert fields["TRAN_CODE"] == "STORAGE" and fields["AMOUNT"] == "0.00" and fields["INDUSTRY_TYPE"] == "E"
    assert fields["REDIRECT_URL"] == redirect
    assert fields["REDIRECT_URL_DECLINE"] == fields["REDIRECT_URL_ERROR"] == redirect
    assert fields["USER_DATA_1"] == str(TXN) and fields["USER_DATA_3"] == str(MERCHANT)
    assert not {"ACCOUNT_NBR", "EXP_DATE", "CVV"} & set(fields)
    assert [Mode(m).tx_type for m in ("sale", "auth", "save")] == ["sale", "auth", "storage"]


def test_expiry_is_15_minutes_after_the_last_tac_plus_10_minutes_grace():
    issued = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    tac = model.tac_expires_at(issued)
    assert tac == issued + timedelta(minutes=15)
    assert model.session_expires_at(tac) == issued + timedelta(minutes=25)
    due = model.session_expires_at(tac)
    assert model.may_issue_tac(state="open", transaction_status="pending", expires_at=due, now=issued)
    assert not model.may_issue_tac(state="open", transaction_status="pending", expires_at=due, now=due)
    for state, status in (("completed", "pending"), ("open", "approved"), ("expired", "expired")):
        assert not model.may_issue_tac(state=state, transaction_status=status, expires_at=due, now=issued)
