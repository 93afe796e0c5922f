"""API shapes for payments (msgspec Structs) and their rendering. No domain rules here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from paycore.payments.model import Group
from paycore.payments.repository import TxnRow

Amount = Annotated[int, msgspec.Meta(ge=1, le=99_999_999_999, description="Minor units (cents for USD)")]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO 4217 code")]
Token = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=40, pattern="^[A-Za-z0-9]+$", description="EPX BRIC (gateway token)"
    ),
]
MetaKey = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MetaValue = Annotated[str, msgspec.Meta(max_length=500)]
Metadata = Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=50)]
CustomerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$")]
Description = Annotated[str, msgspec.Meta(max_length=500)]


class CreatePayment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Create a sale (`capture: true`, the default) or an authorization (`capture: false`)."""

    amount: Amount
    currency: Currency
    token: Token | None = None
    payment_method_id: uuid.UUID | None = None
    capture: bool = True
    customer_id: CustomerId | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class CapturePayment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Capture all (no amount) or part of an authorization."""

    amount: Amount | None = None


class RefundPayment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Refund all that remains refundable (no amount) or part of it."""

    amount: Amount | None = None
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class VoidPayment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Void the payment, or (with `capture_id`) one unsettled capture."""

    capture_id: uuid.UUID | None = None


class Card(msgspec.Struct, omit_defaults=True):
    brand: str | None = None
    last4: str | None = None


class GatewayDetails(msgspec.Struct, omit_defaults=True):
    tran_nbr: str
    response_code: str | None = None
    auth_code: str | None = None
    avs_result: str | None = None
    cvv_result: str | None = None
    decline_category: str | None = None
    failure_code: str | None = None


class TransactionOut(msgspec.Struct, kw_only=True):
    """A follow-on transaction (capture, refund or void) of a payment."""

    id: uuid.UUID
    object: Literal["capture", "refund", "void"]
    payment_id: uuid.UUID
    parent_id: uuid.UUID | None
    amount: int
    currency: str
    status: str
    gateway: GatewayDetails
    created_at: datetime
    updated_at: datetime


class PaymentOut(msgspec.Struct, kw_only=True):
    """A payment: a sale or an authorization with everything done to it since."""

    id: uuid.UUID
    object: Literal["payment"] = "payment"
    type: Literal["sale", "auth"]
    payment_type: Literal["card", "ach"]
    status: str
    amount: int
    currency: str
    amount_capturable: int
    amount_captured: int
    amount_refunded: int
    amount_refundable: int
    voided: bool
    customer_id: str | None
    payment_method_id: uuid.UUID | None
    description: str | None
    metadata: dict[str, str]
    card: Card | None
    gateway: GatewayDetails
    transactions: list[TransactionOut]
    livemode: bool
    created_at: datetime
    updated_at: datetime


class OperationOut(msgspec.Struct, kw_only=True):
    """The answer to a capture, refund or void: the new transaction and the payment after it."""

    id: uuid.UUID
    object: Literal["capture", "refund", "void"]
    amount: int
    currency: str
    status: str
    gateway: GatewayDetails
    payment: PaymentOut
    created_at: datetime


class BatchGet(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Up to `PAYCORE_BATCH_MAX_IDS` (100) payment ids to read at once."""

    ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, description="payment ids")]


class BatchGetResult(msgspec.Struct, kw_only=True):
    """The payments found (by id) and the ids that are not this merchant's payments."""

    object: Literal["batch"] = "batch"
    found: dict[str, PaymentOut]
    not_found: list[uuid.UUID]


class PaymentList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[PaymentOut]
    has_more: bool
    next_cursor: str | None
    prev_cursor: str | None


def _gateway(row: TxnRow) -> GatewayDetails:
    return GatewayDetails(
        tran_nbr=str(row.tran_nbr),
        response_code=row.auth_resp,
        auth_code=row.auth_code or None,
        avs_result=row.avs_result or None,
        cvv_result=row.cvv_result or None,
        decline_category=row.decline_category,
        failure_code=row.failure_code,
    )


def transaction_out(row: TxnRow) -> TransactionOut:
    return TransactionOut(
        id=row.id,
        object=row.type,  # type: ignore[arg-type]
        payment_id=row.group_id,
        parent_id=row.parent_id,
        amount=row.amount,
        currency=row.currency.strip(),
        status=row.status,
        gateway=_gateway(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def payment_out(root: TxnRow, children: list[TxnRow], group: Group, *, livemode: bool) -> PaymentOut:
    has_card = root.payment_type == "card" and (root.card_last4 or root.card_brand)
    card = Card(brand=root.card_brand, last4=root.card_last4) if has_card else None
    return PaymentOut(
        id=root.id,
        type=root.type,  # type: ignore[arg-type]
        payment_type=root.payment_type,  # type: ignore[arg-type]
        status=root.status,
        amount=root.amount,
        currency=root.currency.strip(),
        amount_capturable=group.capturable,
        amount_captured=group.captured,
        amount_refunded=group.refunded,
        amount_refundable=group.refundable,
        voided=group.voided,
        customer_id=root.customer_id,
        payment_method_id=root.payment_method_id,
        description=root.description,
        metadata=root.metadata or {},
        card=card,
        gateway=_gateway(root),
        transactions=[transaction_out(c) for c in children],
        livemode=livemode,
        created_at=root.created_at,
        updated_at=root.updated_at,
    )


def operation_out(op: TxnRow, payment: PaymentOut) -> OperationOut:
    return OperationOut(
        id=op.id,
        object=op.type,  # type: ignore[arg-type]
        amount=op.amount,
        currency=op.currency.strip(),
        status=op.status,
        gateway=_gateway(op),
        payment=payment,
        created_at=op.created_at,
    )
