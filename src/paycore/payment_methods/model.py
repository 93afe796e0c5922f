"""Saved payment methods: the record and the rules (pure: no I/O, no clock reads).

A payment method is a gateway token (BRIC) saved for one customer of one merchant:

* **card** — a Storage BRIC from a `CCE8` conversion (with its $0 account verification) or a
  Browser Post `STORAGE`; it is `verified` from the start. paycore keeps brand, last 4, expiry and
  the NTID; never a card number or a CVV.
* **ach** — a bank account given once by its numbers: the routing number is checked (ABA check
  digit), the account number goes to the gateway in the pre-note (and the storage request) and is
  then forgotten; paycore keeps the token, the last 4 and the routing number. The account is
  `pending` until its $0 pre-note has gone N banking days without a return (`calendar.py`), then
  `verified`; a pre-note return makes it `failed`.

Usability when paying (stable problem codes): deleted or another merchant's → 404
`payment_method_not_found`; inactive → 409 `payment_method_inactive`; expired card → 422
`payment_method_expired`; bank account not verified → 409 `payment_method_not_verified`.
"""

from __future__ import annotations

import enum
import re
import uuid
from datetime import datetime
from typing import Final, Literal

import msgspec

from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError

PaymentType = Literal["card", "ach"]
AccountType = Literal["checking", "savings"]
SecCode = Literal["PPD", "CCD", "WEB", "TEL"]
VerificationStatus = Literal["pending", "verified", "failed"]
BricKind = Literal["storage", "financial"]

# --- problem codes (stable, never renamed) ---------------------------------------------------------
PAYMENT_METHOD_NOT_FOUND = errors.register("payment_method_not_found", 404, "No such payment method")
PAYMENT_METHOD_INACTIVE = errors.register("payment_method_inactive", 409, "The payment method is inactive")
PAYMENT_METHOD_NOT_VERIFIED = errors.register(
    "payment_method_not_verified", 409, "The bank account is not verified yet"
)
PAYMENT_METHOD_VERIFICATION_FAILED = errors.register(
    "payment_method_verification_failed", 409, "The bank account failed verification"
)
PAYMENT_METHOD_EXPIRED = errors.register("payment_method_expired", 422, "The card has expired")
PAYMENT_METHOD_CUSTOMER_MISMATCH = errors.register(
    "payment_method_customer_mismatch", 422, "The payment method belongs to another customer"
)
PAYMENT_METHOD_LIMIT = errors.register(
    "payment_method_limit_reached", 409, "The customer has too many saved payment methods"
)
ACH_AUTH_NOT_SUPPORTED = errors.register(
    "ach_authorization_not_supported", 422, "A bank account can only be debited (capture: true)"
)
ROUTING_NUMBER_INVALID = errors.register(
    "routing_number_invalid", 422, "The routing number is not a valid ABA routing number"
)
ACCOUNT_NUMBER_INVALID = errors.register(
    "account_number_invalid", 422, "The bank account number must be 4-17 digits"
)
TOKEN_LOOKS_LIKE_CARD_NUMBER = errors.register(
    "token_looks_like_card_number",
    422,
    "The token looks like a card number: send the gateway token (BRIC), never a card number",
)
BANK_ACCOUNT_DECLINED = errors.register(
    "bank_account_declined", 402, "The bank account was refused by the gateway"
)

MAX_METHODS_PER_CUSTOMER: Final = 100
RETENTION_DAYS: Final = 90

_DIGITS: Final = re.compile(r"[0-9]+")


