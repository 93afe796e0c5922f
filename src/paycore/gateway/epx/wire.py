"""EPX Server Post wire format: request constructors, the form encoder and the response parser.

Pure module (ARCH-2.2, ARCH-5.1, MEM-7..13, P3-1, P3-2): no I/O, no clock reads, no logging.

* One constructor per operation (`for_sale`, `for_capture`, ...). Every argument is keyword-only;
  cross-field rules are checked here (a capture needs the auth's BRIC, a sale either a Storage BRIC
  or a keyed card, ...) and a violation raises `RequestInvalid`. The result is a frozen
  `GatewayRequest` whose `fields` are in wire order and whose `repr` masks card, bank and BRIC
  values.
* `encode()` turns a request into the form body in one pass; the client sends those bytes, and
  resends the *same* bytes on a retry.
* `parse_response()` picks XML or key/value by the first non-blank byte; XML goes through
  `defusedxml` with DTDs forbidden, so entity expansion ("billion laughs") is refused. Any malformed
  input raises `ProtocolError` (its message never contains body content).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
import xml.etree.ElementTree as StdET
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode

import defusedxml
import defusedxml.ElementTree as SafeET
import msgspec

from paycore.gateway.epx import codes
from paycore.gateway.port import GatewayRequest, GatewayResponse, MerchantKey, Operation
from paycore.kernel.money import to_gateway_amount

__all__ = [
    "AccountType",
    "BankAccount",
    "Billing",
    "KeyedCard",
    "ProtocolError",
    "RequestInvalid",
    "SecCode",
    "batch_id",
    "encode",
    "for_ach_credit",
    "for_ach_debit",
    "for_ach_prenote",
    "for_ach_storage",
    "for_ach_void",
    "for_auth",
    "for_capture",
    "for_card_storage",
    "for_refund",
    "for_sale",
    "for_void",
    "is_zero_dollar",
    "local_date_time",
    "normalize_card_brand",
    "parse_response",
    "payment_type",
    "tran_nbr_for",
]

AccountType = Literal["checking", "savings"]
SecCode = Literal["PPD", "CCD", "WEB", "TEL"]


def stored_sec_code(value: str | None) -> SecCode:
    """The SEC code stored with a bank account; `WEB` (paycore's default) when unknown."""
    if value == "PPD":
        return "PPD"
    if value == "CCD":
        return "CCD"
    if value == "TEL":
        return "TEL"
    return "WEB"


MitIndicator = Literal["RB", "IP"]

TRAN_NBR_MIN: Final = 1_000_000_000
TRAN_NBR_MAX: Final = 9_999_999_999


class RequestInvalid(ValueError):
    """A request violates a wire or cross-field rule; nothing was sent. `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ProtocolError(ValueError):
    """The gateway's answer cannot be understood. `reason` is a stable, body-free code."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


# --- instruments -----------------------------------------------------------------------------------
class KeyedCard(msgspec.Struct, frozen=True, kw_only=True):
    """A raw card (`CARD_ENT_METH=E`). paycore prefers Browser Post, so a PAN normally never reaches
    this module; the keyed path exists for the simulator and for merchants allowed to key cards.
    Never stored, never logged: `repr` shows the last four digits only."""

    pan: str
    exp_yymm: str
    cvv2: str | None = None

    def __repr__(self) -> str:
        return f"KeyedCard(pan=****{self.pan[-4:]}, exp=[REDACTED], cvv2=[REDACTED])"

    __str__ = __repr__


class BankAccount(msgspec.Struct, frozen=True, kw_only=True):
    """A raw bank account (`CARD_ENT_METH=X`). `repr` masks both numbers."""

    account_nbr: str
    routing_nbr: str

    def __repr__(self) -> str:
        return f"BankAccount(account=****{self.account_nbr[-4:]}, routing=[REDACTED])"

    __str__ = __repr__


class Billing(msgspec.Struct, frozen=True, kw_only=True):
    """Account-holder and AVS data. Values are transliterated to ASCII on the wire."""

    first_name: str | None = None
    last_name: str | None = None
    address: str | None = None
    city: str | None = None
    state: str | None = None
    zip_code: str | None = None


# --- TRAN_NBR, dates ---------------------------------------------------------------------------------
def tran_nbr_for(txn_id: uuid.UUID, k: int = 0) -> int:
    """The deterministic 10-digit TRAN_NBR of a transaction (epx-protocol.md §2.4).

    `k` is bumped by the caller on a `UNIQUE (merchant_id, tran_nbr)` conflict (0 ≤ k ≤ 255).
    """
    if isinstance(k, bool) or not 0 <= k <= 255:
        raise ValueError("k must be between 0 and 255")
    digest = hashlib.sha256(b"paycore-tran-nbr:" + txn_id.bytes + bytes([k])).digest()
    return TRAN_NBR_MIN + int.from_bytes(digest[:8], "big") % 9_000_000_000


def parse_tran_nbr(value: int | str | None) -> int | None:
    """A TRAN_NBR as reports echo it (a JSON number or text); None when it cannot be one. Longer
    than 18 digits it could not even be stored (`bigint`), let alone match."""
    if value is None:
        return None
    text = str(value).strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


def _local(now: datetime, tz: tzinfo) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("naive datetime: pass an aware timestamp")
    return now.astimezone(tz)


def local_date_time(now: datetime, tz: tzinfo = UTC) -> tuple[str, str]:
    """(`LOCAL_DATE` MMDDYY, `LOCAL_TIME` HHMMSS) of `now` in the merchant's zone (§2.5)."""
    t = _local(now, tz)
    return f"{t.month:02d}{t.day:02d}{t.year % 100:02d}", f"{t.hour:02d}{t.minute:02d}{t.second:02d}"


def batch_id(now: datetime, tz: tzinfo = UTC) -> str:
    """`BATCH_ID`: the merchant's business date as YYYYMMDD (§2.5)."""
    t = _local(now, tz)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}"


