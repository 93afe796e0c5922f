"""API shapes for saved payment methods (msgspec Structs) and their rendering. No rules here.

The rendered object has the same keys and values as the payload of the `payment_method.*` outbox
events (built in SQL by `repository._event_object`); a test keeps the two in step.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from paycore.payment_methods.model import PaymentMethod
from paycore.payments.schemas import CustomerId, Metadata, Token

__all__ = [
    "BankAccountOut",
    "BillingIn",
    "CardOut",
    "CustomerId",
    "DeletedOut",
    "HolderIn",
    "PaymentMethodList",
    "PaymentMethodOut",
    "SaveBankAccount",
    "SaveCard",
    "SavePaymentMethod",
    "method_out",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
_Text = Annotated[str, msgspec.Meta(max_length=100)]


class BillingIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Billing details sent with the card's storage request (AVS)."""

    first_name: Name | None = None
    last_name: Name | None = None
    address: _Text | None = None
    city: Annotated[str, msgspec.Meta(max_length=50)] | None = None
    state: Annotated[str, msgspec.Meta(pattern="^[A-Za-z]{2}$")] | None = None
    zip_code: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9 -]{1,10}$")] | None = None


class HolderIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The bank account holder (required by the pre-note)."""

    first_name: Name
    last_name: Name


class SaveCard(msgspec.Struct, tag_field="type", tag="card", forbid_unknown_fields=True, kw_only=True):
    """Save a card from a gateway token: a **Financial BRIC** (e.g. of a Browser Post sale) is
    converted into a Storage BRIC by the gateway's storage request, which runs a $0 account
    verification. Never send a card number."""

    token: Token
    billing: BillingIn | None = None
    exp_month: Annotated[int, msgspec.Meta(ge=1, le=12)] | None = None
    exp_year: Annotated[int, msgspec.Meta(ge=2000, le=2199)] | None = None
    metadata: Metadata | None = None


class SaveBankAccount(msgspec.Struct, tag_field="type", tag="ach", forbid_unknown_fields=True, kw_only=True):
    """Save a checking or savings account. The account number is used for the gateway's pre-note
    (and storage) request only: paycore keeps the token and its last 4 digits."""

    account_type: Literal["checking", "savings"]
    routing_number: Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="9-digit ABA")]
    account_number: Annotated[str, msgspec.Meta(min_length=1, max_length=32, description="4-17 digits")]
    holder: HolderIn
    sec_code: Literal["WEB", "PPD", "CCD", "TEL"] = "WEB"
    metadata: Metadata | None = None

    def __repr__(self) -> str:
        return f"SaveBankAccount(account_type={self.account_type}, account_number=[REDACTED])"

    __str__ = __repr__


SavePaymentMethod = SaveCard | SaveBankAccount


class CardOut(msgspec.Struct, kw_only=True):
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None


class BankAccountOut(msgspec.Struct, kw_only=True):
    account_type: str | None
    last4: str | None
    routing_number: str | None
    holder_name: str | None
    sec_code: str | None
    verified_at: datetime | None
    verification_failure_code: str | None
    return_count: int


class PaymentMethodOut(msgspec.Struct, kw_only=True):
    """A saved card or bank account of a customer."""

    id: uuid.UUID
    object: Literal["payment_method"] = "payment_method"
    customer_id: str
    type: Literal["card", "ach"]
    status: Literal["active", "inactive"]
    is_default: bool
    verification_status: Literal["pending", "verified", "failed"]
    card: CardOut | None
    bank_account: BankAccountOut | None
    billing: dict[str, str] | None
    metadata: dict[str, str]
    deactivation_reason: str | None
    last_used_at: datetime | None
    livemode: bool
    created_at: datetime
    updated_at: datetime


class PaymentMethodList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[PaymentMethodOut]
    has_more: bool
    next_cursor: str | None


class DeletedOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["payment_method"] = "payment_method"
    deleted: bool = True


def method_out(pm: PaymentMethod, *, livemode: bool) -> PaymentMethodOut:
    card = (
        CardOut(brand=pm.card_brand, last4=pm.card_last4, exp_month=pm.exp_month, exp_year=pm.exp_year)
        if pm.payment_type == "card"
        else None
    )
    bank = (
        BankAccountOut(
            account_type=pm.account_type,
            last4=pm.account_last4,
            routing_number=pm.routing_number,
            holder_name=pm.holder_name,
            sec_code=pm.sec_code,
            verified_at=pm.verified_at,
            verification_failure_code=pm.verification_failure_code,
            return_count=pm.return_count,
        )
        if pm.payment_type == "ach"
        else None
    )
    return PaymentMethodOut(
        id=pm.id,
        customer_id=pm.customer_id,
        type=pm.payment_type,  # type: ignore[arg-type]
        status="active" if pm.is_active else "inactive",
        is_default=pm.is_default,
        verification_status=pm.verification_status,  # type: ignore[arg-type]
        card=card,
        bank_account=bank,
        billing=pm.billing,
        metadata=pm.metadata or {},
        deactivation_reason=pm.deactivation_reason,
        last_used_at=pm.last_used_at,
        livemode=livemode,
        created_at=pm.created_at,
        updated_at=pm.updated_at,
    )
