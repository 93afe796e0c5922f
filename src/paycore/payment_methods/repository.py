"""SQL for saved payment methods and ACH returns (see migration 0002). Every statement is a named,
tiered `Query` served by an index.

State changes are single statements (A3/A4, LATENCY-5): `UPDATE … RETURNING`, with the outbox event
written by the same statement. Event payloads are built in SQL by `_event_object` so every event of
a payment method carries the same public shape as the API (`schemas.PaymentMethodOut`).

The $0 gateway transactions of this capability (card storage `CCE8`, ACH pre-note `CKC0`/`CKS0`,
ACH storage `CKC8`) are rows of `transactions` (types `storage` and `prenote`), so their TRAN_NBRs
share the merchant's `uq_transactions_merchant_tran_nbr` space; this module writes those rows.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Final

import asyncpg
import msgspec

from paycore.payment_methods.model import PaymentMethod
from paycore.platform.db import Connection, Database, Query, Tier
from paycore.platform.outbox import OUTBOX_COLUMNS, origin

COLUMNS: Final = """id, merchant_id, customer_id, payment_type, bric, bric_kind, is_default, is_active,
    verification_status, card_brand, card_last4, exp_month, exp_year, ntid, account_type, account_last4,
    routing_number, holder_name, sec_code, billing, metadata, prenote_transaction_id, verified_at,
    verification_failure_code, return_count, deactivation_reason, last_used_at, created_at, updated_at,
    deleted_at, bric_expires_at"""

_TS = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _ts(expr: str) -> str:
    return _TS.format(expr)


def _event_object(a: str, livemode: str) -> str:
    """The public object of row alias `a` as jsonb (the same keys and values as the API)."""
    return f"""jsonb_build_object('object', jsonb_build_object(
        'id', {a}.id, 'object', 'payment_method', 'customer_id', {a}.customer_id,
        'type', {a}.payment_type,
        'status', CASE WHEN {a}.is_active THEN 'active' ELSE 'inactive' END,
        'is_default', {a}.is_default, 'verification_status', {a}.verification_status,
        'card', CASE WHEN {a}.payment_type = 'card' THEN jsonb_build_object(
            'brand', {a}.card_brand, 'last4', {a}.card_last4, 'exp_month', {a}.exp_month,
            'exp_year', {a}.exp_year) END,
        'bank_account', CASE WHEN {a}.payment_type = 'ach' THEN jsonb_build_object(
            'account_type', {a}.account_type, 'last4', {a}.account_last4,
            'routing_number', {a}.routing_number, 'holder_name', {a}.holder_name,
            'sec_code', {a}.sec_code, 'verified_at', {_ts(f"{a}.verified_at")},
            'verification_failure_code', {a}.verification_failure_code,
            'return_count', {a}.return_count) END,
        'billing', {a}.billing, 'metadata', coalesce({a}.metadata, '{{}}'::jsonb),
        'deactivation_reason', {a}.deactivation_reason,
        'last_used_at', {_ts(f"{a}.last_used_at")}, 'livemode', {livemode},
        'created_at', {_ts(f"{a}.created_at")}, 'updated_at', {_ts(f"{a}.updated_at")}))"""


def _with_event(update_cte: str, event_param: str, traceparent_param: str, request_id_param: str) -> str:
    """`WITH u AS (<update … RETURNING *>)` + the outbox event of every returned row when the event
    type parameter is not null; selects the rows."""
    return f"""
    WITH u AS ({update_cte}), ev AS (
        INSERT INTO outbox_events ({OUTBOX_COLUMNS})
        SELECT gen_random_uuid(), u.merchant_id, {event_param}, 'payment_method', u.id,
               {_event_object("u", "mm.environment = 'production'")}, {traceparent_param},
               {request_id_param}
          FROM u JOIN merchants mm ON mm.id = u.merchant_id
         WHERE {event_param}::text IS NOT NULL
    )
    SELECT {COLUMNS} FROM u"""


# --- payment methods ---------------------------------------------------------------------------------
INSERT = Query(
    "payment_methods.insert",
    Tier.SIMPLE,
    _with_event(
        f"""INSERT INTO customer_payment_methods (
            id, merchant_id, customer_id, payment_type, bric, bric_kind, bric_expires_at, is_default,
            is_active, verification_status, card_brand, card_last4, exp_month, exp_year, ntid, account_type,
            account_last4, routing_number, holder_name, sec_code, prenote_transaction_id, verified_at,
            billing, metadata)
        VALUES ($1, $2, $3, $4, $5, $6, $7, false, true, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, CASE WHEN $8 = 'verified' THEN now() END, $20, $21)
        RETURNING {COLUMNS}""",
        "$22",
        "$23",
        "$24",
    ),
)
GET = Query(
    "payment_methods.get", Tier.SIMPLE, f"SELECT {COLUMNS} FROM customer_payment_methods WHERE id = $1"
)
LOCK = Query(
    "payment_methods.lock",
    Tier.SIMPLE,
    f"SELECT {COLUMNS} FROM customer_payment_methods WHERE id = $1 FOR UPDATE",
)
LIST_FOR_CUSTOMER = Query(
    "payment_methods.list_for_customer",
    Tier.STANDARD,
    f"""SELECT {COLUMNS} FROM customer_payment_methods
         WHERE merchant_id = $1 AND customer_id = $2 AND deleted_at IS NULL
         ORDER BY is_default DESC, created_at DESC
         LIMIT $3""",
)
COUNT_LIVE = Query(
    "payment_methods.count_live",
    Tier.SIMPLE,
    """SELECT count(*) FROM customer_payment_methods
        WHERE merchant_id = $1 AND customer_id = $2 AND deleted_at IS NULL""",
)
DEFAULT_FOR_CUSTOMER = Query(
    "payment_methods.default_for_customer",
    Tier.SIMPLE,
    f"""SELECT {COLUMNS} FROM customer_payment_methods
         WHERE merchant_id = $1 AND customer_id = $2 AND is_default AND is_active AND deleted_at IS NULL""",
)
# One statement moves the default: every live method of the customer gets `is_default = (id = $1)`.
# Race-safe: the rows are locked first in id order (concurrent calls queue instead of deadlocking),
# the later call then rewrites every row it locked, and the exclusion constraint (checked at the end
# of the statement) keeps at most one default.
SET_DEFAULT = Query(
    "payment_methods.set_default",
    Tier.SIMPLE,
    f"""WITH locked AS (
            SELECT id FROM customer_payment_methods
             WHERE merchant_id = $2 AND customer_id = $3 AND deleted_at IS NULL
             ORDER BY id
               FOR UPDATE
        )
        UPDATE customer_payment_methods c
           SET is_default = (c.id = $1),
               updated_at = CASE WHEN c.is_default IS DISTINCT FROM (c.id = $1) THEN now()
                                 ELSE c.updated_at END
          FROM locked
         WHERE c.id = locked.id AND c.deleted_at IS NULL
           AND EXISTS (SELECT 1 FROM customer_payment_methods t
                        WHERE t.id = $1 AND t.merchant_id = $2 AND t.customer_id = $3
                          AND t.deleted_at IS NULL AND t.is_active)
        RETURNING {", ".join("c." + col.strip() for col in COLUMNS.split(","))}""",
)
SET_ACTIVE = Query(
    "payment_methods.set_active",
    Tier.SIMPLE,
    _with_event(
        f"""UPDATE customer_payment_methods
               SET is_active = $4,
                   deactivation_reason = CASE WHEN $4 THEN NULL ELSE $5 END,
                   return_count = CASE WHEN $4 THEN 0 ELSE return_count END,
                   updated_at = now()
             WHERE id = $1 AND merchant_id = $2 AND customer_id = $3 AND deleted_at IS NULL
               AND is_active <> $4 AND (NOT $4 OR verification_status <> 'failed')
            RETURNING {COLUMNS}""",
        "$6",
        "$7",
        "$8",
    ),
)
SOFT_DELETE = Query(
    "payment_methods.soft_delete",
    Tier.SIMPLE,
    f"""UPDATE customer_payment_methods
           SET deleted_at = now(), is_default = false, is_active = false, updated_at = now()
         WHERE id = $1 AND merchant_id = $2 AND customer_id = $3 AND deleted_at IS NULL
        RETURNING {COLUMNS}""",
)
TOUCH = Query(
    "payment_methods.touch",
    Tier.SIMPLE,
    """UPDATE customer_payment_methods SET last_used_at = greatest(coalesce(last_used_at, $2), $2)
        WHERE id = $1 RETURNING merchant_id, customer_id""",
)
# CRITICAL-2: the sweep's predicate repeats the partial index's three predicates verbatim and
# reads only covered columns, oldest first: an Index Only Scan on idx_payment_methods_ach_verification.
DUE_FOR_VERIFICATION = Query(
    "payment_methods.due_for_verification",
    Tier.STANDARD,
    """SELECT id, merchant_id, customer_id, created_at FROM customer_payment_methods
        WHERE payment_type = 'ach' AND verification_status = 'pending' AND deleted_at IS NULL
          AND created_at <= $1
        ORDER BY created_at
        LIMIT $2""",
)
VERIFY_BATCH = Query(
    "payment_methods.verify_batch",
    Tier.STANDARD,
    _with_event(
        f"""UPDATE customer_payment_methods
               SET verification_status = 'verified', verified_at = now(), updated_at = now()
             WHERE id = ANY($1::uuid[])
               AND payment_type = 'ach' AND verification_status = 'pending' AND deleted_at IS NULL
            RETURNING {COLUMNS}""",
        "'payment_method.verified'",
        "$2",
        "$3",
    ),
)
FAIL_VERIFICATION = Query(
    "payment_methods.fail_verification",
    Tier.SIMPLE,
    _with_event(
        f"""UPDATE customer_payment_methods
               SET verification_status = 'failed', verification_failed_at = now(),
                   verification_failure_code = $2, is_active = false, deactivation_reason = $3,
                   updated_at = now()
             WHERE id = $1 AND verification_status <> 'failed'
            RETURNING {COLUMNS}""",
        "'payment_method.verification_failed'",
        "$4",
        "$5",
    ),
)
COUNT_RETURN = Query(
    "payment_methods.count_return",
    Tier.SIMPLE,
    _with_event(
        f"""UPDATE customer_payment_methods
               SET return_count = return_count + 1,
                   is_active = is_active AND $2::text IS NULL,
                   deactivation_reason = CASE WHEN is_active AND $2::text IS NOT NULL THEN $2
                                              ELSE deactivation_reason END,
                   updated_at = now()
             WHERE id = $1
            RETURNING {COLUMNS}""",
        "$3",
        "$4",
        "$5",
    ),
)
DEACTIVATE_FOR_CHANGE = Query(
    "payment_methods.deactivate_for_change",
    Tier.SIMPLE,
    _with_event(
        f"""UPDATE customer_payment_methods
               SET is_active = false, deactivation_reason = $2, updated_at = now()
             WHERE id = $1 AND is_active
            RETURNING {COLUMNS}""",
        "'payment_method.deactivated'",
        "$3",
        "$4",
    ),
)
ACH_TOKENS_EXPIRING = Query(
    "payment_methods.ach_tokens_expiring",
    Tier.STANDARD,
    f"""SELECT {COLUMNS} FROM customer_payment_methods
         WHERE payment_type = 'ach' AND bric_kind = 'financial' AND is_active AND deleted_at IS NULL
           AND bric_expires_at < $1
         ORDER BY bric_expires_at
         LIMIT $2""",
)
REPLACE_ACH_TOKEN = Query(
    "payment_methods.replace_ach_token",
    Tier.SIMPLE,
    f"""UPDATE customer_payment_methods
           SET bric = $3, bric_kind = $4, bric_expires_at = $5, prenote_transaction_id = $6,
               updated_at = now()
         WHERE id = $1 AND bric = $2 AND deleted_at IS NULL
        RETURNING {COLUMNS}""",
)
PURGE_DELETED = Query(
    "payment_methods.purge_deleted",
    Tier.STANDARD,
    """DELETE FROM customer_payment_methods
        WHERE id IN (SELECT id FROM customer_payment_methods
                      WHERE deleted_at IS NOT NULL AND deleted_at < now() - make_interval(days => $1)
                      ORDER BY deleted_at LIMIT $2)""",
)

NOTIFY = Query("payment_methods.notify", Tier.SIMPLE, "SELECT pg_notify($1, $2)")

# --- the $0 gateway transactions (rows of `transactions`) ---------------------------------------------
INSERT_ZERO_DOLLAR = Query(
    "payment_methods.insert_zero_dollar_transaction",
    Tier.SIMPLE,
    """INSERT INTO transactions (id, merchant_id, group_id, depth, type, payment_type, status, source, amount,
                                 currency, tran_nbr, tran_type, batch_id, orig_auth_guid, gateway_request,
                                 customer_id)
       VALUES ($1, $2, $1, 0, $3, $4, 'pending', $5, 0, 'USD', $6, $7, $8, $9, $10, $11)
       RETURNING created_at""",
)
RECORD_ZERO_DOLLAR = Query(
    "payment_methods.record_zero_dollar_transaction",
    Tier.SIMPLE,
    """UPDATE transactions
          SET status = $2, auth_guid = $3, auth_resp = $4, auth_code = $5, auth_resp_text = $6,
              avs_result = $7, cvv_result = $8, card_brand = $9, card_last4 = $10, ntid = $11,
              decline_category = $12, failure_code = $13, attempts = attempts + $14, updated_at = now(),
              resolved_at = now(), payment_method_id = $15
        WHERE id = $1 AND status IN ('pending', 'unknown')""",
)
# a $0 request interrupted before its outcome was recorded (crash, cancellation): nothing moved
ABANDON_ZERO_DOLLAR = Query(
    "payment_methods.abandon_zero_dollar",
    Tier.STANDARD,
    """UPDATE transactions SET status = 'failed', failure_code = coalesce(failure_code, 'abandoned'),
              updated_at = now(), resolved_at = now()
        WHERE status IN ('pending', 'unknown') AND updated_at < now() - make_interval(secs => $1)
          AND type IN ('storage', 'prenote') AND source = 'api'""",
)
MARK_ZERO_DOLLAR_FAILED = Query(
    "payment_methods.mark_zero_dollar_failed",
    Tier.SIMPLE,
    """UPDATE transactions SET status = 'failed', failure_code = $2, updated_at = now(), resolved_at = now()
        WHERE id = $1 AND status IN ('pending', 'unknown')""",
)
TRANSACTION_BY_TRAN_NBR = Query(
    "payment_methods.transaction_by_tran_nbr",
    Tier.SIMPLE,
    """SELECT id, type, payment_type, status, payment_method_id, amount FROM transactions
        WHERE merchant_id = $1 AND tran_nbr = $2""",
)
METHOD_BY_PRENOTE = Query(
    "payment_methods.by_prenote",
    Tier.SIMPLE,
    f"""SELECT {COLUMNS} FROM customer_payment_methods
         WHERE prenote_transaction_id = $1 AND prenote_transaction_id IS NOT NULL AND deleted_at IS NULL
         FOR UPDATE""",
)

# --- ACH returns ---------------------------------------------------------------------------------------
INSERT_RETURN = Query(
    "payment_methods.insert_ach_return",
    Tier.SIMPLE,
    """INSERT INTO ach_returns (id, merchant_id, tran_nbr, code, kind, return_class, entry, transaction_id,
                               payment_method_id, action, return_date, amount)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
       ON CONFLICT (merchant_id, tran_nbr, code) DO NOTHING
       RETURNING id""",
)
RETURN_RATE_COUNTS = Query(
    "payment_methods.return_rate_counts",
    Tier.REPORT,
    """SELECT
         (SELECT count(*) FROM transactions
           WHERE merchant_id = $1 AND parent_id IS NULL AND created_at >= $2
             AND payment_type = 'ach' AND type = 'sale' AND status = 'approved') AS debits,
         count(*) FILTER (WHERE return_class = 'unauthorized') AS unauthorized,
         count(*) FILTER (WHERE return_class = 'administrative') AS administrative,
         count(*) AS total
       FROM ach_returns
      WHERE merchant_id = $1 AND return_date >= $3 AND kind = 'return' AND entry = 'debit'""",
)


def to_method(row: asyncpg.Record) -> PaymentMethod:
    return PaymentMethod(**dict(row))


class NewMethod(msgspec.Struct, frozen=True, kw_only=True):
    """The columns of a method to insert (built by the service). `repr` hides the token."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    customer_id: str
    payment_type: str
    bric: str
    bric_kind: str
    verification_status: str
    bric_expires_at: datetime | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    ntid: str | None = None
    account_type: str | None = None
    account_last4: str | None = None
    routing_number: str | None = None
    holder_name: str | None = None
    sec_code: str | None = None
    prenote_transaction_id: uuid.UUID | None = None
    billing: dict[str, str] | None = None
    metadata: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"NewMethod(id={self.id}, type={self.payment_type}, bric=[REDACTED])"


class PaymentMethodRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads ---------------------------------------------------------------------------------------
    async def get(self, method_id: uuid.UUID) -> PaymentMethod | None:
        row = await self.db.fetchrow(GET, method_id)
        return to_method(row) if row is not None else None

    async def list_for_customer(
        self, merchant_id: uuid.UUID, customer_id: str, limit: int
    ) -> list[PaymentMethod]:
        rows = await self.db.fetch(LIST_FOR_CUSTOMER, merchant_id, customer_id, limit)
        return [to_method(r) for r in rows]

    async def count_live(self, merchant_id: uuid.UUID, customer_id: str) -> int:
        return int(await self.db.fetchval(COUNT_LIVE, merchant_id, customer_id))

    async def default_for(self, merchant_id: uuid.UUID, customer_id: str) -> PaymentMethod | None:
        row = await self.db.fetchrow(DEFAULT_FOR_CUSTOMER, merchant_id, customer_id)
        return to_method(row) if row is not None else None

    # -- writes --------------------------------------------------------------------------------------
    async def insert(
        self, con: Connection, new: NewMethod, event_type: str, traceparent: str | None
    ) -> PaymentMethod:
        row = await con.fetchrow(
            INSERT,
            new.id,
            new.merchant_id,
            new.customer_id,
            new.payment_type,
            new.bric,
            new.bric_kind,
            new.bric_expires_at,
            new.verification_status,
            new.card_brand,
            new.card_last4,
            new.exp_month,
            new.exp_year,
            new.ntid,
            new.account_type,
            new.account_last4,
            new.routing_number,
            new.holder_name,
            new.sec_code,
            new.prenote_transaction_id,
            new.billing,
            new.metadata,
            event_type,
            traceparent,
            origin(),
        )
        assert row is not None
        return to_method(row)

    async def set_default(
        self, method_id: uuid.UUID, merchant_id: uuid.UUID, customer_id: str
    ) -> list[PaymentMethod]:
        rows = await self.db.fetch(SET_DEFAULT, method_id, merchant_id, customer_id)
        return [to_method(r) for r in rows]

    async def set_active(
        self,
        method_id: uuid.UUID,
        merchant_id: uuid.UUID,
        customer_id: str,
        active: bool,
        reason: str | None,
        event_type: str | None,
        traceparent: str | None,
    ) -> PaymentMethod | None:
        row = await self.db.fetchrow(
            SET_ACTIVE, method_id, merchant_id, customer_id, active, reason, event_type, traceparent, origin()
        )
        return to_method(row) if row is not None else None

    async def soft_delete(
        self, method_id: uuid.UUID, merchant_id: uuid.UUID, customer_id: str
    ) -> PaymentMethod | None:
        row = await self.db.fetchrow(SOFT_DELETE, method_id, merchant_id, customer_id)
        return to_method(row) if row is not None else None

    async def touch(self, method_id: uuid.UUID, at: datetime) -> tuple[uuid.UUID, str] | None:
        row = await self.db.fetchrow(TOUCH, method_id, at)
        return (row["merchant_id"], row["customer_id"]) if row is not None else None

    async def due_for_verification(
        self, cutoff: datetime, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
        rows = await self.db.fetch(DUE_FOR_VERIFICATION, cutoff, limit)
        return [(r["id"], r["merchant_id"], r["customer_id"]) for r in rows]

    async def verify_batch(self, ids: list[uuid.UUID], traceparent: str | None) -> list[PaymentMethod]:
        rows = await self.db.fetch(VERIFY_BATCH, ids, traceparent, origin())
        return [to_method(r) for r in rows]

    async def notify(self, channel: str, payload: str) -> None:
        await self.db.fetchval(NOTIFY, channel, payload)

    async def purge_deleted(self, older_than_days: int, limit: int) -> int:
        status = await self.db.execute(PURGE_DELETED, older_than_days, limit)
        return int(status.rsplit(" ", 1)[-1])

    # -- $0 gateway transactions ---------------------------------------------------------------------
    async def insert_zero_dollar(self, con: Connection, args: tuple[Any, ...]) -> datetime:
        return await con.fetchval(INSERT_ZERO_DOLLAR, *args)  # type: ignore[no-any-return]

    async def record_zero_dollar(self, con: Connection | None, args: tuple[Any, ...]) -> None:
        if con is None:
            await self.db.execute(RECORD_ZERO_DOLLAR, *args)
        else:
            await con.execute(RECORD_ZERO_DOLLAR, *args)

    async def mark_zero_dollar_failed(self, txn_id: uuid.UUID, reason: str) -> None:
        await self.db.execute(MARK_ZERO_DOLLAR_FAILED, txn_id, reason)

    async def abandon_zero_dollar(self, older_than_seconds: float) -> int:
        status = await self.db.execute(ABANDON_ZERO_DOLLAR, older_than_seconds)
        return int(status.rsplit(" ", 1)[-1])

    # -- ACH returns ---------------------------------------------------------------------------------
    async def transaction_by_tran_nbr(
        self, con: Connection, merchant_id: uuid.UUID, tran_nbr: int
    ) -> asyncpg.Record | None:
        return await con.fetchrow(TRANSACTION_BY_TRAN_NBR, merchant_id, tran_nbr)

    async def lock(self, con: Connection, method_id: uuid.UUID) -> PaymentMethod | None:
        row = await con.fetchrow(LOCK, method_id)
        return to_method(row) if row is not None else None

    async def by_prenote(self, con: Connection, transaction_id: uuid.UUID) -> PaymentMethod | None:
        row = await con.fetchrow(METHOD_BY_PRENOTE, transaction_id)
        return to_method(row) if row is not None else None

    async def insert_return(self, con: Connection, args: tuple[Any, ...]) -> bool:
        return await con.fetchval(INSERT_RETURN, *args) is not None

    async def fail_verification(
        self, con: Connection, method_id: uuid.UUID, code: str, reason: str, traceparent: str | None
    ) -> PaymentMethod | None:
        row = await con.fetchrow(FAIL_VERIFICATION, method_id, code, reason, traceparent, origin())
        return to_method(row) if row is not None else None

    async def count_return(
        self,
        con: Connection,
        method_id: uuid.UUID,
        deactivate_reason: str | None,
        event_type: str | None,
        traceparent: str | None,
    ) -> PaymentMethod | None:
        row = await con.fetchrow(
            COUNT_RETURN, method_id, deactivate_reason, event_type, traceparent, origin()
        )
        return to_method(row) if row is not None else None

    async def deactivate_for_change(
        self, con: Connection, method_id: uuid.UUID, reason: str, traceparent: str | None
    ) -> PaymentMethod | None:
        """A NOC paycore cannot apply: stop the account (not a return: `return_count` unchanged)."""
        row = await con.fetchrow(DEACTIVATE_FOR_CHANGE, method_id, reason, traceparent, origin())
        return to_method(row) if row is not None else None

    async def ach_tokens_expiring(self, before: datetime, limit: int) -> list[PaymentMethod]:
        return [to_method(r) for r in await self.db.fetch(ACH_TOKENS_EXPIRING, before, limit)]

    async def replace_ach_token(
        self,
        con: Connection,
        method_id: uuid.UUID,
        old_bric: str,
        token: tuple[str, str, datetime | None],
        prenote_id: uuid.UUID,
    ) -> PaymentMethod | None:
        """Swap the token (BRIC, kind, expiry) unless another run already did (`old_bric` gone)."""
        row = await con.fetchrow(REPLACE_ACH_TOKEN, method_id, old_bric, *token, prenote_id)
        return to_method(row) if row is not None else None

    async def return_rate_counts(
        self, merchant_id: uuid.UUID, debits_since: datetime, returns_since: date
    ) -> tuple[int, int, int, int]:
        row = await self.db.fetchrow(RETURN_RATE_COUNTS, merchant_id, debits_since, returns_since)
        assert row is not None
        return int(row["debits"]), int(row["unauthorized"]), int(row["administrative"]), int(row["total"])
