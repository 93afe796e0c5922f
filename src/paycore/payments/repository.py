"""SQL for payments. Each statement is named, tiered and served by an index (see 0001_initial).

The hot path is two statements: `payments.begin` (claim the Idempotency-Key and insert the
pending transaction, one round trip) and `payments.record_outcome` (the outcome, the group ledger,
the stored idempotent response and the outbox event, one round trip).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from paycore.idempotency.model import IdempotencyRequest
from paycore.idempotency.repository import CLAIM_CTE
from paycore.payments.model import Entry, Group, TxStatus, TxType
from paycore.platform.db import Connection, Database, Query, Tier
from paycore.platform.db.keyset import keyset, listing_name
from paycore.platform.outbox import OUTBOX_COLUMNS, origin

_COLUMNS = """id, merchant_id, group_id, parent_id, depth, type, payment_type, status, source, amount,
    currency, tran_nbr, tran_type, batch_id, orig_auth_guid, auth_guid, auth_resp, auth_code,
    auth_resp_text, avs_result, cvv_result, card_brand, card_last4, ntid, decline_category,
    failure_code, attempts, customer_id, payment_method_id, subscription_id, description, metadata,
    amount_captured, amount_refunded, voided_at, created_at, updated_at, resolved_at"""


class TxnRow(msgspec.Struct, frozen=True, kw_only=True):
    """A transactions row as paycore reads it."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    group_id: uuid.UUID
    parent_id: uuid.UUID | None
    depth: int
    type: str
    payment_type: str
    status: str
    source: str
    amount: int
    currency: str
    tran_nbr: int
    tran_type: str
    batch_id: str
    orig_auth_guid: str | None
    auth_guid: str | None
    auth_resp: str | None
    auth_code: str | None
    auth_resp_text: str | None
    avs_result: str | None
    cvv_result: str | None
    card_brand: str | None
    card_last4: str | None
    ntid: str | None
    decline_category: str | None
    failure_code: str | None
    attempts: int
    customer_id: str | None
    payment_method_id: uuid.UUID | None
    subscription_id: uuid.UUID | None
    description: str | None
    metadata: dict[str, str] | None
    amount_captured: int
    amount_refunded: int
    voided_at: datetime | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None

    def entry(self) -> Entry:
        return Entry(
            id=self.id,
            type=TxType(self.type),
            status=TxStatus(self.status),
            amount=self.amount,
            parent_id=self.parent_id,
            batch_id=self.batch_id,
            depth=self.depth,
        )


def row_to_txn(row: asyncpg.Record) -> TxnRow:
    return TxnRow(**dict(row))


class NewTransaction(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    merchant_id: uuid.UUID
    group_id: uuid.UUID
    parent_id: uuid.UUID | None
    depth: int
    type: str
    payment_type: str
    source: str
    amount: int
    currency: str
    tran_nbr: int
    tran_type: str
    batch_id: str
    orig_auth_guid: str | None
    gateway_request: str | None
    customer_id: str | None = None
    payment_method_id: uuid.UUID | None = None
    subscription_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, str] | None = None

    def columns(self) -> tuple[Any, ...]:
        """The values after (id, merchant_id), in the column order of both inserts."""
        return (
            self.group_id, self.parent_id, self.depth, self.type, self.payment_type, self.source,
            self.amount, self.currency, self.tran_nbr, self.tran_type, self.batch_id, self.orig_auth_guid,
            self.gateway_request, self.customer_id, self.payment_method_id, self.subscription_id,
            self.description, self.metadata,
        )  # fmt: skip


_BEGIN_VALUES = """$6::uuid, $1::uuid, $7::uuid, $8::uuid, $9::smallint, $10::text, $11::text, 'pending',
           $12::text, $13::bigint, $14::char(3), $15::bigint, $16::text, $17::text, $18::text, $19::text,
           $20::text, $21::uuid, $22::uuid, $23::text, $24::jsonb"""

BEGIN = Query(
    "payments.begin",
    Tier.SIMPLE,
    f"""
    WITH {CLAIM_CTE}, txn AS (
        INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type, status,
                                  source, amount, currency, tran_nbr, tran_type, batch_id, orig_auth_guid,
                                  gateway_request, customer_id, payment_method_id, subscription_id,
                                  description, metadata)
        SELECT {_BEGIN_VALUES} FROM claim
        RETURNING created_at
    )
    SELECT (SELECT created_at FROM txn) AS created_at
    """,
)

INSERT_TRANSACTION = Query(
    "payments.insert_transaction",
    Tier.SIMPLE,
    """
    INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type, status,
                              source, amount, currency, tran_nbr, tran_type, batch_id, orig_auth_guid,
                              gateway_request, customer_id, payment_method_id, subscription_id,
                              description, metadata)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
            $19, $20)
    RETURNING created_at
    """,
)

