"""Pure rules of saved payment methods: ABA check digit, card-number detection, usability codes,
ACH return decisions and return rates, masked records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.kernel.errors import PaycoreError
from paycore.payment_methods import model, schemas
from paycore.payment_methods.model import PaymentMethod, ReturnAction
from paycore.payment_methods.service import _add_months, _matches

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MERCHANT = uuid.UUID("0190a0a0-0000-7000-8000-000000000001")


def method(**overrides) -> PaymentMethod:
    values = {
        "id": uuid.uuid4(),
        "merchant_id": MERCHANT,
        "customer_id": "cus_1",
        "payment_type": "card",
        "bric": "09LMQ8YKX6YTRR5TEUW1",
        "bric_kind": "storage",
        "is_default": False,
        "is_active": True,
        "verification_status": "verified",
        "exp_month": 12,
        "exp_year": 2030,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(overrides)
    return PaymentMethod(**values)


@pytest.mark.parametrize("routing", ["021000021", "011000015", "121000358", "026009593"])
def test_real_routing_numbers_pass_the_aba_check(routing):
    assert model.aba_checksum_ok(routing)
    assert model.validate_routing_number(f" {routing} ") == routing


@pytest.mark.parametrize("routing", ["021000022", "123456789", "02100002", "0210000210", "02100002a", ""])
def test_bad_routing_numbers_are_refused_with_a_stable_code(routing):
    assert not model.aba_checksum_ok(routing)
    with pytest.raises(PaycoreError) as info:
        model.validate_routing_number(routing)
    assert info.value.code == "routing_number_invalid" and info.value.status == 422


@given(position=st.integers(0, 8), delta=st.integers(1, 9))
def test_any_single_digit_error_breaks_the_check_digit(position, delta):
    routing = list("021000021")
    routing[position] = str((int(routing[position]) + delta) % 10)
    assert not model.aba_checksum_ok("".join(routing))


@pytest.mark.parametrize(("account", "ok"), [("1234", True), ("12345678901234567", True), ("123", False),
                                             ("123456789012345678", False), ("12-34", False)])  # fmt: skip
def test_account_numbers_are_4_to_17_digits(account, ok):
    if ok:
        assert model.validate_account_number(account) == account
    else:
        with pytest.raises(PaycoreError) as info:
            model.validate_account_number(account)
        assert info.value.code == "account_number_invalid"


@pytest.mark.parametrize(
    ("value", "pan"),
    [
        ("4111111111111111", True),
        ("5454545454545454", True),
        ("371449635398431", True),
        ("4111111111111112", False),  # Luhn fails
        ("09LMQ8YKX6YTRR5TEUW1", False),  # a BRIC
        ("41111111111111111111", False),  # 20 digits: not a card number length
        ("411111111111", False),  # 12 digits
    ],
)
def test_card_numbers_are_recognised_where_a_token_belongs(value, pan):
    assert model.looks_like_pan(value) is pan
    if pan:
        with pytest.raises(PaycoreError) as info:
            model.refuse_pan_as_token(value)
        assert info.value.code == "token_looks_like_card_number"
        assert value not in str(info.value.problem(None))
    else:
        model.refuse_pan_as_token(value)


def test_card_expiry_is_the_end_of_its_month():
    assert not model.card_expired(3, 2026, NOW)
    assert model.card_expired(2, 2026, NOW)
    assert model.card_expired(12, 2025, NOW)
    assert not model.card_expired(None, None, NOW)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"merchant_id": uuid.uuid4()}, "payment_method_not_found"),
        ({"deleted_at": NOW}, "payment_method_not_found"),
        ({"is_active": False}, "payment_method_inactive"),
        ({"exp_month": 1, "exp_year": 2026}, "payment_method_expired"),
        ({"payment_type": "ach", "verification_status": "pending"}, "payment_method_not_verified"),
        ({"payment_type": "ach", "verification_status": "failed", "is_active": False},
         "payment_method_verification_failed"),
    ],
)  # fmt: skip
def test_unusable_methods_have_stable_codes(overrides, code):
    with pytest.raises(PaycoreError) as info:
        model.check_usable(method(**overrides), MERCHANT, NOW)
    assert info.value.code == code


def test_usable_methods_pass_and_customer_must_match():
    card = method()
    assert model.check_usable(card, MERCHANT, NOW) is card
    bank = method(payment_type="ach", exp_month=None, exp_year=None)
    assert model.check_usable(bank, MERCHANT, NOW) is bank
    assert model.check_usable(card, MERCHANT, NOW, customer_id="cus_1") is card
    with pytest.raises(PaycoreError) as info:
        model.check_usable(card, MERCHANT, NOW, customer_id="cus_2")
    assert info.value.code == "payment_method_customer_mismatch"
    with pytest.raises(PaycoreError) as info:
        model.check_usable(None, MERCHANT, NOW)
    assert info.value.code == "payment_method_not_found"


@pytest.mark.parametrize(
    ("entry", "code", "after", "found", "action", "reason"),
    [
        ("prenote", "R03", 1, True, ReturnAction.FAIL_VERIFICATION, "verification_failed"),
        ("prenote", "R02", 1, True, ReturnAction.FAIL_VERIFICATION, "verification_failed"),
        ("prenote", "R20", 1, True, ReturnAction.FAIL_VERIFICATION, "verification_failed"),
        ("debit", "R01", 1, True, ReturnAction.COUNT, None),
        ("debit", "R01", 2, True, ReturnAction.DEACTIVATE, "excessive_returns"),
        ("debit", "R09", 5, True, ReturnAction.DEACTIVATE, "excessive_returns"),
        ("debit", "R02", 1, True, ReturnAction.DEACTIVATE, "account_invalid"),
        ("debit", "R10", 1, True, ReturnAction.DEACTIVATE, "unauthorized_return"),
        ("debit", "R07", 1, True, ReturnAction.DEACTIVATE, "unauthorized_return"),
        ("debit", "R01", 1, False, ReturnAction.RECORD, None),
        ("debit", None, 1, True, ReturnAction.RECORD, None),  # a NOC without a change code
        ("credit", "R23", 1, False, ReturnAction.RECORD, None),
    ],
)
def test_return_decisions(entry, code, after, found, action, reason):
    decision = model.decide_return(
        entry=entry, code=code, returns_after=after, threshold=2, method_found=found
    )
    assert (decision.action, decision.reason) == (action, reason)


@pytest.mark.parametrize(
    ("entry", "change", "verified", "found", "action", "reason"),
    [
        ("prenote", "C01", False, True, ReturnAction.FAIL_VERIFICATION, "notification_of_change"),
        ("prenote", "C02", False, True, ReturnAction.FAIL_VERIFICATION, "notification_of_change"),
        ("prenote", "C03", False, True, ReturnAction.FAIL_VERIFICATION, "notification_of_change"),
        ("prenote", "C06", False, True, ReturnAction.FAIL_VERIFICATION, "notification_of_change"),
        ("prenote", "C07", False, True, ReturnAction.FAIL_VERIFICATION, "notification_of_change"),
        # a NOC on the pre-note that arrives after verification: the account is stopped, not "failed"
        ("prenote", "C01", True, True, ReturnAction.DEACTIVATE, "notification_of_change"),
        ("debit", "C01", True, True, ReturnAction.DEACTIVATE, "notification_of_change"),
        ("debit", "C07", True, True, ReturnAction.DEACTIVATE, "notification_of_change"),
        ("prenote", "C05", False, True, ReturnAction.FAIL_VERIFICATION, "notification_of_change"),
        ("debit", "C05", True, True, ReturnAction.DEACTIVATE, "notification_of_change"),
        ("debit", "C09", True, True, ReturnAction.RECORD, None),  # individual id: informational
        ("debit", "C13", True, True, ReturnAction.RECORD, None),
        ("credit", "C01", True, True, ReturnAction.RECORD, None),
        ("debit", "C01", True, False, ReturnAction.RECORD, None),
    ],
)
def test_noc_decisions(entry, change, verified, found, action, reason):
    decision = model.decide_return(
        entry=entry,
        code=None,
        change_code=change,
        verified=verified,
        returns_after=0,
        threshold=2,
        method_found=found,
    )
    assert (decision.action, decision.reason) == (action, reason)


def test_return_classes_follow_nacha():
    assert {model.return_class(c) for c in ("R05", "R07", "R10", "R11", "R29", "R51")} == {
        model.ReturnClass.UNAUTHORIZED
    }
    assert {model.return_class(c) for c in ("R02", "R03", "R04")} == {model.ReturnClass.ADMINISTRATIVE}
    assert model.return_class("R01") is model.ReturnClass.OTHER
    assert model.NACHA_THRESHOLDS == {"unauthorized": 0.005, "administrative": 0.03, "overall": 0.15}


def test_return_rates():
    assert model.return_rates(0, 0, 0, 0) == {"unauthorized": 0.0, "administrative": 0.0, "overall": 0.0}
    assert model.return_rates(200, 1, 4, 10) == {
        "unauthorized": 0.005,
        "administrative": 0.02,
        "overall": 0.05,
    }


def test_records_never_show_the_token_or_the_account_number():
    pm = method()
    assert pm.bric not in repr(pm) and pm.bric not in str(pm)
    body = schemas.SaveBankAccount(
        account_type="checking",
        routing_number="021000021",
        account_number="4099992718",
        holder=schemas.HolderIn(first_name="Ada", last_name="Lovelace"),
    )
    assert "4099992718" not in repr(body) and "4099992718" not in str(body)


def test_rendering_never_contains_the_token():
    out = schemas.method_out(method(), livemode=False)
    assert b"09LMQ8YKX6YTRR5TEUW1" not in msgspec.json.encode(out)


def test_list_filters():
    card, bank = method(), method(payment_type="ach", verification_status="pending")
    assert [_matches(x, "card", None) for x in (card, bank)] == [True, False]
    assert [_matches(x, None, "pending") for x in (card, bank)] == [False, True]
    assert [_matches(x, None, "active") for x in (card, bank)] == [True, True]
    assert not _matches(method(is_active=False), None, "active")


def test_add_months_clamps_to_month_end():
    assert _add_months(datetime(2026, 1, 31, tzinfo=UTC), 13) == datetime(2027, 2, 28, tzinfo=UTC)
    assert _add_months(datetime(2026, 3, 15, 9, tzinfo=UTC), 13) == datetime(2027, 4, 15, 9, tzinfo=UTC)
    assert _add_months(datetime(2026, 11, 30, tzinfo=UTC), 1) == datetime(2026, 12, 30, tzinfo=UTC)
