"""Hosted checkout (EPX Browser Post) rules, pure: no I/O, no clock reads, no framework.

* **Modes.** `sale`, `auth` and `save` map to EPX `TRAN_GROUP`/`TRAN_CODE` `SALE`, `AUTH` and
  `STORAGE` and to the `transactions.type` `sale`, `auth` and `storage` (epx-protocol.md §6.2).
* **Expiry** (§5, §6.7). A TAC is valid for 15 minutes and used once. Each form display gets a fresh
  TAC but keeps the TRAN_NBR; the pending transaction expires 15 minutes after its *last* TAC plus a
  10-minute grace period, and then becomes `expired` (never `declined`).
* **Return URLs.** The shopper is only ever sent to a URL the merchant registered: same scheme,
  host, port and path; a query string may be added only to a registered URL without one, and it
  may not carry paycore's own `payment_id`/`status`. No user-info, fragments, backslashes,
  whitespace or control characters (no open redirect).
* **Callback** (§6.3-§6.5, §6.7): `merge_params` (query + body; a key present in both with different
  values is rejected), `parse_callback` (format checks *first*, so that characters cannot shift
  across the MAC's field boundaries), `precheck`/`mismatches` (the transaction match),
  `verify_mac` (the candidate HMAC-SHA256 scheme, compared in constant time), `classify` (what the
  answer means for the transaction) and `callback_digest` (to tell an identical replay from a
  different repeat).

Every rejection is a `CallbackRejected` with a short, bounded `reason` that is safe to log: it never
contains a field value.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from paycore.gateway.epx import codes
from paycore.gateway.port import Category, MerchantKey
from paycore.kernel.money import to_gateway_amount

TAC_LIFETIME: Final = timedelta(minutes=15)
EXPIRY_GRACE: Final = timedelta(minutes=10)
MAX_PARAMS: Final = 64
MAX_VALUE: Final = 1024
MAX_URL: Final = 2048
RESERVED_RESULT_KEYS: Final = frozenset({"payment_id", "status"})


class Mode(enum.StrEnum):
    SALE = "sale"
    AUTH = "auth"
    SAVE = "save"

    @property
    def tran_group(self) -> str:
        return _GROUPS[self]

    @property
    def tx_type(self) -> str:
        """`transactions.type` of the checkout's transaction."""
        return "storage" if self is Mode.SAVE else self.value

    @property
    def tran_type(self) -> str:
        """The Server Post TRAN_TYPE EPX records the Browser Post result under (for reporting)."""
        return _TRAN_TYPES[self]


_GROUPS: Final = {Mode.SALE: "SALE", Mode.AUTH: "AUTH", Mode.SAVE: "STORAGE"}
_TRAN_TYPES: Final = {Mode.SALE: "CCE1", Mode.AUTH: "CCE2", Mode.SAVE: "CCE8"}
TX_TYPE_GROUPS: Final = {"sale": "SALE", "auth": "AUTH", "storage": "STORAGE"}


# --- expiry -----------------------------------------------------------------------------------------
def tac_expires_at(issued_at: datetime) -> datetime:
    return issued_at + TAC_LIFETIME


def session_expires_at(last_tac_expires_at: datetime) -> datetime:
    """When the pending transaction expires: 15 min after its last TAC, plus the grace period."""
    return last_tac_expires_at + EXPIRY_GRACE


def may_issue_tac(*, state: str, transaction_status: str, expires_at: datetime, now: datetime) -> bool:
    """A new TAC only for an open session whose transaction is still pending and not yet due to expire."""
    return state == "open" and transaction_status == "pending" and now < expires_at


# --- return URLs ----------------------------------------------------------------------------------
class ReturnUrlRejected(ValueError):
    """The URL is not one the merchant registered (or is not a safe URL at all)."""


_UNSAFE_URL: Final = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True, slots=True)
class _UrlParts:
    scheme: str
    host: str
    port: int
    path: str
    query: str