# --- field checks ---------------------------------------------------------------------------------
_DIGITS: Final = re.compile(r"[0-9]+")
_BRIC: Final = re.compile(r"[A-Za-z0-9]{1,40}")
_YYMM: Final = re.compile(r"[0-9]{2}(0[1-9]|1[0-2])")
_STATE: Final = re.compile(r"[A-Z]{2}")
_ZIP: Final = re.compile(r"[A-Za-z0-9 -]{1,10}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_LIMITS: Final = {"FIRST_NAME": 50, "LAST_NAME": 50, "ADDRESS": 100, "CITY": 50, "USER_DATA": 100}
_COF_PERIODS: Final = frozenset({0, 13, 18, 24})
_SEC_CODES: Final = frozenset({"PPD", "CCD", "WEB", "TEL"})


def _check_merchant(merchant: MerchantKey) -> None:
    for name, value in (
        ("CUST_NBR", merchant.cust_nbr),
        ("MERCH_NBR", merchant.merch_nbr),
        ("DBA_NBR", merchant.dba_nbr),
        ("TERMINAL_NBR", merchant.terminal_nbr),
    ):
        if not isinstance(value, str) or _DIGITS.fullmatch(value) is None:
            raise RequestInvalid(name, "the 4-part merchant key must be numeric strings")


def _check_tran_nbr(tran_nbr: int) -> None:
    if isinstance(tran_nbr, bool) or not isinstance(tran_nbr, int):
        raise RequestInvalid("TRAN_NBR", "must be an integer")
    if not TRAN_NBR_MIN <= tran_nbr <= TRAN_NBR_MAX:
        raise RequestInvalid("TRAN_NBR", "paycore sends exactly 10 digits with no leading zero")


def _check_amount(amount_cents: int, *, field: str = "AMOUNT") -> str:
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise RequestInvalid(field, "amounts are integer cents")
    if amount_cents <= 0:
        raise RequestInvalid(field, "must be greater than zero")
    if amount_cents >= 10**14:
        raise RequestInvalid(field, "too large")
    return to_gateway_amount(amount_cents)


def _check_bric(value: str | None, field: str = "ORIG_AUTH_GUID") -> str:
    if not value or not isinstance(value, str) or _BRIC.fullmatch(value) is None:
        raise RequestInvalid(field, "a BRIC of 1-40 alphanumeric characters is required")
    return value


def _luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _aba_ok(routing: str) -> bool:
    d = [ord(c) - 48 for c in routing]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8])) % 10 == 0


