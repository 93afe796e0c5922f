"""SQL for subscriptions and their charge attempts (migration 0006). Every statement is a named,
tiered `Query` served by an index; tenant reads are filtered by `merchant_id`.

The billing run's claim (`subscriptions.claim_due`) selects due rows with `FOR UPDATE SKIP LOCKED`
through `idx_subscriptions_due`, in a short transaction that also writes each claimed row's
`locked_until` and its attempt (`subscription_charges`, status `pending`): a concurrent run skips
the locked rows, and after the commit sees them held until `locked_until`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from paycore.platform.db import Connection, Database, Query, Tier
from paycore.platform.db.keyset import keyset, listing_name
from paycore.platform.outbox import OUTBOX_COLUMNS, origin
from paycore.subscriptions.model import Subscription

COLUMNS: Final = """id, merchant_id, customer_id, payment_method_id, status, amount, currency, interval_unit,
    interval_count, start_at, anchor_at, anchor_index, period_index, next_billing_at, locked_until,
    current_period_start, current_period_end, dunning_attempts, dunning_started_at, initial_amount,
    cancel_at_period_end, canceled_at, cancellation_reason, paused_at, pending_amount,
    pending_interval_unit, pending_interval_count, pending_payment_method_id, description, metadata,
    created_at, updated_at"""

CHARGE_COLUMNS: Final = """id, subscription_id, merchant_id, period_index, period_start, period_end, attempt,
    status, amount, currency, payment_method_id, transaction_id, idempotency_key, decline_category,
    gateway_code, failure_code, next_retry_at, created_at, updated_at, resolved_at"""


class ChargeRow(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription_charges row: one attempt to collect one period."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    merchant_id: uuid.UUID
    period_index: int
    period_start: datetime
    period_end: datetime
    attempt: int
    status: str
    amount: int
    currency: str
    payment_method_id: uuid.UUID
    transaction_id: uuid.UUID | None
    idempotency_key: str
    decline_category: str | None = None
    gateway_code: str | None = None
    failure_code: str | None = None
    next_retry_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None


def _sub(row: Any) -> Subscription:
    data = dict(row)
    data["currency"] = data["currency"].strip()
    return Subscription(**data)


def _charge(row: Any) -> ChargeRow:
    data = dict(row)
    data["currency"] = data["currency"].strip()
    return ChargeRow(**data)


# --- subscriptions ---------------------------------------------------------------------------------
INSERT = Query(
    "subscriptions.insert",
    Tier.SIMPLE,
    """
    INSERT INTO subscriptions (id, merchant_id, customer_id, payment_method_id, status, amount, currency,
                               interval_unit, interval_count, start_at, anchor_at, anchor_index,
                               period_index, next_billing_at, description, metadata, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17)
    """,
)
GET = Query(
    "subscriptions.get",
    Tier.SIMPLE,
    f"SELECT {COLUMNS} FROM subscriptions WHERE id = $1 AND merchant_id = $2",
)
LOCK = Query(
    "subscriptions.lock",
    Tier.SIMPLE,
    f"SELECT {COLUMNS} FROM subscriptions WHERE id = $1 AND merchant_id = $2 FOR UPDATE",
)
LOCK_BY_ID = Query(
    "subscriptions.lock_by_id",
    Tier.SIMPLE,
    f"SELECT {COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE",
)
# Every mutable column from the pure model's new state (one statement per change).
SAVE = Query(
    "subscriptions.save",
    Tier.SIMPLE,
    """
    UPDATE subscriptions
       SET payment_method_id = $2, status = $3, amount = $4, interval_unit = $5, interval_count = $6,
           anchor_at = $7, anchor_index = $8, period_index = $9, next_billing_at = $10,
           locked_until = $11, current_period_start = $12, current_period_end = $13,
           dunning_attempts = $14, dunning_started_at = $15, initial_amount = $16,
           cancel_at_period_end = $17, canceled_at = $18, cancellation_reason = $19, paused_at = $20,
           pending_amount = $21, pending_interval_unit = $22, pending_interval_count = $23,
           pending_payment_method_id = $24, description = $25, metadata = $26, updated_at = $27
     WHERE id = $1
    """,
)
# The billing claim: due active subscriptions not held by another run, oldest first. `$1` is the
# run's clock (injectable), not the database's.
CLAIM_DUE = Query(
    "subscriptions.claim_due",
    Tier.STANDARD,
    f"""
    SELECT {COLUMNS} FROM subscriptions
     WHERE status = 'active' AND next_billing_at <= $1
       AND (locked_until IS NULL OR locked_until <= $1)
     ORDER BY next_billing_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
    """,
)
EVENT = Query(
    "subscriptions.event",
    Tier.SIMPLE,
    f"""
    INSERT INTO outbox_events ({OUTBOX_COLUMNS})
    VALUES ($1, $2, $3, 'subscription', $4, $5, $6, $7)
    """,
)


def _list_query(name: str, where: str, order: str) -> Query:
    return Query(
        name,
        Tier.STANDARD,
        f"SELECT {COLUMNS} FROM subscriptions WHERE merchant_id = $1 {where} ORDER BY {order} LIMIT $2",
    )


# --- charges ----------------------------------------------------------------------------------------
# The latest attempt of each given subscription (its period and number; `pending` = in flight).
LATEST_CHARGES = Query(
    "subscriptions.latest_charges",
    Tier.SIMPLE,
    f"""
    SELECT c.* FROM unnest($1::uuid[]) AS s(id)
    CROSS JOIN LATERAL (
        SELECT {CHARGE_COLUMNS} FROM subscription_charges
         WHERE subscription_id = s.id
         ORDER BY period_index DESC, attempt DESC
         LIMIT 1
    ) c
    """,
)
INSERT_CHARGE = Query(
    "subscriptions.insert_charge",
    Tier.SIMPLE,
    """
    INSERT INTO subscription_charges (id, subscription_id, merchant_id, period_index, period_start,
                                      period_end, attempt, status, amount, currency, payment_method_id,
                                      transaction_id, idempotency_key, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11, $12, $13, $13)
    """,
)
# An attempt's outcome, once: only a pending attempt changes.
RECORD_CHARGE = Query(
    "subscriptions.record_charge",
    Tier.SIMPLE,
    f"""
    UPDATE subscription_charges
       SET status = $2, transaction_id = $3, decline_category = $4, gateway_code = $5, failure_code = $6,
           next_retry_at = $7, updated_at = $8, resolved_at = $8
     WHERE id = $1 AND status = 'pending'
    RETURNING {CHARGE_COLUMNS}
    """,
)
GET_CHARGE = Query(
    "subscriptions.get_charge",
    Tier.SIMPLE,
    f"SELECT {CHARGE_COLUMNS} FROM subscription_charges WHERE id = $1",
)
LIST_CHARGES = Query(
    "subscriptions.list_charges",
    Tier.STANDARD,
    f"""
    SELECT {CHARGE_COLUMNS} FROM subscription_charges
     WHERE subscription_id = $1 AND merchant_id = $2
     ORDER BY period_index DESC, attempt DESC
     LIMIT $3
    """,
)


def save_args(sub: Subscription) -> tuple[Any, ...]:
    return (
        sub.id,
        sub.payment_method_id,
        sub.status,
        sub.amount,
        sub.interval_unit,
        sub.interval_count,
        sub.anchor_at,
        sub.anchor_index,
        sub.period_index,
        sub.next_billing_at,
        sub.locked_until,
        sub.current_period_start,
        sub.current_period_end,
        sub.dunning_attempts,
        sub.dunning_started_at,
        sub.initial_amount,
        sub.cancel_at_period_end,
        sub.canceled_at,
        sub.cancellation_reason,
        sub.paused_at,
        sub.pending_amount,
        sub.pending_interval_unit,
        sub.pending_interval_count,
        sub.pending_payment_method_id,
        sub.description,
        sub.metadata,
        sub.updated_at,
    )


class NewCharge(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    subscription_id: uuid.UUID
    merchant_id: uuid.UUID
    period_index: int
    period_start: datetime
    period_end: datetime
    attempt: int
    amount: int
    currency: str
    payment_method_id: uuid.UUID
    transaction_id: uuid.UUID
    idempotency_key: str
    created_at: datetime

    def args(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.subscription_id,
            self.merchant_id,
            self.period_index,
            self.period_start,
            self.period_end,
            self.attempt,
            self.amount,
            self.currency,
            self.payment_method_id,
            self.transaction_id,
            self.idempotency_key,
            self.created_at,
        )


class SubscriptionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- subscriptions -----------------------------------------------------------------------------
    async def insert(self, con: Connection, sub: Subscription) -> None:
        await con.execute(
            INSERT,
            sub.id,
            sub.merchant_id,
            sub.customer_id,
            sub.payment_method_id,
            sub.status,
            sub.amount,
            sub.currency,
            sub.interval_unit,
            sub.interval_count,
            sub.start_at,
            sub.anchor_at,
            sub.anchor_index,
            sub.period_index,
            sub.next_billing_at,
            sub.description,
            sub.metadata,
            sub.created_at,
        )

    async def get(self, sub_id: uuid.UUID, merchant_id: uuid.UUID) -> Subscription | None:
        row = await self.db.fetchrow(GET, sub_id, merchant_id)
        return None if row is None else _sub(row)

    async def lock(
        self, con: Connection, sub_id: uuid.UUID, merchant_id: uuid.UUID | None
    ) -> Subscription | None:
        if merchant_id is None:
            row = await con.fetchrow(LOCK_BY_ID, sub_id)
        else:
            row = await con.fetchrow(LOCK, sub_id, merchant_id)
        return None if row is None else _sub(row)

    async def save(self, con: Connection, sub: Subscription) -> None:
        await con.execute(SAVE, *save_args(sub))

    async def save_many(self, con: Connection, subs: list[Subscription]) -> None:
        if subs:
            await con.executemany(SAVE, [save_args(s) for s in subs])

    async def event(
        self,
        con: Connection,
        *,
        event_id: uuid.UUID,
        merchant_id: uuid.UUID,
        event_type: str,
        subscription_id: uuid.UUID,
        payload: Any,
        traceparent: str | None,
    ) -> None:
        await con.execute(
            EVENT, event_id, merchant_id, event_type, subscription_id, payload, traceparent, origin()
        )

    async def list_subscriptions(
        self,
        merchant_id: uuid.UUID,
        *,
        limit: int,
        status: str | None,
        customer_id: str | None,
        payment_method_id: uuid.UUID | None,
        after: tuple[datetime, uuid.UUID] | None,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Subscription]:
        args: list[Any] = [merchant_id, limit]
        equals = (("status", status), ("customer_id", customer_id), ("payment_method_id", payment_method_id))
        page = keyset(args, equals=equals, after=after, before=before)
        query = _list_query(listing_name("subscriptions.list", equals), page.where, page.order)
        rows = [_sub(r) for r in await self.db.fetch(query, *args)]
        if page.reverse:
            rows.reverse()
        return rows

    # -- billing ----------------------------------------------------------------------------------------
    async def claim_due(self, con: Connection, now: datetime, limit: int) -> list[Subscription]:
        return [_sub(r) for r in await con.fetch(CLAIM_DUE, now, limit)]

    async def latest_charges(self, con: Connection, sub_ids: list[uuid.UUID]) -> dict[uuid.UUID, ChargeRow]:
        if not sub_ids:
            return {}
        return {r["subscription_id"]: _charge(r) for r in await con.fetch(LATEST_CHARGES, sub_ids)}

    async def insert_charges(self, con: Connection, charges: list[NewCharge]) -> None:
        if charges:
            await con.executemany(INSERT_CHARGE, [c.args() for c in charges])

    async def record_charge(
        self,
        con: Connection,
        charge_id: uuid.UUID,
        *,
        status: str,
        transaction_id: uuid.UUID | None,
        decline_category: str | None,
        gateway_code: str | None,
        failure_code: str | None,
        next_retry_at: datetime | None,
        at: datetime,
    ) -> ChargeRow | None:
        row = await con.fetchrow(
            RECORD_CHARGE,
            charge_id,
            status,
            transaction_id,
            decline_category,
            gateway_code,
            failure_code,
            next_retry_at,
            at,
        )
        return None if row is None else _charge(row)

    async def get_charge(self, charge_id: uuid.UUID) -> ChargeRow | None:
        row = await self.db.fetchrow(GET_CHARGE, charge_id)
        return None if row is None else _charge(row)

    async def list_charges(self, sub_id: uuid.UUID, merchant_id: uuid.UUID, limit: int) -> list[ChargeRow]:
        return [_charge(r) for r in await self.db.fetch(LIST_CHARGES, sub_id, merchant_id, limit)]


def is_unique_violation(exc: BaseException, constraint: str) -> bool:
    return isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == constraint