def _parts(url: str) -> _UrlParts | None:
    if not url or len(url) > MAX_URL or _UNSAFE_URL.search(url):
        return None
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return None
    scheme = split.scheme.lower()
    if scheme not in {"http", "https"} or not split.hostname or split.fragment or "#" in url:
        return None
    if split.username is not None or split.password is not None or "@" in split.netloc:
        return None
    default = 443 if scheme == "https" else 80
    return _UrlParts(scheme, split.hostname.lower(), port or default, split.path or "/", split.query)


def check_return_url(candidate: str, registered: Iterable[str]) -> str:
    """`candidate` if it matches one of the merchant's registered return URLs, else raise."""
    got = _parts(candidate)
    if got is None:
        raise ReturnUrlRejected("not a valid http(s) URL without user-info or fragment")
    keys = {k for k, _ in parse_qsl(got.query, keep_blank_values=True)}
    if keys & RESERVED_RESULT_KEYS:
        raise ReturnUrlRejected("payment_id and status are added by paycore")
    for url in registered:
        allowed = _parts(url)
        if allowed is None:
            continue
        same_target = (allowed.scheme, allowed.host, allowed.port, allowed.path) == (
            got.scheme,
            got.host,
            got.port,
            got.path,
        )
        if same_target and (got.query == allowed.query or not allowed.query):
            return candidate
    raise ReturnUrlRejected("not one of the merchant's registered return URLs")


def result_url(base: str, payment_id: uuid.UUID, status: str) -> str:
    """The stored, allow-listed URL with only paycore's payment id and status appended."""
    separator = "&" if urlsplit(base).query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}{urlencode([('payment_id', str(payment_id)), ('status', status)])}"


def redirect_target(*, status: str, return_url: str, decline_url: str) -> str:
    """Approved (and still-unresolved) outcomes go to the return URL, the rest to the decline URL."""
    return return_url if status in {"approved", "unknown", "pending"} else decline_url


def callback_url(base_url: str, txn_id: uuid.UUID, merchant_id: uuid.UUID) -> str:
    """`REDIRECT_URL` (§6.2): paycore's callback with the transaction and merchant ids; its host
    comes from configuration, never from caller input."""
    return (
        f"{base_url.rstrip('/')}/v1/epx/browser-post/callback?"
        f"{urlencode([('txn', str(txn_id)), ('m', str(merchant_id))])}"
    )


# --- the form ---------------------------------------------------------------------------------------
def form_fields(
    *,
    tac: str,
    merchant: MerchantKey,
    tran_nbr: int,
    amount_cents: int,
    mode: Mode,
    redirect_url: str,
    txn_id: uuid.UUID,
    merchant_id: uuid.UUID,
    customer_id: str | None,
) -> dict[str, str]:
    """The §6.2 fields (card fields excluded: the shopper's browser adds them, EPX receives them).

    `REDIRECT_URL_DECLINE`/`_ERROR` equal `REDIRECT_URL` (the TAC does not bind them); USER_DATA
    carries paycore's cross-checks (§6.6).
    """
    return {
        "TAC": tac,
        "CUST_NBR": merchant.cust_nbr,
        "MERCH_NBR": merchant.merch_nbr,
        "DBA_NBR": merchant.dba_nbr,
        "TERMINAL_NBR": merchant.terminal_nbr,
        "TRAN_NBR": str(tran_nbr),
        "AMOUNT": to_gateway_amount(amount_cents),
        "TRAN_CODE": mode.tran_group,
        "INDUSTRY_TYPE": "E",
        "REDIRECT_URL": redirect_url,
        "REDIRECT_URL_DECLINE": redirect_url,
        "REDIRECT_URL_ERROR": redirect_url,
        "USER_DATA_1": str(txn_id),
        "USER_DATA_2": customer_id or "",
        "USER_DATA_3": str(merchant_id),
    }


