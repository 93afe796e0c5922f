"""SQL for hosted checkout. Each statement is named, tiered and served by an index (0003_checkout).

* `checkout.begin`: claim the Idempotency-Key, insert the pending Browser Post transaction and its
  session, in one round trip.
* `checkout.finalize` (LATENCY-3): the callback's compare-and-set. It locates and updates the
  transaction by primary key *only if* it is this merchant's Browser Post row with the same
  TRAN_NBR, type, amount and customer and is still open (`pending`, `expired`, or `unknown` for a
  definitive answer), and completes the session, in one statement. Anything else updates nothing;
  the service then reads the row to tell a replay from a mismatch.
* `checkout.expire_due`: the expiry sweep (`FOR UPDATE SKIP LOCKED`, batch-limited).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from paycore.idempotency.model import IdempotencyRequest
from paycore.idempotency.repository import CLAIM_CTE
from paycore.payments.repository import TxnRow
from paycore.platform.db import Connection, Database, Query, Tier
from paycore.platform.outbox import OUTBOX_COLUMNS, origin

_TXN_FIELDS = TxnRow.__struct_fields__
_TX_COLUMNS = ", ".join(f"tx.{name}" for name in _TXN_FIELDS)
_SESSION_COLUMNS = """s.id AS session_id, s.merchant_id AS session_merchant_id, s.transaction_id, s.mode,
    s.return_url, s.decline_url, s.state, s.tac_expires_at, s.expires_at, s.tacs_issued, s.callback_digest,
    s.result_status, s.payment_method_id AS session_payment_method_id, s.completed_at,
    s.created_at AS session_created_at"""


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A checkout session joined with its transaction."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    transaction_id: uuid.UUID
    mode: str
    return_url: str
    decline_url: str
    state: str
    tac_expires_at: datetime | None
    expires_at: datetime
    tacs_issued: int
    callback_digest: bytes | None
    result_status: str | None
    payment_method_id: uuid.UUID | None
    completed_at: datetime | None
    created_at: datetime
    txn: TxnRow


def _session_of(row: asyncpg.Record) -> SessionRow:
    data = dict(row)
    txn = TxnRow(**{name: data[name] for name in _TXN_FIELDS})
    return SessionRow(
        id=data["session_id"],
        merchant_id=data["session_merchant_id"],
        transaction_id=data["transaction_id"],
        mode=data["mode"],
        return_url=data["return_url"],
        decline_url=data["decline_url"],
        state=data["state"],
        tac_expires_at=data["tac_expires_at"],
        expires_at=data["expires_at"],
        tacs_issued=data["tacs_issued"],
        callback_digest=data["callback_digest"],
        result_status=data["result_status"],
        payment_method_id=data["session_payment_method_id"],
        completed_at=data["completed_at"],
        created_at=data["session_created_at"],
        txn=txn,
    )


class NewCheckout(msgspec.Struct, frozen=True, kw_only=True):
    session_id: uuid.UUID
    txn_id: uuid.UUID
    merchant_id: uuid.UUID
    mode: str
    tx_type: str
    amount: int
    currency: str
    tran_nbr: int
    tran_type: str
    batch_id: str
    customer_id: str | None
    description: str | None
    metadata: dict[str, str] | None
    return_url: str
    decline_url: str
    expires_at: datetime


BEGIN = Query(
    "checkout.begin",
    Tier.SIMPLE,
    f"""
    WITH {CLAIM_CTE}, txn AS (
        INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, source, amount,
                                  currency, tran_nbr, tran_type, batch_id, customer_id, description, metadata)
        SELECT $7::uuid, $1::uuid, $7::uuid, $8::text, 'card', 'pending', 'browser_post', $9::bigint,
               $10::char(3), $11::bigint, $12::text, $13::text, $14::text, $15::text, $16::jsonb
          FROM claim
        RETURNING id
    ), sess AS (
        INSERT INTO checkout_sessions (id, merchant_id, transaction_id, mode, return_url, decline_url,
                                       expires_at)
        SELECT $6::uuid, $1::uuid, txn.id, $17::text, $18::text, $19::text, $20::timestamptz FROM txn
        RETURNING created_at
    )
    SELECT (SELECT created_at FROM sess) AS created_at
    """,
)

TAC_ISSUED = Query(
    "checkout.tac_issued",
    Tier.SIMPLE,
    """
    WITH s AS (
        UPDATE checkout_sessions cs
           SET tac_expires_at = $2, expires_at = greatest(cs.expires_at, $3),
               tacs_issued = cs.tacs_issued + 1, updated_at = now()
         WHERE cs.id = $1 AND cs.merchant_id = $4 AND cs.state = 'open'
           AND EXISTS (SELECT 1 FROM transactions t WHERE t.id = cs.transaction_id AND t.status = 'pending')
        RETURNING cs.id
    ), done AS (
        UPDATE idempotency_keys
           SET status = 'completed', response_status = $6, response_body = $7, completed_at = now()
         WHERE merchant_id = $4 AND key = $5 AND status = 'in_flight' AND EXISTS (SELECT 1 FROM s)
    )
    SELECT count(*) FROM s
    """,
)

ABANDON = Query(
    "checkout.abandon",
    Tier.SIMPLE,
    """
    WITH s AS (
        UPDATE checkout_sessions SET state = 'failed', updated_at = now()
         WHERE id = $1 AND state = 'open'
        RETURNING transaction_id
    ), t AS (
        UPDATE transactions SET status = 'failed', failure_code = $2, updated_at = now(), resolved_at = now()
         WHERE id = (SELECT transaction_id FROM s) AND status = 'pending'
    )
    DELETE FROM idempotency_keys
     WHERE merchant_id = $3 AND key = $4 AND status = 'in_flight'
    """,
)

GET_SESSION = Query(
    "checkout.get_session",
    Tier.SIMPLE,
    f"""SELECT {_SESSION_COLUMNS}, {_TX_COLUMNS}
          FROM checkout_sessions s JOIN transactions tx ON tx.id = s.transaction_id
         WHERE s.id = $1 AND s.merchant_id = $2""",
)

GET_FOR_TRANSACTION = Query(
    "checkout.get_for_transaction",
    Tier.SIMPLE,
    f"""SELECT {_SESSION_COLUMNS}, {_TX_COLUMNS}
          FROM transactions tx JOIN checkout_sessions s ON s.transaction_id = tx.id
         WHERE tx.id = $1 AND tx.merchant_id = $2""",
)

FINALIZE = Query(
    "checkout.finalize",
    Tier.SIMPLE,
    f"""
    WITH prev AS (
        SELECT id, status FROM transactions
         WHERE id = $1 AND merchant_id = $2 AND source = 'browser_post'
         FOR UPDATE
    ), tx AS (
        UPDATE transactions tx
           SET status = $7, auth_guid = $8, auth_resp = $9, auth_code = $10, auth_resp_text = $11,
               avs_result = $12, cvv_result = $13, card_brand = $14, card_last4 = $15, ntid = $16,
               decline_category = $17, failure_code = $18, attempts = tx.attempts + 1,
               amount_captured = CASE WHEN $7 = 'approved' AND tx.type = 'sale' THEN tx.amount
                                      ELSE tx.amount_captured END,
               updated_at = now(),
               resolved_at = CASE WHEN $7 = 'unknown' THEN NULL ELSE now() END
          FROM prev
         WHERE tx.id = prev.id AND tx.tran_nbr = $3 AND tx.type = $4
           AND ($5::bigint IS NULL OR tx.amount = $5::bigint)
           AND coalesce(tx.customer_id, '') = $6
           AND (tx.status IN ('pending', 'expired')
                OR (tx.status = 'unknown' AND $7 IN ('approved', 'declined')))
        RETURNING {", ".join(f"tx.{name}" for name in _TXN_FIELDS)}, prev.status AS previous_status
    ), s AS (
        UPDATE checkout_sessions cs
           SET state = 'completed', result_status = $7, callback_digest = $19, completed_at = now(),
               updated_at = now()
          FROM tx
         WHERE cs.transaction_id = tx.id
        RETURNING {_SESSION_COLUMNS.replace("s.", "cs.")}
    )
    SELECT s.*, tx.* FROM tx CROSS JOIN s
    """,
)

SET_PAYMENT_METHOD = Query(
    "checkout.set_payment_method",
    Tier.SIMPLE,
    "UPDATE checkout_sessions SET payment_method_id = $2, updated_at = now() WHERE id = $1",
)

INSERT_EVENT = Query(
    "checkout.insert_event",
    Tier.SIMPLE,
    f"""INSERT INTO outbox_events ({OUTBOX_COLUMNS})
       VALUES ($1, $2, $3, 'payment', $4, $5, $6, $7)""",
)

EXPIRE_DUE = Query(
    "checkout.expire_due",
    Tier.STANDARD,
    """
    WITH due AS (
        -- lock the transaction first, like the callback does (no lock-order deadlock)
        SELECT cs.id, cs.transaction_id
          FROM checkout_sessions cs JOIN transactions t ON t.id = cs.transaction_id
         WHERE cs.state = 'open' AND cs.expires_at <= $1
         ORDER BY cs.expires_at
         LIMIT $2
         FOR UPDATE OF t SKIP LOCKED
    ), tx AS (
        UPDATE transactions t
           SET status = 'expired', failure_code = 'checkout_expired', updated_at = now(), resolved_at = now()
          FROM due
         WHERE t.id = due.transaction_id AND t.status = 'pending'
        RETURNING t.id
    ), s AS (
        UPDATE checkout_sessions cs SET state = 'expired', updated_at = now()
          FROM due
         WHERE cs.id = due.id
        RETURNING cs.id
    )
    SELECT (SELECT count(*) FROM s) AS sessions, (SELECT count(*) FROM tx) AS transactions
    """,
)


class FinalizeArgs(msgspec.Struct, frozen=True, kw_only=True):
    txn_id: uuid.UUID
    merchant_id: uuid.UUID
    tran_nbr: int
    tx_type: str
    amount: int | None
    customer_id: str
    status: str
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
    digest: bytes


class Finalized(msgspec.Struct, frozen=True, kw_only=True):
    session: SessionRow
    previous_status: str


class CheckoutRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def begin(self, idem: IdempotencyRequest, new: NewCheckout) -> datetime | None:
        """Claim the key and insert the transaction and its session; None when the key is taken.

        Raises asyncpg.UniqueViolationError on a TRAN_NBR collision (the caller picks the next k).
        """
        return await self.db.fetchval(  # type: ignore[no-any-return]
            BEGIN,
            new.merchant_id,
            idem.key,
            idem.fingerprint,
            idem.method,
            idem.path,
            new.session_id,
            new.txn_id,
            new.tx_type,
            new.amount,
            new.currency,
            new.tran_nbr,
            new.tran_type,
            new.batch_id,
            new.customer_id,
            new.description,
            new.metadata,
            new.mode,
            new.return_url,
            new.decline_url,
            new.expires_at,
        )

    async def tac_issued(
        self,
        session_id: uuid.UUID,
        merchant_id: uuid.UUID,
        *,
        tac_expires_at: datetime,
        expires_at: datetime,
        idem_key: str | None = None,
        response: tuple[int, bytes] | None = None,
    ) -> bool:
        """Record a TAC (and complete the creating request's key); False when no longer open."""
        status, body = response if response is not None else (None, None)
        count = await self.db.fetchval(
            TAC_ISSUED, session_id, tac_expires_at, expires_at, merchant_id, idem_key, status, body
        )
        return bool(count)

    async def abandon(
        self, session_id: uuid.UUID, merchant_id: uuid.UUID, idem_key: str, failure_code: str
    ) -> None:
        """No TAC could be had: the session and its transaction fail, and the key is released."""
        await self.db.execute(ABANDON, session_id, failure_code, merchant_id, idem_key)

    async def get(self, session_id: uuid.UUID, merchant_id: uuid.UUID) -> SessionRow | None:
        row = await self.db.fetchrow(GET_SESSION, session_id, merchant_id)
        return _session_of(row) if row is not None else None

    async def for_transaction(self, txn_id: uuid.UUID, merchant_id: uuid.UUID) -> SessionRow | None:
        row = await self.db.fetchrow(GET_FOR_TRANSACTION, txn_id, merchant_id)
        return _session_of(row) if row is not None else None

    async def finalize(self, con: Connection, a: FinalizeArgs) -> Finalized | None:
        row = await con.fetchrow(
            FINALIZE,
            a.txn_id,
            a.merchant_id,
            a.tran_nbr,
            a.tx_type,
            a.amount,
            a.customer_id,
            a.status,
            a.auth_guid,
            a.auth_resp,
            a.auth_code,
            a.auth_resp_text,
            a.avs_result,
            a.cvv_result,
            a.card_brand,
            a.card_last4,
            a.ntid,
            a.decline_category,
            a.failure_code,
            a.digest,
        )
        if row is None:
            return None
        return Finalized(session=_session_of(row), previous_status=row["previous_status"])

    async def set_payment_method(self, con: Connection, session_id: uuid.UUID, method_id: uuid.UUID) -> None:
        await con.execute(SET_PAYMENT_METHOD, session_id, method_id)

    async def insert_event(
        self,
        con: Connection,
        event_id: uuid.UUID,
        merchant_id: uuid.UUID,
        event_type: str,
        aggregate_id: uuid.UUID,
        payload: Any,
        traceparent: str | None,
    ) -> None:
        await con.execute(
            INSERT_EVENT, event_id, merchant_id, event_type, aggregate_id, payload, traceparent, origin()
        )

    async def expire_due(self, now: datetime, limit: int) -> tuple[int, int]:
        row = await self.db.fetchrow(EXPIRE_DUE, now, limit)
        assert row is not None
        return int(row["sessions"]), int(row["transactions"])
