"""The gateway port: what paycore's services need from a card/ACH gateway, and nothing more.

Services are typed against these Protocols; `gateway.epx` is the one implementation. Records are
frozen msgspec Structs (MEM-1..6). Card, CVV, account and routing values never appear in `repr`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec


class Operation(enum.StrEnum):
    """What a gateway request does. Each maps to one EPX TRAN_TYPE per account kind."""

    SALE = "sale"
    AUTH = "auth"
    CAPTURE = "capture"
    REFUND = "refund"
    VOID = "void"
    CARD_STORAGE = "card_storage"
    ACH_PRENOTE = "ach_prenote"
    ACH_DEBIT = "ach_debit"
    ACH_CREDIT = "ach_credit"
    ACH_VOID = "ach_void"
    ACH_STORAGE = "ach_storage"


class Category(enum.StrEnum):
    """Response-code category (epx-protocol.md §3.4): drives retry, breaker and metric labels."""

    APPROVED = "approved"
    SOFT_DECLINE = "soft_decline"
    HARD_DECLINE = "hard_decline"
    ERROR = "error"
    UNKNOWN = "unknown"


class MerchantKey(msgspec.Struct, frozen=True, gc=False):
    """EPX 4-part merchant key. Not secret (it is shown in Browser Post forms)."""

    cust_nbr: str
    merch_nbr: str
    dba_nbr: str
    terminal_nbr: str


_SENSITIVE_FIELDS = frozenset({"ACCOUNT_NBR", "ROUTING_NBR", "CVV2", "EXP_DATE", "ORIG_AUTH_GUID"})


class GatewayRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One Server Post request, fields in wire order. Build it with `gateway.epx.wire` constructors.

    `fields` holds (NAME, value) pairs; the serialised form body is built once from it.
    """

    operation: Operation
    merchant: MerchantKey
    tran_type: str
    tran_nbr: int
    amount_cents: int | None
    fields: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={'[REDACTED]' if k in _SENSITIVE_FIELDS else v}" for k, v in self.fields)
        return f"GatewayRequest({self.operation.value}, {shown})"

    __str__ = __repr__

    def storable_body(self) -> str:
        """The body with card/bank data removed, safe to persist for diagnostics and retries."""
        from urllib.parse import urlencode

        return urlencode([(k, v) for k, v in self.fields if k not in {"ACCOUNT_NBR", "ROUTING_NBR", "CVV2"}])


class GatewayResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed gateway answer (the raw body is dropped after parsing)."""

    auth_resp: str
    category: Category
    auth_guid: str | None = None
    auth_code: str | None = None
    auth_resp_text: str | None = None
    auth_amount_cents: int | None = None
    avs_result: str | None = None
    cvv_result: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    ntid: str | None = None
    tran_nbr: int | None = None
    batch_id: str | None = None
    # Echo of the request's AMOUNT (not always present; AUTH_AMOUNT is the approved amount).
    amount_cents: int | None = None
    # Documented fields stored raw (PROC_CODE, SYS_TRACE_NUM, AUTH_TRAN_DATE_GMT, NETWORK_RESPONSE,
    # TRAN_GROUP). Never card, bank or token data.
    extras: tuple[tuple[str, str], ...] = ()
    # Names (never values) of keys the parser did not recognise, for diagnostics (§3.1).
    unknown_keys: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"GatewayResponse(auth_resp={self.auth_resp!r}, category={self.category.value}, "
            f"auth_guid={'[REDACTED]' if self.auth_guid else None})"
        )


Outcome = Literal["approved", "declined", "failed", "unknown"]


class GatewayResult(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one gateway call, retries included.

    * approved / declined: a definitive answer (`response` set).
    * failed: the gateway provably did not process the request (circuit open, connection refused,
      validation error, HTTP 400/401). Safe to try again later as a new transaction.
    * unknown: the request may have been processed (timeout after sending, reset, 5xx, protocol
      error, "Duplicate TRAN_NBR" on a retry). Never re-sent under a new TRAN_NBR: reconcile.
    """

    outcome: Outcome
    response: GatewayResponse | None = None
    error_code: str | None = None  # paycore reason: circuit_open, timeout, http_503, protocol_error, ...
    detail: str | None = None
    attempts: int = 0


# `failed` error codes that mean the gateway was never reached (answered to callers as 424
# `gateway_unavailable`); any other failure is the gateway refusing the request (`gateway_error`).
UNAVAILABLE_ERROR_CODES: frozenset[str] = frozenset(
    {"circuit_open", "gateway_unreachable", "connect_error", "not_processed"}
)


class ReportedTransaction(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction as the gateway's reporting data knows it (used by reconciliation)."""

    tran_nbr: int
    tran_type: str
    auth_resp: str
    category: Category
    auth_guid: str | None = None
    auth_code: str | None = None
    amount_cents: int | None = None
    batch_id: str | None = None


@dataclass(slots=True)
class CallTrace:
    """Caller-owned facts about one `process()` call, valid after it returns *or raises*.

    After a cancellation, `may_have_reached_gateway` tells whether the transaction must be treated
    as `unknown` (True) or provably was never sent (False).
    """

    attempts: int = 0  # attempts started (circuit rejections excluded)
    may_have_reached_gateway: bool = False
    last_error: str | None = None
    completed: bool = False  # process() returned a GatewayResult


class TransactionProcessor(Protocol):
    """Server Post: send one transaction and classify the outcome."""

    async def process(self, request: GatewayRequest, *, trace: CallTrace | None = None) -> GatewayResult: ...


class TransactionReport(Protocol):
    """Gateway reporting: did the gateway process this TRAN_NBR, and with what result?

    Returns None when the gateway has no record of it. Raises `ReportUnavailable` when the
    report cannot be read (the caller keeps the transaction unresolved and tries later).
    """

    async def lookup(self, merchant: MerchantKey, tran_nbr: int) -> ReportedTransaction | None: ...


class ReportUnavailable(RuntimeError):
    pass


class CircuitOpenError(RuntimeError):
    """Raised by a breaker that rejects a call without touching the network."""

    def __init__(self, name: str) -> None:
        super().__init__(f"circuit {name} is open")
        self.name = name
