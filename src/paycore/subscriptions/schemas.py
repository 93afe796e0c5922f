"""API shapes for subscriptions (msgspec Structs) and their rendering. No domain rules here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from paycore.subscriptions import model
from paycore.subscriptions.model import Subscription
from paycore.subscriptions.repository import ChargeRow

Amount = Annotated[int, msgspec.Meta(ge=1, le=99_999_999_999, description="Minor units (cents for USD)")]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$", description="ISO 4217 code")]
IntervalUnit = Literal["day", "week", "month", "year"]
IntervalCount = Annotated[
    int, msgspec.Meta(ge=1, le=1095, description="Intervals per period (at most 3 years in all)")
]
MetaKey = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MetaValue = Annotated[str, msgspec.Meta(max_length=500)]
Metadata = Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=50)]
CustomerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.:-]+$")]
Description = Annotated[str, msgspec.Meta(max_length=500)]
Status = Literal["active", "paused", "past_due", "canceled"]


class CreateSubscription(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Charge `amount` to a saved payment method every `interval_count` × `interval`, from
    `start_date` (default: now; the first period is billed at the start)."""

    amount: Amount
    currency: Currency
    interval: IntervalUnit
    payment_method_id: uuid.UUID
    interval_count: IntervalCount = 1
    customer_id: CustomerId | None = None
    start_date: datetime | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class UpdateSubscription(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Amount, interval and payment method take effect at the next period (a new payment method
    at once while a period is unpaid); description and metadata at once. `cancel_at_period_end:
    false` withdraws a scheduled cancellation."""

    amount: Amount | None = None
    interval: IntervalUnit | None = None
    interval_count: IntervalCount | None = None
    payment_method_id: uuid.UUID | None = None
    cancel_at_period_end: bool | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class CancelSubscription(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Cancel now (default), or at the end of the paid period in progress."""

    at_period_end: bool = False


class PendingUpdate(msgspec.Struct, kw_only=True):
    """Changes waiting for the next period."""

    effective_at: datetime | None
    amount: int | None = None
    interval: str | None = None
    interval_count: int | None = None
    payment_method_id: uuid.UUID | None = None


class SubscriptionOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    object: Literal["subscription"] = "subscription"
    status: Status
    customer_id: str
    payment_method_id: uuid.UUID
    amount: int
    currency: str
    interval: IntervalUnit
    interval_count: int
    start_date: datetime
    billing_cycle_anchor: datetime
    current_period_start: datetime | None
    current_period_end: datetime | None
    next_billing_at: datetime | None
    failed_attempts: int
    cancel_at_period_end: bool
    canceled_at: datetime | None
    cancellation_reason: str | None
    paused_at: datetime | None
    pending_update: PendingUpdate | None
    description: str | None
    metadata: dict[str, str]
    livemode: bool
    created_at: datetime
    updated_at: datetime


class SubscriptionList(msgspec.Struct, kw_only=True):
    data: list[SubscriptionOut]
    has_more: bool
    next_cursor: str | None = None
    prev_cursor: str | None = None
    object: Literal["list"] = "list"


class ChargeOut(msgspec.Struct, kw_only=True):
    """One attempt to collect one period: the first try or a dunning retry."""

    id: uuid.UUID
    object: Literal["subscription_charge"] = "subscription_charge"
    subscription_id: uuid.UUID
    period_index: int
    period_start: datetime
    period_end: datetime
    attempt: int
    status: Literal["pending", "approved", "declined", "failed"]
    amount: int
    currency: str
    payment_method_id: uuid.UUID
    payment_id: uuid.UUID | None
    decline_category: str | None
    gateway_code: str | None
    failure_code: str | None
    next_retry_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ChargeList(msgspec.Struct, kw_only=True):
    data: list[ChargeOut]
    has_more: bool
    object: Literal["list"] = "list"


def subscription_out(sub: Subscription, *, livemode: bool) -> SubscriptionOut:
    pending = None
    if sub.has_pending_changes and sub.status != "canceled":
        pending = PendingUpdate(
            effective_at=model.pending_effective_at(sub),
            amount=sub.pending_amount,
            interval=sub.pending_interval_unit,
            interval_count=sub.pending_interval_count,
            payment_method_id=sub.pending_payment_method_id,
        )
    return SubscriptionOut(
        id=sub.id,
        status=sub.status,  # type: ignore[arg-type]
        customer_id=sub.customer_id,
        payment_method_id=sub.payment_method_id,
        amount=sub.amount,
        currency=sub.currency,
        interval=sub.interval_unit,  # type: ignore[arg-type]
        interval_count=sub.interval_count,
        start_date=sub.start_at,
        billing_cycle_anchor=sub.anchor_at,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        next_billing_at=sub.next_billing_at if sub.status == "active" else None,
        failed_attempts=sub.dunning_attempts,
        cancel_at_period_end=sub.cancel_at_period_end,
        canceled_at=sub.canceled_at,
        cancellation_reason=sub.cancellation_reason,
        paused_at=sub.paused_at,
        pending_update=pending,
        description=sub.description,
        metadata=sub.metadata or {},
        livemode=livemode,
        created_at=sub.created_at,
        updated_at=sub.updated_at,
    )


def charge_out(row: ChargeRow) -> ChargeOut:
    return ChargeOut(
        id=row.id,
        subscription_id=row.subscription_id,
        period_index=row.period_index,
        period_start=row.period_start,
        period_end=row.period_end,
        attempt=row.attempt,
        status=row.status,  # type: ignore[arg-type]
        amount=row.amount,
        currency=row.currency,
        payment_method_id=row.payment_method_id,
        payment_id=row.transaction_id,
        decline_category=row.decline_category,
        gateway_code=row.gateway_code,
        failure_code=row.failure_code,
        next_retry_at=row.next_retry_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