def _card_fields(card: KeyedCard) -> list[tuple[str, str]]:
    if _DIGITS.fullmatch(card.pan) is None or not 13 <= len(card.pan) <= 19 or not _luhn_ok(card.pan):
        raise RequestInvalid("ACCOUNT_NBR", "a card number is 13-19 digits and passes the Luhn check")
    if _YYMM.fullmatch(card.exp_yymm) is None:
        raise RequestInvalid("EXP_DATE", "expiry is YYMM")
    out = [("ACCOUNT_NBR", card.pan), ("EXP_DATE", card.exp_yymm)]
    if card.cvv2 is not None:
        if _DIGITS.fullmatch(card.cvv2) is None or len(card.cvv2) not in (3, 4):
            raise RequestInvalid("CVV2", "3 digits (Amex 4)")
        out.append(("CVV2", card.cvv2))
    return out


def _bank_fields(account: BankAccount) -> list[tuple[str, str]]:
    if _DIGITS.fullmatch(account.account_nbr) is None or not 4 <= len(account.account_nbr) <= 17:
        raise RequestInvalid("ACCOUNT_NBR", "a bank account number is 4-17 digits")
    if _DIGITS.fullmatch(account.routing_nbr) is None or len(account.routing_nbr) != 9:
        raise RequestInvalid("ROUTING_NBR", "a routing number is 9 digits")
    if not _aba_ok(account.routing_nbr):
        raise RequestInvalid("ROUTING_NBR", "fails the ABA checksum")
    return [("ACCOUNT_NBR", account.account_nbr), ("ROUTING_NBR", account.routing_nbr)]


def _ascii(value: str, field: str, limit: int) -> str | None:
    """Transliterate to printable ASCII (§1.2); None when nothing remains."""
    text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > limit:
        raise RequestInvalid(field, f"at most {limit} characters")
    return text or None


def _billing_fields(billing: Billing | None, *, names_required: bool = False) -> list[tuple[str, str]]:
    if billing is None:
        if names_required:
            raise RequestInvalid("FIRST_NAME", "the account holder's name is required")
        return []
    out: list[tuple[str, str]] = []
    first = _ascii(billing.first_name, "FIRST_NAME", _LIMITS["FIRST_NAME"]) if billing.first_name else None
    last = _ascii(billing.last_name, "LAST_NAME", _LIMITS["LAST_NAME"]) if billing.last_name else None
    if names_required and (first is None or last is None):
        raise RequestInvalid("FIRST_NAME" if first is None else "LAST_NAME", "required for a keyed account")
    if first:
        out.append(("FIRST_NAME", first))
    if last:
        out.append(("LAST_NAME", last))
    if billing.address:
        address = _ascii(billing.address, "ADDRESS", _LIMITS["ADDRESS"])
        if address:
            out.append(("ADDRESS", address))
    if billing.city:
        city = _ascii(billing.city, "CITY", _LIMITS["CITY"])
        if city:
            out.append(("CITY", city))
    if billing.state:
        state = billing.state.strip().upper()
        if _STATE.fullmatch(state) is None:
            raise RequestInvalid("STATE", "two letters")
        out.append(("STATE", state))
    if billing.zip_code:
        zip_code = billing.zip_code.strip()
        if _ZIP.fullmatch(zip_code) is None:
            raise RequestInvalid("ZIP_CODE", "at most 10 letters, digits, spaces or dashes")
        out.append(("ZIP_CODE", zip_code))
    return out