RECORD_OUTCOME = Query(
    "payments.record_outcome",
    Tier.SIMPLE,
    f"""
    WITH t AS (
        UPDATE transactions
           SET status = $2, auth_guid = $3, auth_resp = $4, auth_code = $5, auth_resp_text = $6,
               avs_result = $7, cvv_result = $8, card_brand = coalesce($9, card_brand),
               card_last4 = coalesce($10, card_last4), ntid = $11, decline_category = $12,
               failure_code = $13, attempts = attempts + $14,
               amount_captured = CASE WHEN parent_id IS NULL THEN amount_captured + $15
                                      ELSE amount_captured END,
               updated_at = now(),
               resolved_at = CASE WHEN $2 IN ('pending', 'unknown') THEN NULL ELSE now() END
         WHERE id = $1 AND status IN ('pending', 'unknown')
        RETURNING id, merchant_id, group_id, parent_id, updated_at
    ), r AS (
        UPDATE transactions g
           SET amount_captured = g.amount_captured + $15, amount_refunded = g.amount_refunded + $16,
               voided_at = CASE WHEN $17 THEN now() ELSE g.voided_at END, updated_at = now()
          FROM t
         WHERE g.id = t.group_id AND t.parent_id IS NOT NULL
    ), done AS (
        UPDATE idempotency_keys
           SET status = 'completed', response_status = $18, response_body = $19, completed_at = now()
         WHERE resource_id = $1 AND (status = 'in_flight' OR response_status = 202)
           AND $18::int IS NOT NULL AND EXISTS (SELECT 1 FROM t)
    ), released AS (
        DELETE FROM idempotency_keys
         WHERE resource_id = $1 AND (status = 'in_flight' OR response_status = 202)
           AND $18::int IS NULL AND $20 AND EXISTS (SELECT 1 FROM t)
    ), event AS (
        INSERT INTO outbox_events ({OUTBOX_COLUMNS})
        SELECT $21, t.merchant_id, $22, 'payment', t.group_id, $23, $24, $25
          FROM t WHERE $22::text IS NOT NULL
    )
    SELECT updated_at FROM t
    """,
)

LOCK_ROOT = Query(
    "payments.lock_root",
    Tier.SIMPLE,
    f"SELECT {_COLUMNS} FROM transactions "
    "WHERE id = $1 AND merchant_id = $2 AND parent_id IS NULL FOR UPDATE",
)
GROUP_CHILDREN = Query(
    "payments.group_children",
    Tier.SIMPLE,
    f"SELECT {_COLUMNS} FROM transactions WHERE group_id = $1 AND id <> $1 ORDER BY created_at, id",
)
GET_GROUP = Query(
    "payments.get_group",
    Tier.SIMPLE,
    f"SELECT {_COLUMNS} FROM transactions WHERE group_id = $1 AND merchant_id = $2 ORDER BY created_at, id",
)
GET_TRANSACTION = Query(
    "payments.get_transaction",
    Tier.SIMPLE,
    f"SELECT {_COLUMNS}, gateway_request FROM transactions WHERE id = $1",
)
GROUPS_FOR_PAGE = Query(
    "payments.groups_for_page",
    Tier.STANDARD,
    f"""SELECT {_COLUMNS} FROM transactions
         WHERE group_id = ANY($1::uuid[]) AND id <> group_id AND merchant_id = $2
         ORDER BY created_at, id""",
)
GROUPS_BY_IDS = Query(
    "payments.groups_by_ids",
    Tier.STANDARD,
    f"""SELECT {_COLUMNS} FROM transactions
         WHERE group_id = ANY($1::uuid[]) AND merchant_id = $2
         ORDER BY group_id, created_at, id""",
)
UNRESOLVED = Query(
    "payments.unresolved",
    Tier.STANDARD,
    f"""SELECT {_COLUMNS} FROM transactions
         WHERE status IN ('pending', 'unknown') AND updated_at < now() - make_interval(secs => $1)
           -- a Browser Post row waits for its shopper: the checkout's callback or expiry settles it
           AND NOT (source = 'browser_post' AND status = 'pending')
         ORDER BY updated_at LIMIT $2""",
)
# Hosted-checkout rows that expired without their callback, not yet checked against the report.
EXPIRED_BROWSER_POSTS = Query(
    "payments.expired_browser_posts",
    Tier.STANDARD,
    f"""SELECT {_COLUMNS} FROM transactions
         WHERE status = 'expired' AND failure_code = 'checkout_expired'
           AND source = 'browser_post' AND type IN ('sale', 'auth')
         ORDER BY updated_at LIMIT $1""",
)
MARK_EXPIRED_UNPAID = Query(
    "payments.mark_expired_unpaid",
    Tier.SIMPLE,
    """UPDATE transactions SET failure_code = 'checkout_expired_unpaid', updated_at = now()
        WHERE id = $1 AND status = 'expired' AND failure_code = 'checkout_expired'""",
)
REOPEN_EXPIRED = Query(
    "payments.reopen_expired",
    Tier.SIMPLE,
    """UPDATE transactions SET status = 'unknown', updated_at = now()
        WHERE id = $1 AND status = 'expired' AND failure_code = 'checkout_expired'
       RETURNING id""",
)
MARK_UNKNOWN = Query(
    "payments.mark_unknown",
    Tier.SIMPLE,
    """UPDATE transactions SET status = 'unknown', failure_code = $2, attempts = attempts + $3,
              updated_at = now()
        WHERE id = $1 AND status = 'pending'""",
)

