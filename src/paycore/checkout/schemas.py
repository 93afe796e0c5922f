"""API shapes for hosted checkout (msgspec Structs). No domain rules here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

AmountOrZero = Annotated[
    int, msgspec.Meta(ge=0, le=99_999_999_999, description="Minor units (cents); 0 (or absent) for `save`")
]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO 4217 code (USD only)")]
CustomerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$")]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Description = Annotated[str, msgspec.Meta(max_length=500)]
MetaKey = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MetaValue = Annotated[str, msgspec.Meta(max_length=500)]
Metadata = Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=50)]


class CreateCheckoutSession(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Start a hosted checkout: a sale, an authorization or a card save through EPX Browser Post."""

    mode: Literal["sale", "auth", "save"]
    return_url: Url
    amount: AmountOrZero | None = None
    currency: Currency = "USD"
    customer_id: CustomerId | None = None
    decline_url: Url | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class CheckoutForm(msgspec.Struct, kw_only=True):
    """The Browser Post form to render: POST `fields` (plus the shopper's card fields) to `action`.

    `fields` holds a one-time TAC valid until `expires_at`. Card data goes from the shopper's
    browser straight to EPX, never to paycore or the merchant.
    """

    object: Literal["checkout_form"] = "checkout_form"
    session_id: uuid.UUID
    payment_id: uuid.UUID
    mode: Literal["sale", "auth", "save"]
    action: str
    method: Literal["POST"] = "POST"
    fields: dict[str, str]
    expires_at: datetime


class CheckoutSessionOut(msgspec.Struct, kw_only=True):
    """A checkout session and the state of its Browser Post transaction."""

    id: uuid.UUID
    object: Literal["checkout_session"] = "checkout_session"
    mode: Literal["sale", "auth", "save"]
    state: Literal["open", "completed", "expired", "failed"]
    payment_id: uuid.UUID
    payment_status: str
    amount: int
    currency: str
    customer_id: str | None
    return_url: str
    decline_url: str
    payment_method_id: uuid.UUID | None
    tac_expires_at: datetime | None
    expires_at: datetime
    completed_at: datetime | None
    livemode: bool
    created_at: datetime
