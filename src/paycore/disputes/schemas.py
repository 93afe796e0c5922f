"""API shapes for disputes (msgspec Structs)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

import msgspec


class DisputeOut(msgspec.Struct, kw_only=True):
    """A chargeback as North reports it, linked to the paycore payment when it could be matched."""

    id: uuid.UUID
    object: Literal["dispute"] = "dispute"
    case_number: str
    status: Literal["new", "pending", "responded", "won", "lost", "accepted"]
    gateway_status: str
    amount: int
    currency: str
    reason_code: str | None = None
    reason_description: str | None = None
    reason_category: str
    dispute_type: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    payment_id: uuid.UUID | None = None
    transaction_id: uuid.UUID | None = None
    tran_nbr: str | None = None
    match_status: Literal["matched", "unmatched", "mismatch"]
    transaction_amount: int | None = None
    dispute_date: date | None = None
    chargeback_date: date | None = None
    transaction_date: date | None = None
    livemode: bool
    created_at: datetime
    updated_at: datetime


class DisputeList(msgspec.Struct, kw_only=True):
    data: list[DisputeOut]
    has_more: bool
    next_cursor: str | None = None
    prev_cursor: str | None = None
    object: Literal["list"] = "list"