MARK_NOT_SENT = Query(
    "payments.mark_not_sent",
    Tier.SIMPLE,
    """WITH t AS (
           UPDATE transactions SET status = 'failed', failure_code = 'cancelled_before_sending',
                  updated_at = now(), resolved_at = now()
            WHERE id = $1 AND status = 'pending'
           RETURNING id)
       DELETE FROM idempotency_keys
        WHERE resource_id = $1 AND status = 'in_flight' AND EXISTS (SELECT 1 FROM t)""",
)


def _list_query(name: str, where: str, order: str) -> Query:
    return Query(
        name,
        Tier.STANDARD,
        f"SELECT {_COLUMNS} FROM transactions WHERE merchant_id = $1 AND parent_id IS NULL "
        f"AND type IN ('sale', 'auth') {where} "
        f"ORDER BY {order} LIMIT $2",
    )


class PaymentRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(
        self,
        merchant_id: uuid.UUID,
        idem: IdempotencyRequest,
        txn: NewTransaction,
    ) -> datetime | None:
        """Claim the key and insert the pending root in one statement; None when the key is taken.

        Raises asyncpg.UniqueViolationError on a TRAN_NBR collision (the caller picks the next k).
        """
        return await self.db.fetchval(  # type: ignore[no-any-return]
            BEGIN,
            merchant_id,
            idem.key,
            idem.fingerprint,
            idem.method,
            idem.path,
            txn.id,
            *txn.columns(),
        )

    async def insert(self, con: Connection, txn: NewTransaction) -> datetime:
        return await con.fetchval(  # type: ignore[no-any-return]
            INSERT_TRANSACTION, txn.id, txn.merchant_id, *txn.columns()
        )

    async def record_outcome(self, con: Connection | None, args: tuple[Any, ...]) -> datetime | None:
        if con is None:
            return await self.db.fetchval(RECORD_OUTCOME, *args, origin())  # type: ignore[no-any-return]
        return await con.fetchval(RECORD_OUTCOME, *args, origin())  # type: ignore[no-any-return]

    async def mark_unknown(self, txn_id: uuid.UUID, reason: str, attempts: int) -> None:
        await self.db.execute(MARK_UNKNOWN, txn_id, reason, attempts)

    async def mark_not_sent(self, txn_id: uuid.UUID) -> None:
        """A cancelled call that provably never left paycore: failed, and its key released."""
        await self.db.execute(MARK_NOT_SENT, txn_id)

    async def lock_group(
        self, con: Connection, payment_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> tuple[TxnRow, list[TxnRow]] | None:
        row = await con.fetchrow(LOCK_ROOT, payment_id, merchant_id)
        if row is None:
            return None
        children = await con.fetch(GROUP_CHILDREN, payment_id)
        return row_to_txn(row), [row_to_txn(r) for r in children]

    async def get_group(self, payment_id: uuid.UUID, merchant_id: uuid.UUID) -> list[TxnRow]:
        return [row_to_txn(r) for r in await self.db.fetch(GET_GROUP, payment_id, merchant_id)]

    async def get_transaction(self, txn_id: uuid.UUID) -> tuple[TxnRow, str | None] | None:
        row = await self.db.fetchrow(GET_TRANSACTION, txn_id)
        if row is None:
            return None
        data = dict(row)
        body = data.pop("gateway_request")
        return TxnRow(**data), body

    async def children_for(self, group_ids: list[uuid.UUID], merchant_id: uuid.UUID) -> list[TxnRow]:
        if not group_ids:
            return []
        return [row_to_txn(r) for r in await self.db.fetch(GROUPS_FOR_PAGE, group_ids, merchant_id)]

    async def groups_by_ids(self, group_ids: list[uuid.UUID], merchant_id: uuid.UUID) -> list[TxnRow]:
        """Every transaction of the given groups (roots and children), in one query."""
        return [row_to_txn(r) for r in await self.db.fetch(GROUPS_BY_IDS, group_ids, merchant_id)]

    async def list_roots(
        self,
        merchant_id: uuid.UUID,
        *,
        limit: int,
        status: str | None,
        customer_id: str | None,
        created_gte: datetime | None,
        created_lt: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[TxnRow]:
        args: list[Any] = [merchant_id, limit]
        equals = (("status", status), ("customer_id", customer_id))
        page = keyset(
            args, equals=equals, created_gte=created_gte, created_lt=created_lt, after=after, before=before
        )
        query = _list_query(listing_name("payments.list", equals), page.where, page.order)
        out = [row_to_txn(r) for r in await self.db.fetch(query, *args)]
        if page.reverse:
            out.reverse()
        return out

    async def expired_browser_posts(self, limit: int) -> list[TxnRow]:
        return [row_to_txn(r) for r in await self.db.fetch(EXPIRED_BROWSER_POSTS, limit)]

    async def mark_expired_unpaid(self, txn_id: uuid.UUID) -> None:
        await self.db.execute(MARK_EXPIRED_UNPAID, txn_id)

    async def reopen_expired(self, con: Connection, txn_id: uuid.UUID) -> bool:
        return await con.fetchrow(REOPEN_EXPIRED, txn_id) is not None

    async def unresolved(self, older_than_seconds: float, limit: int) -> list[TxnRow]:
        return [row_to_txn(r) for r in await self.db.fetch(UNRESOLVED, older_than_seconds, limit)]


def group_of(root: TxnRow, children: list[TxnRow]) -> Group:
    return Group(root=root.entry(), children=tuple(c.entry() for c in children))


# --- MON-2 business aggregates (the `payments.business_aggregates` job, every 5 min) ------------------
# A "payment" is an approved sale or authorization (a root: captures, refunds and voids are children).
# Approved sales/auths since $1, counted per (merchant, customer) and folded into how many customers
# made n payments: one range scan of `idx_transactions_type_status_created` (type IN …, status,
# created_at ≥ $1) reads exactly the window's approved payments, whatever the table's history.
CUSTOMER_ACTIVITY = Query(
    "payments.customer_activity",
    Tier.REPORT,
    """
    SELECT per_customer.merchant_id, per_customer.n, count(*) AS customers
      FROM (SELECT merchant_id, customer_id, count(*) AS n
              FROM transactions
             WHERE type IN ('sale', 'auth') AND status = 'approved' AND created_at >= $1
               AND parent_id IS NULL AND customer_id IS NOT NULL
             GROUP BY merchant_id, customer_id) per_customer
     GROUP BY per_customer.merchant_id, per_customer.n
    """,
)
# Every merchant with its creation time and the creation time of its first approved payment (NULL
# before it has one): per merchant, the oldest entry of its approved range of
# `idx_transactions_merchant_status_created` (read backwards, stopped at the first sale/auth).
MERCHANT_FIRST_PAYMENTS = Query(
    "payments.merchant_first_payments",
    Tier.REPORT,
    """
    SELECT m.id, m.slug, m.created_at, first_payment.created_at AS first_payment_at
      FROM merchants m
      LEFT JOIN LATERAL (
            SELECT t.created_at
              FROM transactions t
             WHERE t.merchant_id = m.id AND t.parent_id IS NULL AND t.status = 'approved'
               AND t.type IN ('sale', 'auth')
             ORDER BY t.created_at
             LIMIT 1
           ) first_payment ON true
    """,
)


class CustomerActivity(msgspec.Struct, frozen=True):
    merchant_id: uuid.UUID
    payments: int  # approved payments of one customer in the window
    customers: int  # customers of the merchant with exactly that many


class MerchantFirstPayment(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    created_at: datetime
    first_payment_at: datetime | None


class AggregateRepository:
    """The REPORT-tier reads of the MON-2 business aggregates (worker only, never per request)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def customer_activity(self, since: datetime) -> list[CustomerActivity]:
        rows = await self.db.fetch(CUSTOMER_ACTIVITY, since)
        return [CustomerActivity(r["merchant_id"], int(r["n"]), int(r["customers"])) for r in rows]

    async def merchant_first_payments(self) -> list[MerchantFirstPayment]:
        rows = await self.db.fetch(MERCHANT_FIRST_PAYMENTS)
        return [
            MerchantFirstPayment(r["id"], r["slug"], r["created_at"], r["first_payment_at"]) for r in rows
        ]
