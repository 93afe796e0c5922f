"""The static EPX response-code table (CACHE-5, epx-protocol.md §3.4) and the §3.5 text patterns.

Everything here is pure and built once at import. `lookup()` never fails: a code missing from the
table comes back as an `unknown` entry (a decline with no automatic retry, alert if frequent).

The category drives three things:
* the outcome of a call (approved / declined / failed, see `client.py`),
* the circuit breaker (only `96` counts as a gateway failure; declines and `91` never do),
* the `code` and `category` labels of `payment_gateway_responses_total`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import msgspec

from paycore.gateway.port import Category

__all__ = [
    "RESPONSE_CODES",
    "ZERO_DOLLAR_TRAN_TYPES",
    "CodeInfo",
    "categorize",
    "is_duplicate_tran_nbr",
    "is_validation_error",
    "lookup",
    "metric_code",
    "validation_field",
]


class CodeInfo(msgspec.Struct, frozen=True, gc=False):
    """One row of the table. `retry_later`: a *new* transaction may be tried later (MIT dunning);
    nothing is ever retried within a request. `breaker_failure`: counts against the gateway breaker.
    """

    code: str
    meaning: str
    category: Category
    retry_later: bool = False
    breaker_failure: bool = False


# $0 verification and storage types: `85` is a success only on these (§3.4). Browser Post STORAGE is
# the fourth member of that rule; it never goes through Server Post.
ZERO_DOLLAR_TRAN_TYPES: Final[frozenset[str]] = frozenset({"CCE8", "CKC8", "CCE0"})

_A = Category.APPROVED
_S = Category.SOFT_DECLINE
_H = Category.HARD_DECLINE
_E = Category.ERROR

RESPONSE_CODES: Final[Mapping[str, CodeInfo]] = MappingProxyType(
    {
        info.code: info
        for info in (
            CodeInfo("00", "approved", _A),
            # `85` is listed as an error; categorize() upgrades it on $0 types.
            CodeInfo("85", "no reason to decline ($0 verification)", _E),
            CodeInfo("05", "do not honour", _S, retry_later=True),
            CodeInfo("51", "insufficient funds", _S, retry_later=True),
            CodeInfo("61", "exceeds withdrawal amount limit", _S, retry_later=True),
            CodeInfo("65", "exceeds withdrawal frequency limit", _S, retry_later=True),
            CodeInfo("91", "issuer or switch inoperative", _S, retry_later=True),
            CodeInfo("96", "system error", _E, retry_later=True, breaker_failure=True),
            CodeInfo("14", "invalid card number", _H),
            CodeInfo("41", "lost card", _H),
            CodeInfo("43", "stolen card", _H),
            CodeInfo("54", "expired card", _H),
            CodeInfo("55", "incorrect PIN", _H),
            CodeInfo("57", "transaction not permitted to cardholder", _H),
            CodeInfo("82", "CVV error", _H),
            CodeInfo("12", "invalid transaction", _E),
            CodeInfo("58", "TAC validation or authentication failed", _E),
        )
    }
)

_UNKNOWN_MEANING: Final = "unknown response code"


def lookup(code: str) -> CodeInfo:
    """The table entry for `code`; an `unknown` entry for a code the table does not list."""
    info = RESPONSE_CODES.get(code)
    if info is None:
        return CodeInfo(code, _UNKNOWN_MEANING, Category.UNKNOWN)
    return info


def categorize(code: str, *, zero_dollar: bool) -> Category:
    """Category of `code`. Approved iff `00`, or `85` on a $0 verification/storage type."""
    if code == "85" and zero_dollar:
        return Category.APPROVED
    info = RESPONSE_CODES.get(code)
    return Category.UNKNOWN if info is None else info.category


def metric_code(code: str) -> str:
    """Label value for `payment_gateway_responses_total{code}`: listed codes, else `other`."""
    return code if code in RESPONSE_CODES else "other"


# --- §3.5 protocol-level texts ------------------------------------------------------------------
# Request field names EPX may name in a validation text (§2.2, plus AUTH_GUID and TRAN_TYPE).
_FIELD_NAMES: Final = frozenset(
    {
        "CUST_NBR", "MERCH_NBR", "DBA_NBR", "TERMINAL_NBR", "TRAN_TYPE", "AMOUNT", "TRAN_NBR",
        "BATCH_ID", "LOCAL_DATE", "LOCAL_TIME", "ORIG_AUTH_GUID", "AUTH_GUID", "ACCOUNT_NBR",
        "ROUTING_NBR", "EXP_DATE", "CVV2", "CARD_ENT_METH", "INDUSTRY_TYPE", "FIRST_NAME",
        "LAST_NAME", "ADDRESS", "CITY", "STATE", "ZIP_CODE", "ACI_EXT", "COF_PERIOD",
        "ORIG_AUTH_AMOUNT", "ORIG_AUTH_TRAN_IDENT", "STD_ENTRY_CLASS", "RECV_NAME",
        "USER_DATA_1", "USER_DATA_2", "USER_DATA_3", "TRAN_GROUP",
    }
)  # fmt: skip
# `Invalid <FIELD>[<REASON>]` and `Invalid <FIELD> format`: any upper-case field name.
# A bare `Invalid <FIELD>` (e.g. `Invalid TRAN_TYPE`) only for a known field, so that an issuer's
# decline text such as "INVALID CARD" (upper case, code 14) is never mistaken for a paycore bug.
_INVALID_SHAPED: Final = re.compile(r"\bInvalid (?P<field>[A-Z][A-Z0-9_]*)(?:\[[^\]]*\]| format\b)")
_INVALID_BARE: Final = re.compile(r"\bInvalid (?P<field>[A-Z][A-Z0-9_]*)\b")
_MISSING: Final = re.compile(r"missing required field", re.IGNORECASE)
_DUPLICATE: Final = re.compile(r"duplicate\s+tran_?nbr", re.IGNORECASE)


def validation_field(text: str | None) -> str | None:
    """The field a §3.5 validation text names (`Invalid TRAN_NBR[LEN]` -> `TRAN_NBR`).

    Returns `"*"` for `Missing required field` (no field named) and None when the text is not a
    validation error. Only meaningful together with a non-approved code.
    """
    if not text:
        return None
    match = _INVALID_SHAPED.search(text)
    if match is not None:
        return match.group("field")
    for bare in _INVALID_BARE.finditer(text):
        if bare.group("field") in _FIELD_NAMES:
            return bare.group("field")
    if _MISSING.search(text):
        return "*"
    return None


def is_validation_error(text: str | None) -> bool:
    """True when `AUTH_RESP_TEXT` matches a §3.5 request-validation pattern."""
    return validation_field(text) is not None


def is_duplicate_tran_nbr(text: str | None) -> bool:
    """True when `AUTH_RESP_TEXT` says the TRAN_NBR was already used (§2.4)."""
    return bool(text) and _DUPLICATE.search(text or "") is not None