# --- the record ------------------------------------------------------------------------------------
class PaymentMethod(msgspec.Struct, frozen=True, kw_only=True):
    """A saved payment method as paycore reads it (shared through the cache: frozen).

    `bric` is the gateway token; `repr` never shows it."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    customer_id: str
    payment_type: str
    bric: str
    bric_kind: str
    is_default: bool
    is_active: bool
    verification_status: str
    card_brand: str | None = None
    card_last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    ntid: str | None = None
    account_type: str | None = None
    account_last4: str | None = None
    routing_number: str | None = None
    holder_name: str | None = None
    sec_code: str | None = None
    billing: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    prenote_transaction_id: uuid.UUID | None = None
    verified_at: datetime | None = None
    verification_failure_code: str | None = None
    return_count: int = 0
    deactivation_reason: str | None = None
    last_used_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    bric_expires_at: datetime | None = None  # a Financial BRIC kept as the token lapses (13 months)

    def __repr__(self) -> str:
        return (
            f"PaymentMethod(id={self.id}, type={self.payment_type}, active={self.is_active}, "
            f"verification={self.verification_status}, bric=[REDACTED])"
        )

    __str__ = __repr__

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


# --- bank accounts -------------------------------------------------------------------------------
def aba_checksum_ok(routing: str) -> bool:
    """ABA routing number check digit: 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) ≡ 0 (mod 10)."""
    if len(routing) != 9 or _DIGITS.fullmatch(routing) is None:
        return False
    weights = (3, 7, 1) * 3
    return sum(w * (ord(c) - 48) for w, c in zip(weights, routing, strict=True)) % 10 == 0


def validate_routing_number(routing: str) -> str:
    text = routing.strip()
    if not aba_checksum_ok(text):
        raise PaycoreError(ROUTING_NUMBER_INVALID, param="routing_number")
    return text


def validate_account_number(account: str) -> str:
    text = account.strip()
    if _DIGITS.fullmatch(text) is None or not 4 <= len(text) <= 17:
        raise PaycoreError(ACCOUNT_NUMBER_INVALID, param="account_number")
    return text


# --- cards ---------------------------------------------------------------------------------------
def _luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def looks_like_pan(value: str) -> bool:
    """True for 13-19 digits passing the Luhn check: a card number where a token should be.

    EPX BRICs are alphanumeric and about 20 characters, so a real token is never refused."""
    return _DIGITS.fullmatch(value) is not None and 13 <= len(value) <= 19 and _luhn_ok(value)


def refuse_pan_as_token(value: str | None, param: str = "token") -> None:
    """PCI: a card number sent as a token is refused before anything is stored or sent."""
    if value is not None and looks_like_pan(value):
        raise PaycoreError(TOKEN_LOOKS_LIKE_CARD_NUMBER, param=param)


def card_expired(exp_month: int | None, exp_year: int | None, now: datetime) -> bool:
    """A card is valid through the last day of its expiry month (UTC)."""
    if exp_month is None or exp_year is None:
        return False
    return (exp_year, exp_month) < (now.year, now.month)


def last4_of(masked: str | None) -> str | None:
    if not masked:
        return None
    digits = "".join(c for c in masked if c.isdigit())
    return digits[-4:] if len(digits) >= 4 else None


# --- usability -----------------------------------------------------------------------------------
def check_usable(
    method: PaymentMethod | None, merchant_id: uuid.UUID, now: datetime, *, customer_id: str | None = None
) -> PaymentMethod:
    """Raise the stable problem of a method that cannot be charged now; return it otherwise."""
    if method is None or method.merchant_id != merchant_id or method.deleted:
        raise PaycoreError(PAYMENT_METHOD_NOT_FOUND, param="payment_method_id")
    if customer_id is not None and customer_id != method.customer_id:
        raise PaycoreError(PAYMENT_METHOD_CUSTOMER_MISMATCH, param="customer_id")
    if method.verification_status == "failed":
        raise PaycoreError(
            PAYMENT_METHOD_VERIFICATION_FAILED,
            f"The bank account failed verification ({method.verification_failure_code or 'returned'})",
            param="payment_method_id",
        )
    if not method.is_active:
        raise PaycoreError(PAYMENT_METHOD_INACTIVE, param="payment_method_id")
    if method.payment_type == "card" and card_expired(method.exp_month, method.exp_year, now):
        raise PaycoreError(PAYMENT_METHOD_EXPIRED, param="payment_method_id")
    if method.payment_type == "ach" and method.bric_expires_at is not None and method.bric_expires_at <= now:
        raise PaycoreError(
            PAYMENT_METHOD_EXPIRED, "The bank account's gateway token has lapsed", param="payment_method_id"
        )
    if method.payment_type == "ach" and method.verification_status != "verified":
        raise PaycoreError(
            PAYMENT_METHOD_NOT_VERIFIED,
            "The bank account's pre-note has not cleared yet (3 banking days)",
            param="payment_method_id",
        )
    return method


def usable(method: PaymentMethod, now: datetime) -> bool:
    try:
        check_usable(method, method.merchant_id, now)
    except PaycoreError:
        return False
    return True


# --- ACH returns ---------------------------------------------------------------------------------
class ReturnClass(enum.StrEnum):
    """The `class` label of `ach_returns_total` and the NACHA return-rate families."""

    UNAUTHORIZED = "unauthorized"  # NACHA threshold 0.5 %
    ADMINISTRATIVE = "administrative"  # NACHA threshold 3 %
    OTHER = "other"  # counts towards the overall 15 %


UNAUTHORIZED_CODES: Final = frozenset({"R05", "R07", "R10", "R11", "R29", "R51"})
ADMINISTRATIVE_CODES: Final = frozenset({"R02", "R03", "R04"})
# epx-protocol.md §7.3: the account is unusable (closed, unknown, invalid, frozen, non-transaction)
ACCOUNT_INVALID_CODES: Final = frozenset(
    {"R02", "R03", "R04", "R12", "R13", "R14", "R15", "R16", "R20", "R28"}
)
NACHA_THRESHOLDS: Final = {"unauthorized": 0.005, "administrative": 0.03, "overall": 0.15}
_RETURN_CODE: Final = re.compile(r"R[0-9]{2}")
_CHANGE_CODE: Final = re.compile(r"C[0-9]{2}")
# NOCs that correct the account (C01 account number, C02 routing number, C03 both, C05 transaction
# code, i.e. checking vs savings, C06 account number and code, C07 all three). paycore holds only a
# gateway token bound to the old data (and the last 4), so it cannot apply them: the account must be
# collected again, which also validates it again as NACHA asks on a change of account number.
ACCOUNT_CHANGE_CODES: Final = frozenset({"C01", "C02", "C03", "C05", "C06", "C07"})


def return_class(code: str) -> ReturnClass:
    if code in UNAUTHORIZED_CODES:
        return ReturnClass.UNAUTHORIZED
    if code in ADMINISTRATIVE_CODES:
        return ReturnClass.ADMINISTRATIVE
    return ReturnClass.OTHER


def valid_return_code(code: str) -> bool:
    return _RETURN_CODE.fullmatch(code) is not None


def valid_change_code(code: str) -> bool:
    return _CHANGE_CODE.fullmatch(code) is not None


class ReturnAction(enum.StrEnum):
    FAIL_VERIFICATION = "fail_verification"  # a returned pre-note: the account is `failed`
    DEACTIVATE = "deactivate"  # a live entry returned: stop debiting the account
    COUNT = "count"  # counted; below the deactivation threshold
    RECORD = "record"  # kept for reporting only (no matching method, an informational NOC)


class ReturnDecision(msgspec.Struct, frozen=True):
    action: ReturnAction
    reason: str | None = None  # deactivation_reason


def decide_return(
    *,
    entry: str,
    code: str | None,
    returns_after: int,
    threshold: int,
    method_found: bool,
    change_code: str | None = None,
    verified: bool = False,
) -> ReturnDecision:
    """What a return (`code`) or a notification of change (`change_code`) does to its payment method.

    * any return on the pre-note fails verification (§7.2; R02, R03, R04, R20 are the usual ones);
    * on a live debit or credit: an account-invalid or unauthorised code deactivates at once, and
      any code deactivates once the method has `threshold` returns (`excessive_returns`);
    * a NOC that corrects the account (C01–C03, C05–C07) cannot be applied to a token: on a pending
      pre-note it fails verification (§7.2: verified only "with no return and no NOC"), otherwise it
      deactivates the account, so no further entry goes out with the wrong data (§7.2: the change is
      due before the next entry);
    * any other NOC (C08 and up: addenda, individual id…), and anything that matches no payment
      method, is only recorded.
    """
    if not method_found:
        return ReturnDecision(ReturnAction.RECORD)
    if code is None:
        if change_code in ACCOUNT_CHANGE_CODES and entry in ("prenote", "debit"):
            if entry == "prenote" and not verified:
                return ReturnDecision(ReturnAction.FAIL_VERIFICATION, "notification_of_change")
            return ReturnDecision(ReturnAction.DEACTIVATE, "notification_of_change")
        return ReturnDecision(ReturnAction.RECORD)
    if entry == "prenote":
        return ReturnDecision(ReturnAction.FAIL_VERIFICATION, "verification_failed")
    if code in ACCOUNT_INVALID_CODES:
        return ReturnDecision(ReturnAction.DEACTIVATE, "account_invalid")
    if code in UNAUTHORIZED_CODES:
        return ReturnDecision(ReturnAction.DEACTIVATE, "unauthorized_return")
    if returns_after >= threshold:
        return ReturnDecision(ReturnAction.DEACTIVATE, "excessive_returns")
    return ReturnDecision(ReturnAction.COUNT)


def return_rates(debits: int, unauthorized: int, administrative: int, total: int) -> dict[str, float]:
    """Return rates over a window (NACHA: returned debits ÷ debits). 0 when nothing was debited."""
    if debits <= 0:
        return {"unauthorized": 0.0, "administrative": 0.0, "overall": 0.0}
    return {
        "unauthorized": unauthorized / debits,
        "administrative": administrative / debits,
        "overall": total / debits,
    }
