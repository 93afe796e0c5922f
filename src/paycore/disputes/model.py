"""Dispute rules, pure: North's statuses, the chargeback reason-code table (CACHE-6), matching a
dispute to its transaction, and what counts as a change (epx-protocol.md §8)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace
from datetime import date
from typing import Final


class Category(enum.StrEnum):
    FRAUD = "fraud"
    AUTHORIZATION = "authorization"
    PROCESSING_ERROR = "processing_error"
    CONSUMER_DISPUTE = "consumer_dispute"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ReasonCode:
    network: str
    code: str
    description: str
    category: Category


# Static table (CACHE-6): the network reason codes paycore names; any other code is "other".
REASON_CODES: Final[dict[str, ReasonCode]] = {
    r.code: r
    for r in (
        ReasonCode("visa", "10.1", "EMV liability shift counterfeit fraud", Category.FRAUD),
        ReasonCode("visa", "10.4", "Other fraud: card-absent environment", Category.FRAUD),
        ReasonCode("visa", "11.1", "Card recovery bulletin", Category.AUTHORIZATION),
        ReasonCode("visa", "11.2", "Declined authorization", Category.AUTHORIZATION),
        ReasonCode("visa", "11.3", "No authorization", Category.AUTHORIZATION),
        ReasonCode("visa", "12.5", "Incorrect amount", Category.PROCESSING_ERROR),
        ReasonCode("visa", "12.6.1", "Duplicate processing", Category.PROCESSING_ERROR),
        ReasonCode("visa", "13.1", "Merchandise/services not received", Category.CONSUMER_DISPUTE),
        ReasonCode("mastercard", "4837", "No cardholder authorization", Category.FRAUD),
        ReasonCode("mastercard", "4863", "Cardholder does not recognize: potential fraud", Category.FRAUD),
        ReasonCode("amex", "C02", "Credit not processed", Category.CONSUMER_DISPUTE),
    )
}


def reason(code: str | None) -> ReasonCode | None:
    return REASON_CODES.get((code or "").strip())


def reason_category(code: str | None) -> Category:
    found = reason(code)
    return found.category if found else Category.OTHER


def reason_label(code: str | None) -> str:
    """The `reason_code` metric label: a table code, else `other` (closed set)."""
    found = reason(code)
    return found.code if found else "other"


# North's statuses map one-to-one onto paycore's (§8.4).
STATUSES: Final[dict[str, str]] = {
    "NEW": "new",
    "PENDING": "pending",
    "RESPONDED": "responded",
    "WON": "won",
    "LOST": "lost",
    "ACCEPTED": "accepted",
}


def map_status(gateway_status: str, previous: str | None) -> tuple[str, bool]:
    """(paycore status, known). An unknown value keeps the previous status (`new` for a new
    dispute) and is reported as unknown so the caller can alert."""
    mapped = STATUSES.get(gateway_status.strip().upper())
    if mapped is not None:
        return mapped, True
    return previous or "new", False


def metric_status(status: str) -> str:
    """`chargebacks_total{status}`: pending until decided, then won or lost."""
    if status == "won":
        return "won"
    if status in ("lost", "accepted"):
        return "lost"
    return "pending"


@dataclass(frozen=True, slots=True)
class Candidate:
    """The paycore transaction a dispute's `transactionNumber` points at (same merchant)."""

    transaction_id: object
    payment_id: object
    amount: int
    card_last4: str | None


def match(candidate: Candidate | None, *, last4: str | None, transaction_amount: int | None) -> str:
    """`matched` when the TRAN_NBR found a transaction whose last four and amount agree (when North
    sent them), `mismatch` when one disagrees, `unmatched` when there is no such transaction."""
    if candidate is None:
        return "unmatched"
    if last4 and candidate.card_last4 and last4 != candidate.card_last4:
        return "mismatch"
    if transaction_amount is not None and transaction_amount != candidate.amount:
        return "mismatch"
    return "matched"


@dataclass(frozen=True, slots=True)
class DisputeFields:
    """What paycore keeps of a dispute; equality of two snapshots means "nothing changed"."""

    status: str
    gateway_status: str
    dispute_type: str | None
    reason_code: str | None
    reason_description: str | None
    reason_category: str
    card_brand: str | None
    card_last4: str | None
    tran_nbr: int | None
    transaction_id: object
    payment_id: object
    match_status: str
    amount: int
    transaction_amount: int | None
    dispute_date: date | None
    chargeback_date: date | None
    transaction_date: date | None


def changed_fields(before: DisputeFields | None, after: DisputeFields) -> list[str]:
    if before is None:
        return [f.name for f in fields(after)]
    return [f.name for f in fields(after) if getattr(before, f.name) != getattr(after, f.name)]


def with_status(d: DisputeFields, status: str) -> DisputeFields:
    return replace(d, status=status)