# --- the callback ---------------------------------------------------------------------------------
class CallbackRejected(ValueError):
    """The callback is refused. `reason` is a bounded code (never a field value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_AUTH_RESP: Final = re.compile(r"[0-9A-Za-z]{2}")
_TRAN_NBR: Final = re.compile(r"[1-9][0-9]{9}")
_AMOUNT: Final = re.compile(r"(0|[1-9][0-9]{0,9})\.([0-9]{2})")
_GUID: Final = re.compile(r"[A-Za-z0-9]{1,40}")
_KEY_NBR: Final = re.compile(r"[0-9]{1,16}")
_MAC: Final = re.compile(r"[0-9a-fA-F]{64}")
_MASKED: Final = re.compile(r"[0-9*Xx]{4,19}")
_YYMM: Final = re.compile(r"[0-9]{2}(0[1-9]|1[0-2])")
_SHORT_CODE: Final = re.compile(r"[0-9A-Za-z]{0,8}")
_NTID: Final = re.compile(r"[0-9A-Za-z]{0,64}")
_BP_CODE: Final = re.compile(r"[A-Za-z0-9_]{1,20}")
_AUTH_CODE: Final = re.compile(r"[0-9A-Za-z ]{0,20}")
_MAC_FIELDS: Final = ("CUST_NBR", "MERCH_NBR", "AUTH_GUID", "AUTH_RESP", "AMOUNT", "TRAN_NBR", "TRAN_GROUP")


def merge_params(query: Iterable[tuple[str, str]], body: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Query string and form body as one mapping (§6.4 step 1).

    A key that appears more than once with different values — within the query, within the body,
    or in both — is rejected; identical repeats collapse.
    """
    merged: dict[str, str] = {}
    for key, value in (*query, *body):
        if len(merged) >= MAX_PARAMS and key not in merged:
            raise CallbackRejected("too_many_parameters")
        if len(key) > 64 or len(value) > MAX_VALUE:
            raise CallbackRejected("oversized_parameter")
        previous = merged.get(key)
        if previous is not None and previous != value:
            raise CallbackRejected("conflicting_parameter")
        merged[key] = value
    return merged


@dataclass(frozen=True, slots=True)
class Callback:
    """A format-checked Browser Post result. Card data never appears here (only a masked PAN)."""

    txn_id: uuid.UUID
    merchant_id: uuid.UUID
    tran_nbr: int
    tran_group: str
    auth_resp: str | None
    auth_guid: str | None
    auth_code: str | None
    auth_resp_text: str | None
    auth_amount_cents: int | None
    amount_cents: int | None
    amount_text: str
    avs_result: str | None
    cvv_result: str | None
    card_type: str | None
    masked_account: str | None
    exp_date: str | None
    ntid: str | None
    bp_resp_code: str | None
    cust_nbr: str
    merch_nbr: str
    user_data: tuple[str | None, str | None, str | None]
    mac: str | None
    fields: Mapping[str, str]

    def __repr__(self) -> str:
        return (
            f"Callback(txn_id={self.txn_id}, tran_nbr={self.tran_nbr}, tran_group={self.tran_group}, "
            f"auth_resp={self.auth_resp!r})"
        )

    @property
    def card_last4(self) -> str | None:
        if not self.masked_account:
            return None
        digits = self.masked_account[-4:]
        return digits if digits.isdigit() else None

    @property
    def expiry(self) -> tuple[int, int] | None:
        """(month, year) from `EXP_DATE` (YYMM)."""
        if not self.exp_date:
            return None
        return int(self.exp_date[2:]), 2000 + int(self.exp_date[:2])


def _field(fields: Mapping[str, str], name: str, pattern: re.Pattern[str], *, required: bool = False) -> str:
    value = fields.get(name, "")
    if value == "":
        if required:
            raise CallbackRejected(f"missing_{name.lower()}")
        return ""
    if pattern.fullmatch(value) is None:
        raise CallbackRejected(f"malformed_{name.lower()}")
    return value


def _text(fields: Mapping[str, str], name: str, limit: int = 200) -> str | None:
    value = fields.get(name, "")
    if not value:
        return None
    if len(value) > limit or _CONTROL.search(value):
        raise CallbackRejected(f"malformed_{name.lower()}")
    return value


