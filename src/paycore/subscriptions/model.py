"""Subscriptions: the record and its rules (pure: no I/O, no clock reads — `now` is an argument).

A subscription charges `amount` to a saved payment method once per period. Period n starts at
`period_date(n)` (`calendar.billing_date` from the anchor) and is billed in advance, at its start.
`period_index` is the period billed next and `next_billing_at` when: its start, or a dunning retry.

States: `active` (billed), `paused` (not billed), `past_due` (a period could not be collected after
the dunning schedule; not billed until resumed or canceled), `canceled` (final).

* **Changes** of amount, interval and payment method wait for the next period (`pending_*`): they
  are applied when that period's first charge is made (`open_period`). A new interval re-anchors
  the schedule at that period's start. Exception: while a period is unpaid (dunning or past_due)
  a new payment method applies at once to the next attempt — retrying a failing card makes no sense.
* **Dunning** (`after_charge`): a decline EPX says to retry later (§3.4: soft declines and the
  `96` system error, `retryable_decline`) is retried at offsets of `schedule` (default 1, 3 and 5
  days) from the period's first decline; when they are used up the subscription is `past_due`. A
  hard decline (or a request error, an unrecognised code, a payment method that can no longer be
  charged) is `past_due` at once: EPX §3.4 says never retry it with the same card data. A charge
  the gateway provably never processed (`failed`: circuit open, connection refused) is no decline:
  it is retried after `retry_delay` and counts for nothing. A charge whose outcome is not known yet
  (`pending`: in flight, or awaiting reconciliation) is left alone.
* **Pause / resume**: periods that start and end entirely within a pause are not billed. Resuming
  bills the period in progress at once (unless it is already paid), with a fresh dunning count;
  `past_due` resumes the same way.
* **Cancel** now, or at the end of the paid period in progress (`cancel_at_period_end`; when no
  paid period is running — never billed, in dunning, paused, past due — it cancels now).
"""

from __future__ import annotations

import enum
import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import msgspec

from paycore.gateway.epx import codes
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.subscriptions import calendar
from paycore.subscriptions.calendar import Interval

# --- problem codes (stable, never renamed) ---------------------------------------------------------
SUBSCRIPTION_NOT_FOUND = errors.register("subscription_not_found", 404, "No such subscription")
SUBSCRIPTION_CANCELED = errors.register("subscription_canceled", 409, "The subscription is canceled")
SUBSCRIPTION_INVALID_STATE = errors.register(
    "subscription_invalid_state", 409, "The subscription cannot do this in its current state"
)
START_DATE_INVALID = errors.register("subscription_start_invalid", 422, "The start date is not allowed")
INTERVAL_INVALID = errors.register("subscription_interval_invalid", 422, "The billing interval is not valid")

STATUSES: Final = ("active", "paused", "past_due", "canceled")
EVENT_CREATED: Final = "subscription.created"
EVENT_RENEWED: Final = "subscription.renewed"
EVENT_PAYMENT_FAILED: Final = "subscription.payment_failed"
EVENT_PAST_DUE: Final = "subscription.past_due"
EVENT_CANCELED: Final = "subscription.canceled"

# A start date may be a little in the past (clock skew, a form filled in yesterday) and at most a
# year ahead.
START_GRACE: Final = timedelta(hours=24)
START_MAX_AHEAD: Final = timedelta(days=366)
DEFAULT_SCHEDULE: Final = (86400.0, 3 * 86400.0, 5 * 86400.0)


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A subscriptions row as paycore reads it."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    customer_id: str
    payment_method_id: uuid.UUID
    status: str
    amount: int
    currency: str
    interval_unit: str
    interval_count: int
    start_at: datetime
    anchor_at: datetime
    anchor_index: int = 0
    period_index: int = 0
    next_billing_at: datetime
    locked_until: datetime | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    dunning_attempts: int = 0
    dunning_started_at: datetime | None = None
    initial_amount: int | None = None
    cancel_at_period_end: bool = False
    canceled_at: datetime | None = None
    cancellation_reason: str | None = None
    paused_at: datetime | None = None
    pending_amount: int | None = None
    pending_interval_unit: str | None = None
    pending_interval_count: int | None = None
    pending_payment_method_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def interval(self) -> Interval:
        return Interval(self.interval_unit, self.interval_count)

    def period_date(self, index: int) -> datetime:
        """Start of period `index`, from the current anchor (an interval change re-anchors the
        schedule: the periods before it are history, kept in `subscription_charges`)."""
        if index < self.anchor_index:
            raise ValueError("a period before the current anchor")
        return calendar.billing_date(self.anchor_at, self.interval, index - self.anchor_index)

    def period_containing(self, at: datetime) -> int:
        """Index of the period containing `at` (the anchor's period or later), -1 before the start."""
        n = calendar.index_at(self.anchor_at, self.interval, at)
        return -1 if n < 0 else self.anchor_index + n

    @property
    def has_pending_changes(self) -> bool:
        return (
            self.pending_amount is not None
            or self.pending_interval_unit is not None
            or self.pending_payment_method_id is not None
        )

    @property
    def unpaid(self) -> bool:
        """The period being billed has been declined at least once (dunning or past due)."""
        return self.dunning_attempts > 0 or self.status == "past_due"