def _user_data_fields(user_data: Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(user_data, str):
        raise RequestInvalid("USER_DATA_1", "pass a sequence of up to three strings")
    if len(user_data) > 3:
        raise RequestInvalid("USER_DATA_4", "at most three USER_DATA fields")
    out: list[tuple[str, str]] = []
    for index, value in enumerate(user_data, start=1):
        text = _ascii(value, f"USER_DATA_{index}", _LIMITS["USER_DATA"]) if value else None
        if text:
            out.append((f"USER_DATA_{index}", text))
    return out


def _sec_code(sec_code: str) -> str:
    if sec_code not in _SEC_CODES:
        raise RequestInvalid("STD_ENTRY_CLASS", "one of PPD, CCD, WEB, TEL")
    return sec_code


def _ach_code(account_type: str, suffix: str) -> str:
    if account_type == "checking":
        return "CKC" + suffix
    if account_type == "savings":
        return "CKS" + suffix
    raise RequestInvalid("TRAN_TYPE", "account_type is checking or savings")


def _build(
    operation: Operation,
    *,
    merchant: MerchantKey,
    tran_type: str,
    tran_nbr: int,
    amount: str,
    amount_cents: int,
    at: datetime,
    tz: tzinfo,
    body: Iterable[tuple[str, str]],
    user_data: Sequence[str],
) -> GatewayRequest:
    _check_merchant(merchant)
    _check_tran_nbr(tran_nbr)
    local_date, local_time = local_date_time(at, tz)
    fields = (
        ("CUST_NBR", merchant.cust_nbr),
        ("MERCH_NBR", merchant.merch_nbr),
        ("DBA_NBR", merchant.dba_nbr),
        ("TERMINAL_NBR", merchant.terminal_nbr),
        ("TRAN_TYPE", tran_type),
        ("AMOUNT", amount),
        ("TRAN_NBR", str(tran_nbr)),
        ("BATCH_ID", batch_id(at, tz)),
        ("LOCAL_DATE", local_date),
        ("LOCAL_TIME", local_time),
        *body,
        *_user_data_fields(user_data),
    )
    return GatewayRequest(
        operation=operation,
        merchant=merchant,
        tran_type=tran_type,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        fields=fields,
    )


# --- constructors: cards ------------------------------------------------------------------------
def _card_purchase(
    operation: Operation,
    tran_type: str,
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    at: datetime,
    tz: tzinfo,
    storage_bric: str | None,
    card: KeyedCard | None,
    billing: Billing | None,
    mit: MitIndicator | None,
    orig_auth_tran_ident: str | None,
    orig_auth_amount_cents: int | None,
    user_data: Sequence[str],
) -> GatewayRequest:
    amount = _check_amount(amount_cents)
    if (storage_bric is None) == (card is None):
        raise RequestInvalid("ORIG_AUTH_GUID", "give exactly one of storage_bric or card")
    body: list[tuple[str, str]]
    if storage_bric is not None:
        body = [("ORIG_AUTH_GUID", _check_bric(storage_bric))]
        if tran_type == "CCE1":  # token CCE2 went through without CARD_ENT_METH (§2.6)
            body.append(("CARD_ENT_METH", "Z"))
    else:
        assert card is not None
        if mit is not None:
            raise RequestInvalid("ACI_EXT", "a merchant-initiated charge uses a Storage BRIC")
        body = [*_card_fields(card), ("CARD_ENT_METH", "E")]
    body.append(("INDUSTRY_TYPE", "E"))
    if mit is not None:
        if mit not in ("RB", "IP"):
            raise RequestInvalid("ACI_EXT", "RB (recurring) or IP (instalment)")
        body.append(("ACI_EXT", mit))
        if orig_auth_tran_ident:
            if len(orig_auth_tran_ident) > 15 or _BRIC.fullmatch(orig_auth_tran_ident) is None:
                raise RequestInvalid("ORIG_AUTH_TRAN_IDENT", "an NTID of at most 15 alphanumerics")
            body.append(("ORIG_AUTH_TRAN_IDENT", orig_auth_tran_ident))
        if orig_auth_amount_cents is not None:
            body.append(("ORIG_AUTH_AMOUNT", _check_amount(orig_auth_amount_cents, field="ORIG_AUTH_AMOUNT")))
    elif orig_auth_tran_ident or orig_auth_amount_cents is not None:
        raise RequestInvalid("ACI_EXT", "ORIG_AUTH_TRAN_IDENT/ORIG_AUTH_AMOUNT belong to a MIT (mit=RB|IP)")
    body.extend(_billing_fields(billing))
    return _build(
        operation,
        merchant=merchant,
        tran_type=tran_type,
        tran_nbr=tran_nbr,
        amount=amount,
        amount_cents=amount_cents,
        at=at,
        tz=tz,
        body=body,
        user_data=user_data,
    )


def for_sale(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    at: datetime,
    tz: tzinfo = UTC,
    storage_bric: str | None = None,
    card: KeyedCard | None = None,
    billing: Billing | None = None,
    mit: MitIndicator | None = None,
    orig_auth_tran_ident: str | None = None,
    orig_auth_amount_cents: int | None = None,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CCE1` card sale, on a Storage BRIC (`CARD_ENT_METH=Z`) or a keyed card (`E`).

    A recurring/instalment MIT sets `mit` (`ACI_EXT`) and, when known, the original CIT's NTID and
    amount; it must use a Storage BRIC.
    """
    return _card_purchase(
        Operation.SALE,
        "CCE1",
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        at=at,
        tz=tz,
        storage_bric=storage_bric,
        card=card,
        billing=billing,
        mit=mit,
        orig_auth_tran_ident=orig_auth_tran_ident,
        orig_auth_amount_cents=orig_auth_amount_cents,
        user_data=user_data,
    )


def for_auth(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    at: datetime,
    tz: tzinfo = UTC,
    storage_bric: str | None = None,
    card: KeyedCard | None = None,
    billing: Billing | None = None,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CCE2` authorisation only, on a Storage BRIC (no `CARD_ENT_METH`, as seen working) or a keyed card."""
    return _card_purchase(
        Operation.AUTH,
        "CCE2",
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        at=at,
        tz=tz,
        storage_bric=storage_bric,
        card=card,
        billing=billing,
        mit=None,
        orig_auth_tran_ident=None,
        orig_auth_amount_cents=None,
        user_data=user_data,
    )


def _follow_on(
    operation: Operation,
    tran_type: str,
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    bric: str | None,
    at: datetime,
    tz: tzinfo,
    user_data: Sequence[str],
) -> GatewayRequest:
    amount = _check_amount(amount_cents)
    return _build(
        operation,
        merchant=merchant,
        tran_type=tran_type,
        tran_nbr=tran_nbr,
        amount=amount,
        amount_cents=amount_cents,
        at=at,
        tz=tz,
        body=(("ORIG_AUTH_GUID", _check_bric(bric)),),
        user_data=user_data,
    )


def for_capture(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    auth_bric: str,
    at: datetime,
    tz: tzinfo = UTC,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CCE4` capture of an authorisation: `ORIG_AUTH_GUID` is the **auth's** BRIC."""
    return _follow_on(
        Operation.CAPTURE,
        "CCE4",
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        bric=auth_bric,
        at=at,
        tz=tz,
        user_data=user_data,
    )


def for_refund(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    original_bric: str,
    at: datetime,
    tz: tzinfo = UTC,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CCE9` refund: `ORIG_AUTH_GUID` is the SALE's BRIC, or the latest CAPTURE's."""
    return _follow_on(
        Operation.REFUND,
        "CCE9",
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        bric=original_bric,
        at=at,
        tz=tz,
        user_data=user_data,
    )


def for_void(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    original_bric: str,
    at: datetime,
    tz: tzinfo = UTC,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CCEX` void of an unsettled AUTH or SALE, for its full original amount."""
    return _follow_on(
        Operation.VOID,
        "CCEX",
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        bric=original_bric,
        at=at,
        tz=tz,
        user_data=user_data,
    )


def for_card_storage(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    at: datetime,
    tz: tzinfo = UTC,
    source_bric: str | None = None,
    card: KeyedCard | None = None,
    billing: Billing | None = None,
    cof_period: int | None = None,
    recurring: bool = False,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CCE8` card storage with a $0 verification (§4.2), `AMOUNT=0.00`.

    `source_bric` is a Financial BRIC to convert (or a Storage BRIC to update); `card` is the keyed
    alternative. `cof_period` is 0 (no expiry), 13, 18 or 24 months.
    """
    if (source_bric is None) == (card is None):
        raise RequestInvalid("ORIG_AUTH_GUID", "give exactly one of source_bric or card")
    body: list[tuple[str, str]]
    if source_bric is not None:
        body = [("ORIG_AUTH_GUID", _check_bric(source_bric)), ("CARD_ENT_METH", "Z")]
    else:
        assert card is not None
        body = [*_card_fields(card), ("CARD_ENT_METH", "E")]
    body.append(("INDUSTRY_TYPE", "E"))
    body.extend(_billing_fields(billing))
    if cof_period is not None:
        if isinstance(cof_period, bool) or cof_period not in _COF_PERIODS:
            raise RequestInvalid("COF_PERIOD", "0, 13, 18 or 24")
        body.append(("COF_PERIOD", str(cof_period)))
    if recurring:
        body.append(("ACI_EXT", "RB"))
    return _build(
        Operation.CARD_STORAGE,
        merchant=merchant,
        tran_type="CCE8",
        tran_nbr=tran_nbr,
        amount="0.00",
        amount_cents=0,
        at=at,
        tz=tz,
        body=body,
        user_data=user_data,
    )


# --- constructors: ACH --------------------------------------------------------------------------
def for_ach_prenote(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    account_type: AccountType,
    at: datetime,
    tz: tzinfo = UTC,
    account: BankAccount | None = None,
    storage_bric: str | None = None,
    holder: Billing | None = None,
    sec_code: SecCode = "WEB",
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CKC0`/`CKS0` $0 pre-note debit: a keyed account (`X`, holder name required) or a stored ACH BRIC."""
    tran_type = _ach_code(account_type, "0")
    if (account is None) == (storage_bric is None):
        raise RequestInvalid("ACCOUNT_NBR", "give exactly one of account or storage_bric")
    body: list[tuple[str, str]]
    if account is not None:
        body = [*_bank_fields(account), *_billing_fields(holder, names_required=True), ("CARD_ENT_METH", "X")]
    else:
        body = [("ORIG_AUTH_GUID", _check_bric(storage_bric)), ("CARD_ENT_METH", "Z")]
        body.extend(_billing_fields(holder))
    body.append(("INDUSTRY_TYPE", "E"))
    body.append(("STD_ENTRY_CLASS", _sec_code(sec_code)))
    return _build(
        Operation.ACH_PRENOTE,
        merchant=merchant,
        tran_type=tran_type,
        tran_nbr=tran_nbr,
        amount="0.00",
        amount_cents=0,
        at=at,
        tz=tz,
        body=body,
        user_data=user_data,
    )


def for_ach_debit(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    storage_bric: str,
    account_type: AccountType,
    at: datetime,
    tz: tzinfo = UTC,
    sec_code: SecCode = "WEB",
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CKC2`/`CKS2` ACH debit on an ACH Storage BRIC (`CARD_ENT_METH=Z`)."""
    tran_type = _ach_code(account_type, "2")
    amount = _check_amount(amount_cents)
    body = (
        ("ORIG_AUTH_GUID", _check_bric(storage_bric)),
        ("CARD_ENT_METH", "Z"),
        ("INDUSTRY_TYPE", "E"),
        ("STD_ENTRY_CLASS", _sec_code(sec_code)),
    )
    return _build(
        Operation.ACH_DEBIT,
        merchant=merchant,
        tran_type=tran_type,
        tran_nbr=tran_nbr,
        amount=amount,
        amount_cents=amount_cents,
        at=at,
        tz=tz,
        body=body,
        user_data=user_data,
    )


def for_ach_credit(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    original_bric: str,
    account_type: AccountType,
    at: datetime,
    tz: tzinfo = UTC,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CKC3`/`CKS3` ACH credit: the debit's BRIC (refund) or the Storage BRIC (payout)."""
    return _follow_on(
        Operation.ACH_CREDIT,
        _ach_code(account_type, "3"),
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        bric=original_bric,
        at=at,
        tz=tz,
        user_data=user_data,
    )


def for_ach_void(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    debit_bric: str,
    account_type: AccountType,
    at: datetime,
    tz: tzinfo = UTC,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CKCX`/`CKSX` same-day ACH void of a debit, for its full amount."""
    return _follow_on(
        Operation.ACH_VOID,
        _ach_code(account_type, "X"),
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=amount_cents,
        bric=debit_bric,
        at=at,
        tz=tz,
        user_data=user_data,
    )


def for_ach_storage(
    *,
    merchant: MerchantKey,
    tran_nbr: int,
    account_type: AccountType,
    at: datetime,
    tz: tzinfo = UTC,
    prenote_bric: str | None = None,
    account: BankAccount | None = None,
    holder: Billing | None = None,
    user_data: Sequence[str] = (),
) -> GatewayRequest:
    """`CKC8` ACH BRIC storage from a pre-note's Financial BRIC (`Z`) or a keyed account (`X`).

    Savings accounts are refused: no savings storage code is documented (`CKS8` is unverified).
    """
    if account_type != "checking":
        raise RequestInvalid("TRAN_TYPE", "ACH storage is only known for checking accounts (CKC8)")
    if (prenote_bric is None) == (account is None):
        raise RequestInvalid("ORIG_AUTH_GUID", "give exactly one of prenote_bric or account")
    body: list[tuple[str, str]]
    if prenote_bric is not None:
        body = [("ORIG_AUTH_GUID", _check_bric(prenote_bric)), ("CARD_ENT_METH", "Z")]
        body.extend(_billing_fields(holder))
    else:
        assert account is not None
        body = [*_bank_fields(account), *_billing_fields(holder, names_required=True), ("CARD_ENT_METH", "X")]
    return _build(
        Operation.ACH_STORAGE,
        merchant=merchant,
        tran_type="CKC8",
        tran_nbr=tran_nbr,
        amount="0.00",
        amount_cents=0,
        at=at,
        tz=tz,
        body=body,
        user_data=user_data,
    )


# --- encoding ------------------------------------------------------------------------------------
def encode(request: GatewayRequest) -> bytes:
    """The `application/x-www-form-urlencoded` body, built in one pass. Values are ASCII already."""
    return urlencode(request.fields).encode("ascii")


def is_zero_dollar(tran_type: str) -> bool:
    """True for the $0 verification/storage types on which `85` is a success."""
    return tran_type in codes.ZERO_DOLLAR_TRAN_TYPES


def payment_type(tran_type: str) -> str:
    """`card` or `ach`: the `payment_type` metric label of a TRAN_TYPE."""
    return "ach" if tran_type.startswith("CK") else "card"


# --- response parsing ----------------------------------------------------------------------------
_BOM: Final = b"\xef\xbb\xbf"
_AUTH_RESP: Final = re.compile(r"[0-9A-Za-z]{2}")
_RESP_AMOUNT: Final = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,2}))?")
_LAST4: Final = re.compile(r"([0-9]{4})\s*$")
_KNOWN_KEYS: Final = frozenset(
    {
        "AUTH_RESP", "AUTH_GUID", "AUTH_CODE", "AUTH_RESP_TEXT", "AUTH_AMOUNT", "AMOUNT",
        "AUTH_CARD_TYPE", "AUTH_AVS", "AUTH_CVV2", "AUTH_TRAN_IDENT", "NTID",
        "AUTH_MASKED_ACCOUNT_NBR", "TRAN_NBR", "BATCH_ID",
    }
)  # fmt: skip
# Documented, non-sensitive fields kept raw (§3.2). Echoed USER_DATA and anything else stay out.
_EXTRA_KEYS: Final = ("PROC_CODE", "SYS_TRACE_NUM", "AUTH_TRAN_DATE_GMT", "NETWORK_RESPONSE", "TRAN_GROUP")
_IGNORED_KEYS: Final = frozenset({"USER_DATA_1", "USER_DATA_2", "USER_DATA_3", "EXP_DATE"})
_BRAND_WORDS: Final[Mapping[str, str]] = {
    "VISA": "visa",
    "MASTERCARD": "mastercard",
    "MASTER CARD": "mastercard",
    "MC": "mastercard",
    "AMEX": "amex",
    "AMERICAN EXPRESS": "amex",
    "DISCOVER": "discover",
    "JCB": "jcb",
}
_BRAND_LETTERS: Final[Mapping[str, str]] = {
    "V": "visa",
    "M": "mastercard",
    "A": "amex",
    "D": "discover",
    "J": "jcb",
}


def normalize_card_brand(raw: str | None) -> str | None:
    """`V`, `VI`, `VISA`, `Visa` -> `visa`; likewise mastercard, amex, discover, jcb; else None."""
    if not raw:
        return None
    text = raw.strip().upper()
    if not text:
        return None
    return _BRAND_WORDS.get(text) or _BRAND_LETTERS.get(text[0])


def _amount_cents(text: str, key: str) -> int | None:
    if not text:
        return None
    match = _RESP_AMOUNT.fullmatch(text)
    if match is None:
        raise ProtocolError("bad_amount", f"{key} is not a decimal amount")
    return int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))


def _xml_pairs(data: bytes) -> dict[str, str]:
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise ProtocolError("forbidden_xml", f"XML refused ({type(exc).__name__})") from None
    except StdET.ParseError:
        raise ProtocolError("malformed_xml", "the XML body is not well formed") from None
    pairs: dict[str, str] = {}
    for element in root.iter("FIELD"):
        key = element.get("KEY")
        if key:
            pairs.setdefault(key, (element.text or "").strip())
    if pairs:
        return pairs
    detail = root if root.tag == "DETAIL" else root.find(".//DETAIL")
    container = detail if detail is not None else root
    for child in container:
        if len(child) == 0 and isinstance(child.tag, str):
            pairs.setdefault(child.tag, (child.text or "").strip())
    return pairs


def _kv_pairs(data: bytes) -> dict[str, str]:
    text = data.decode("utf-8", errors="replace").strip()
    try:
        items = parse_qsl(text, keep_blank_values=True, max_num_fields=256)
    except ValueError:
        raise ProtocolError("malformed_kv", "too many fields in a key/value body") from None
    pairs: dict[str, str] = {}
    for key, value in items:
        pairs.setdefault(key.strip(), value.strip())
    return pairs


def parse_response(body: bytes, *, zero_dollar: bool) -> GatewayResponse:
    """Parse a Server Post answer. XML when the first non-blank byte is `<`, key/value otherwise.

    Raises `ProtocolError` for an empty body, malformed or refused XML, no (or a malformed)
    `AUTH_RESP`, or a malformed `TRAN_NBR`/amount. `zero_dollar` makes `85` a success (§3.4).
    """
    data = body.lstrip()
    if data.startswith(_BOM):
        data = data[len(_BOM) :].lstrip()
    if not data:
        raise ProtocolError("empty_body", "the response body is empty")
    pairs = _xml_pairs(data) if data[:1] == b"<" else _kv_pairs(data)
    auth_resp = pairs.get("AUTH_RESP", "")
    if not auth_resp:
        raise ProtocolError("missing_auth_resp", "the response has no AUTH_RESP")
    if _AUTH_RESP.fullmatch(auth_resp) is None:
        raise ProtocolError("bad_auth_resp", "AUTH_RESP is not a 2-character code")
    auth_resp = auth_resp.upper()
    tran_nbr_text = pairs.get("TRAN_NBR", "")
    tran_nbr: int | None = None
    if tran_nbr_text:
        if _DIGITS.fullmatch(tran_nbr_text) is None or len(tran_nbr_text) > 10:
            raise ProtocolError("bad_tran_nbr", "TRAN_NBR echo is not numeric")
        tran_nbr = int(tran_nbr_text)
    masked = pairs.get("AUTH_MASKED_ACCOUNT_NBR", "")
    last4 = _LAST4.search(masked) if masked else None
    return GatewayResponse(
        auth_resp=auth_resp,
        category=codes.categorize(auth_resp, zero_dollar=zero_dollar),
        auth_guid=pairs.get("AUTH_GUID") or None,
        auth_code=pairs.get("AUTH_CODE") or None,
        auth_resp_text=pairs.get("AUTH_RESP_TEXT") or None,
        auth_amount_cents=_amount_cents(pairs.get("AUTH_AMOUNT", ""), "AUTH_AMOUNT"),
        avs_result=pairs.get("AUTH_AVS") or None,
        cvv_result=pairs.get("AUTH_CVV2") or None,
        card_brand=normalize_card_brand(pairs.get("AUTH_CARD_TYPE")),
        card_last4=last4.group(1) if last4 else None,
        ntid=pairs.get("AUTH_TRAN_IDENT") or pairs.get("NTID") or None,
        tran_nbr=tran_nbr,
        batch_id=pairs.get("BATCH_ID") or None,
        amount_cents=_amount_cents(pairs.get("AMOUNT", ""), "AMOUNT"),
        extras=tuple((key, pairs[key]) for key in _EXTRA_KEYS if pairs.get(key)),
        unknown_keys=tuple(
            sorted(
                key[:64]
                for key in pairs
                if key not in _KNOWN_KEYS and key not in _IGNORED_KEYS and key not in _EXTRA_KEYS
            )[:32]
        ),
    )