def _cents(text: str) -> int | None:
    if not text:
        return None
    match = _AMOUNT.fullmatch(text)
    assert match is not None
    return int(match.group(1)) * 100 + int(match.group(2))


def parse_callback(fields: Mapping[str, str]) -> Callback:
    """§6.4 step 2: every field's format, before anything else looks at the values."""
    for key, value in fields.items():
        if _CONTROL.search(key) or _CONTROL.search(value):
            raise CallbackRejected("control_characters")
    txn = _field(fields, "txn", _UUID, required=True)
    merchant = _field(fields, "m", _UUID, required=True)
    tran_nbr = _field(fields, "TRAN_NBR", _TRAN_NBR, required=True)
    group = fields.get("TRAN_GROUP", "")
    if not group:
        raise CallbackRejected("missing_tran_group")
    if group not in TX_TYPE_GROUPS.values():
        raise CallbackRejected("malformed_tran_group")
    bp_code = _field(fields, "BP_RESP_CODE", _BP_CODE) or None
    auth_resp = _field(fields, "AUTH_RESP", _AUTH_RESP, required=bp_code is None).upper() or None
    amount = _field(fields, "AMOUNT", _AMOUNT)
    auth_amount = _field(fields, "AUTH_AMOUNT", _AMOUNT)
    user_data = tuple(_text(fields, f"USER_DATA_{i}", 100) for i in (1, 2, 3))
    mac = _field(fields, "MAC", _MAC) or None
    return Callback(
        txn_id=uuid.UUID(txn),
        merchant_id=uuid.UUID(merchant),
        tran_nbr=int(tran_nbr),
        tran_group=group,
        auth_resp=auth_resp,
        auth_guid=_field(fields, "AUTH_GUID", _GUID) or None,
        auth_code=_field(fields, "AUTH_CODE", _AUTH_CODE).strip() or None,
        auth_resp_text=_text(fields, "AUTH_RESP_TEXT"),
        auth_amount_cents=_cents(auth_amount),
        amount_cents=_cents(amount),
        amount_text=amount,
        avs_result=_field(fields, "AUTH_AVS", _SHORT_CODE) or None,
        cvv_result=_field(fields, "AUTH_CVV2", _SHORT_CODE) or None,
        card_type=_text(fields, "AUTH_CARD_TYPE", 20),
        masked_account=_field(fields, "AUTH_MASKED_ACCOUNT_NBR", _MASKED) or None,
        exp_date=_field(fields, "EXP_DATE", _YYMM) or None,
        ntid=_field(fields, "AUTH_TRAN_IDENT", _NTID) or _field(fields, "NTID", _NTID) or None,
        bp_resp_code=bp_code,
        cust_nbr=_field(fields, "CUST_NBR", _KEY_NBR),
        merch_nbr=_field(fields, "MERCH_NBR", _KEY_NBR),
        user_data=(user_data[0], user_data[1], user_data[2]),
        mac=mac.lower() if mac else None,
        fields=dict(fields),
    )


def precheck(cb: Callback, merchant: MerchantKey) -> None:
    """The checks that need no database row: the merchant's key echoes and paycore's USER_DATA."""
    if cb.cust_nbr and cb.cust_nbr != merchant.cust_nbr:
        raise CallbackRejected("merchant_mismatch")
    if cb.merch_nbr and cb.merch_nbr != merchant.merch_nbr:
        raise CallbackRejected("merchant_mismatch")
    if cb.user_data[0] != str(cb.txn_id) or cb.user_data[2] != str(cb.merchant_id):
        raise CallbackRejected("user_data_mismatch")
    if (
        cb.amount_cents is not None
        and cb.auth_amount_cents is not None
        and cb.amount_cents != cb.auth_amount_cents
    ):
        raise CallbackRejected("amount_mismatch")  # a partial approval: an anomaly, never recorded