def interval_of(unit: str, count: int) -> Interval:
    try:
        return Interval(unit, count)
    except ValueError as exc:
        raise PaycoreError(INTERVAL_INVALID, str(exc), param="interval") from None


def _replace(sub: Subscription, now: datetime, **changes: object) -> Subscription:
    return msgspec.structs.replace(sub, updated_at=now, **changes)


# --- create ---------------------------------------------------------------------------------------
def new_subscription(
    *,
    id: uuid.UUID,
    merchant_id: uuid.UUID,
    customer_id: str,
    payment_method_id: uuid.UUID,
    amount: int,
    currency: str,
    interval: Interval,
    start_at: datetime | None,
    now: datetime,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Subscription:
    start = now if start_at is None else start_at
    if start.tzinfo is None or start.utcoffset() is None:
        raise PaycoreError(START_DATE_INVALID, "start_date needs a time zone", param="start_date")
    if start < now - START_GRACE:
        raise PaycoreError(
            START_DATE_INVALID, "start_date may be at most 24 hours in the past", param="start_date"
        )
    if start > now + START_MAX_AHEAD:
        raise PaycoreError(START_DATE_INVALID, "start_date may be at most a year ahead", param="start_date")
    start = calendar.billing_date(start, interval, 0)  # normalised to UTC
    return Subscription(
        id=id,
        merchant_id=merchant_id,
        customer_id=customer_id,
        payment_method_id=payment_method_id,
        status="active",
        amount=amount,
        currency=currency,
        interval_unit=interval.unit,
        interval_count=interval.count,
        start_at=start,
        anchor_at=start,
        next_billing_at=start,
        description=description,
        metadata=metadata,
        created_at=now,
        updated_at=now,
    )


# --- changes --------------------------------------------------------------------------------------
def update(
    sub: Subscription,
    now: datetime,
    *,
    amount: int | None = None,
    interval: Interval | None = None,
    payment_method_id: uuid.UUID | None = None,
    cancel_at_period_end: bool | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Subscription:
    """Record changes: amount, interval and payment method from the next period (see module doc)."""
    if sub.status == "canceled":
        raise PaycoreError(SUBSCRIPTION_CANCELED)
    changes: dict[str, object] = {}
    if amount is not None:
        changes["pending_amount"] = None if amount == sub.amount else amount
    if interval is not None:
        same = (interval.unit, interval.count) == (sub.interval_unit, sub.interval_count)
        changes["pending_interval_unit"] = None if same else interval.unit
        changes["pending_interval_count"] = None if same else interval.count
    if payment_method_id is not None:
        if sub.unpaid:
            changes["payment_method_id"] = payment_method_id
            changes["pending_payment_method_id"] = None
        else:
            same_pm = payment_method_id == sub.payment_method_id
            changes["pending_payment_method_id"] = None if same_pm else payment_method_id
    if cancel_at_period_end is not None:
        if cancel_at_period_end:
            raise PaycoreError(
                SUBSCRIPTION_INVALID_STATE,
                "Schedule a cancellation with POST /v1/subscriptions/{id}/cancel (at_period_end: true)",
                param="cancel_at_period_end",
            )
        changes["cancel_at_period_end"] = False
    if description is not None:
        changes["description"] = description
    if metadata is not None:
        changes["metadata"] = metadata
    if not changes:
        return sub
    return _replace(sub, now, **changes)


def pending_effective_at(sub: Subscription) -> datetime | None:
    """When the pending changes take effect: the start of the next period to bill."""
    if not sub.has_pending_changes or sub.status == "canceled":
        return None
    return sub.period_date(sub.period_index + (1 if sub.unpaid else 0))


def pause(sub: Subscription, now: datetime) -> Subscription:
    if sub.status == "paused":
        return sub
    if sub.status != "active":
        raise PaycoreError(
            SUBSCRIPTION_CANCELED if sub.status == "canceled" else SUBSCRIPTION_INVALID_STATE,
            f"A {sub.status} subscription cannot be paused",
        )
    return _replace(sub, now, status="paused", paused_at=now)


def resume(sub: Subscription, now: datetime) -> Subscription:
    """paused or past_due → active. The period in progress is billed at once unless paid; periods
    that started and ended while the subscription was not billed are skipped."""
    if sub.status == "active":
        return sub
    if sub.status == "canceled":
        raise PaycoreError(SUBSCRIPTION_CANCELED)
    current = sub.period_containing(now)
    changes: dict[str, object] = {"status": "active", "paused_at": None, "locked_until": None}
    if current > sub.period_index:
        changes.update(
            period_index=current,
            next_billing_at=sub.period_date(current),
            dunning_attempts=0,
            dunning_started_at=None,
        )
    elif sub.unpaid:
        changes.update(next_billing_at=now, dunning_attempts=0, dunning_started_at=None)
    return _replace(sub, now, **changes)


def cancel(sub: Subscription, now: datetime, *, at_period_end: bool) -> tuple[Subscription, bool]:
    """(subscription, canceled now). Canceling a canceled subscription changes nothing."""
    if sub.status == "canceled":
        return sub, False
    paid_period_running = (
        sub.status == "active"
        and not sub.unpaid
        and sub.current_period_end is not None
        and sub.current_period_end > now
        and sub.next_billing_at == sub.current_period_end
    )
    if at_period_end and paid_period_running:
        return _replace(sub, now, cancel_at_period_end=True), False
    return _cancel_now(sub, now, "requested"), True


def _cancel_now(sub: Subscription, at: datetime, reason: str) -> Subscription:
    return _replace(
        sub,
        at,
        status="canceled",
        canceled_at=at,
        cancellation_reason=reason,
        cancel_at_period_end=False,
        locked_until=None,
        pending_amount=None,
        pending_interval_unit=None,
        pending_interval_count=None,
        pending_payment_method_id=None,
    )


# --- billing --------------------------------------------------------------------------------------
class ClaimAction(enum.StrEnum):
    CHARGE = "charge"  # a new attempt for the period
    RESUME = "resume"  # the period's attempt in flight (a crashed or slow run): ask its outcome again
    CANCEL = "cancel"  # the paid period ended with cancel_at_period_end


def decide_claim(sub: Subscription, *, live_attempt: bool) -> ClaimAction:
    if live_attempt:
        return ClaimAction.RESUME
    if sub.cancel_at_period_end:
        return ClaimAction.CANCEL
    return ClaimAction.CHARGE


def cancel_at_period_end(sub: Subscription, now: datetime) -> Subscription:
    """The billing run reached the end of the paid period of a subscription set to cancel then."""
    return _cancel_now(sub, sub.next_billing_at if sub.next_billing_at <= now else now, "period_end")


def open_period(sub: Subscription, now: datetime) -> Subscription:
    """Before the first attempt of a period: the pending changes take effect."""
    if sub.unpaid or not sub.has_pending_changes:
        return sub
    changes: dict[str, object] = {
        "pending_amount": None,
        "pending_interval_unit": None,
        "pending_interval_count": None,
        "pending_payment_method_id": None,
    }
    if sub.pending_amount is not None:
        changes["amount"] = sub.pending_amount
    if sub.pending_payment_method_id is not None:
        changes["payment_method_id"] = sub.pending_payment_method_id
    if sub.pending_interval_unit is not None and sub.pending_interval_count is not None:
        changes.update(
            anchor_at=sub.period_date(sub.period_index),
            anchor_index=sub.period_index,
            interval_unit=sub.pending_interval_unit,
            interval_count=sub.pending_interval_count,
        )
    return _replace(sub, now, **changes)


def charge_key(subscription_id: uuid.UUID, period_index: int, attempt: int) -> str:
    """The internal Idempotency-Key of one attempt. It contains a space, which an API key never
    does (`idempotency.model.KEY_PATTERN`), so no merchant request can take it."""
    return f"internal sub:{subscription_id}:{period_index}:{attempt}"


class Outcome(enum.StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED = "failed"  # provably not processed by the gateway: retried, no decline
    PENDING = "pending"  # in flight or awaiting reconciliation: no decision yet
    UNUSABLE = "unusable"  # the payment method cannot be charged (deleted, inactive, expired)


@dataclass(frozen=True, slots=True)
class ChargeDecision:
    subscription: Subscription
    events: tuple[str, ...] = ()
    next_retry_at: datetime | None = None
    charge_status: str = "pending"  # the attempt's own status: approved/declined/failed/pending


def after_charge(
    sub: Subscription,
    *,
    period_index: int,
    outcome: Outcome,
    retryable: bool,
    amount: int,
    now: datetime,
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
    retry_delay: timedelta = timedelta(minutes=5),
) -> ChargeDecision:
    """What an attempt's outcome does to its subscription (the dunning rules of the module doc)."""
    status = {
        Outcome.APPROVED: "approved",
        Outcome.DECLINED: "declined",
        Outcome.FAILED: "failed",
        Outcome.PENDING: "pending",
        Outcome.UNUSABLE: "failed",
    }[outcome]
    if sub.status == "canceled" or sub.period_index != period_index:
        # canceled meanwhile, or an outcome for a period already settled: the attempt is recorded,
        # the subscription stays as it is
        return ChargeDecision(sub, charge_status=status)
    if outcome is Outcome.PENDING:
        return ChargeDecision(_replace(sub, now, locked_until=now + retry_delay))
    if outcome is Outcome.FAILED:
        return ChargeDecision(_replace(sub, now, locked_until=now + retry_delay), charge_status=status)
    if outcome is Outcome.APPROVED:
        start, end = sub.period_date(period_index), sub.period_date(period_index + 1)
        paid = _replace(
            sub,
            now,
            current_period_start=start,
            current_period_end=end,
            period_index=period_index + 1,
            next_billing_at=end,
            dunning_attempts=0,
            dunning_started_at=None,
            locked_until=None,
            initial_amount=sub.initial_amount or amount,
        )
        return ChargeDecision(paid, (EVENT_RENEWED,), charge_status=status)
    attempts = sub.dunning_attempts + 1
    started = sub.dunning_started_at or now
    if outcome is Outcome.DECLINED and retryable and attempts <= len(schedule):
        retry_at = max(started + timedelta(seconds=schedule[attempts - 1]), now)
        retrying = _replace(
            sub,
            now,
            dunning_attempts=attempts,
            dunning_started_at=started,
            next_billing_at=retry_at,
            locked_until=None,
        )
        return ChargeDecision(retrying, (EVENT_PAYMENT_FAILED,), retry_at, charge_status=status)
    gave_up = _replace(
        sub,
        now,
        status="past_due" if sub.status == "active" else sub.status,
        dunning_attempts=attempts,
        dunning_started_at=started,
        locked_until=None,
    )
    events: tuple[str, ...] = (EVENT_PAYMENT_FAILED,)
    if gave_up.status == "past_due" and sub.status != "past_due":
        events = (EVENT_PAYMENT_FAILED, EVENT_PAST_DUE)
    return ChargeDecision(gave_up, events, charge_status=status)


def retryable_decline(gateway_code: str | None, decline_category: str | None) -> bool:
    """Whether a declined charge may be retried on the dunning schedule: the codes EPX §3.4 says
    to retry later (`05`, `51`, `61`, `65`, `91`, `96`); never a hard decline, a request error
    (`12`) or a code paycore does not know."""
    if gateway_code is not None:
        return codes.lookup(gateway_code).retry_later
    return decline_category == "soft_decline"


def check_schedule(schedule: tuple[float, ...]) -> tuple[float, ...]:
    """A dunning schedule: offsets (seconds) from the first decline, strictly increasing, > 0."""
    if not schedule:
        raise ValueError("at least one retry offset is required")
    if any(s <= 0 for s in schedule) or any(b <= a for a, b in itertools.pairwise(schedule)):
        raise ValueError("offsets must be positive and strictly increasing (e.g. 1d,3d,5d)")
    return schedule