@dataclass(frozen=True, slots=True)
class Expected:
    """What a callback must match: the pending transaction as paycore stored it (§6.4 step 3)."""

    tran_nbr: int
    tran_group: str
    amount_cents: int
    customer_id: str | None


def mismatches(cb: Callback, expected: Expected) -> list[str]:
    """Every way `cb` disagrees with the stored transaction (empty when it matches)."""
    found: list[str] = []
    if cb.tran_nbr != expected.tran_nbr:
        found.append("tran_nbr_mismatch")
    if cb.tran_group != expected.tran_group:
        found.append("tran_group_mismatch")
    for amount in (cb.amount_cents, cb.auth_amount_cents):
        if amount is not None and amount != expected.amount_cents:
            found.append("amount_mismatch")
            break
    if (cb.user_data[1] or "") != (expected.customer_id or ""):
        found.append("user_data_mismatch")
    return found


def expected_mac(secret: str, fields: Mapping[str, str]) -> str:
    """§6.5 candidate scheme: lower-case hex HMAC-SHA256 (key: the MAC secret, UTF-8) of
    CUST_NBR‖MERCH_NBR‖AUTH_GUID‖AUTH_RESP‖AMOUNT‖TRAN_NBR‖TRAN_GROUP (missing = empty)."""
    message = "".join(fields.get(name, "") for name in _MAC_FIELDS)
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_mac(cb: Callback, secret: str) -> None:
    """Raise unless `cb` carries the right MAC (constant-time comparison). Run after the format
    checks, so values cannot shift across the concatenation's field boundaries."""
    if cb.mac is None:
        raise CallbackRejected("missing_mac")
    if not hmac.compare_digest(cb.mac, expected_mac(secret, cb.fields)):
        raise CallbackRejected("bad_mac")


Status = Literal["approved", "declined", "failed", "unknown"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a (matching, verified) callback does to a pending transaction."""

    status: Status
    failure_code: str | None = None
    decline_category: str | None = None


def classify(cb: Callback) -> Outcome:
    """The meaning of EPX's answer (§3.4, §6.3, §6.7).

    * `00` (or `85` on `STORAGE`) with a BRIC: approved.
    * `BP_RESP_CODE` (form refused before the gateway), `12`/`96` and other error codes: failed.
    * A "Duplicate TRAN_NBR" answer (a double-submitted form), `58` (the TAC was refused: maybe
      reused after an earlier submission went through) or an approval without a BRIC: the money may
      have moved, so `unknown` for SALE/AUTH (reconciliation resolves it; never a decline).
      STORAGE moves no money: `failed`.
    * Anything else: declined with its category.
    """
    storage = cb.tran_group == "STORAGE"
    maybe_moved: Status = "failed" if storage else "unknown"
    if cb.bp_resp_code is not None:
        return Outcome("failed", failure_code="browser_post_rejected")
    assert cb.auth_resp is not None
    category = codes.categorize(cb.auth_resp, zero_dollar=storage)
    if category is Category.APPROVED:
        if not cb.auth_guid:
            return Outcome(maybe_moved, failure_code="approval_without_auth_guid")
        return Outcome("approved")
    if codes.is_duplicate_tran_nbr(cb.auth_resp_text):
        return Outcome(maybe_moved, failure_code="duplicate_tran_nbr")
    if cb.auth_resp == "58":
        return Outcome(maybe_moved, failure_code="tac_rejected")
    if cb.auth_resp == "85":
        return Outcome(maybe_moved, failure_code="unexpected_code_85")
    if category is Category.ERROR:
        return Outcome("failed", failure_code="gateway_error")
    return Outcome("declined", decline_category=category.value)


def callback_digest(fields: Mapping[str, str]) -> bytes:
    """Fingerprint of a callback's content: an identical replay has the same digest."""
    digest = hashlib.sha256()
    for key, value in sorted(fields.items()):
        digest.update(key.encode())
        digest.update(b"\x1f")
        digest.update(value.encode())
        digest.update(b"\x1e")
    return digest.digest()
