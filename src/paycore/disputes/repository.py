"""SQL for disputes (migration 0005)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from paycore.platform.db import Connection, Database, Query, Tier
from paycore.platform.db.keyset import keyset, listing_name
from paycore.platform.outbox import OUTBOX_COLUMNS, origin

COLUMNS = """id, merchant_id, case_number, status, gateway_status, dispute_type, reason_code,
    reason_description, reason_category, card_brand, card_last4, tran_nbr, transaction_id, payment_id,
    match_status, amount,
    transaction_amount, currency, dispute_date, chargeback_date, transaction_date, created_at, updated_at"""

ACTIVE_MERCHANTS = Query(
    "disputes.active_merchants",
    Tier.STANDARD,
    "SELECT id, epx_merch_nbr FROM merchants WHERE status = 'active' AND id > $1 ORDER BY id LIMIT $2",
)
SYNC_STATE = Query(
    "disputes.sync_state",
    Tier.SIMPLE,
    "SELECT last_success_at, complete FROM dispute_sync_state WHERE merchant_id = $1",
)
RECORD_SYNC = Query(
    "disputes.record_sync",
    Tier.SIMPLE,
    """INSERT INTO dispute_sync_state (merchant_id, last_success_at, last_attempt_at, last_error, complete)
       VALUES ($1, CASE WHEN $2::text IS NULL THEN now() END, now(), $2, $3)
       ON CONFLICT (merchant_id) DO UPDATE
          SET last_success_at = CASE WHEN $2::text IS NULL THEN now()
                                     ELSE dispute_sync_state.last_success_at END,
              last_attempt_at = now(), last_error = $2, complete = $3""",
)
CANDIDATE = Query(
    "disputes.candidate",
    Tier.SIMPLE,
    """SELECT id, group_id, amount, card_last4 FROM transactions
        WHERE merchant_id = $1 AND tran_nbr = $2""",
)
LOCK_DISPUTE = Query(
    "disputes.lock",
    Tier.SIMPLE,
    f"SELECT {COLUMNS} FROM disputes WHERE merchant_id = $1 AND case_number = $2 FOR UPDATE",
)
INSERT_DISPUTE = Query(
    "disputes.insert",
    Tier.SIMPLE,
    f"""INSERT INTO disputes (id, merchant_id, case_number, status, gateway_status, dispute_type, reason_code,
                             reason_description, reason_category, card_brand, card_last4, tran_nbr,
                             transaction_id, payment_id, match_status, amount, transaction_amount,
                             dispute_date, chargeback_date, transaction_date)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
        ON CONFLICT (merchant_id, case_number) DO NOTHING
        RETURNING {COLUMNS}""",
)
UPDATE_DISPUTE = Query(
    "disputes.update",
    Tier.SIMPLE,
    f"""UPDATE disputes
           SET status = $3, gateway_status = $4, dispute_type = $5, reason_code = $6, reason_description = $7,
               reason_category = $8, card_brand = $9, card_last4 = $10, tran_nbr = $11, transaction_id = $12,
               payment_id = $13, match_status = $14, amount = $15, transaction_amount = $16,
               dispute_date = $17, chargeback_date = $18, transaction_date = $19, updated_at = now()
         WHERE merchant_id = $1 AND case_number = $2
        RETURNING {COLUMNS}""",
)
INSERT_EVENT = Query(
    "disputes.insert_event",
    Tier.SIMPLE,
    f"""INSERT INTO outbox_events ({OUTBOX_COLUMNS})
       VALUES ($1, $2, $3, 'dispute', $4, $5, $6, $7)""",
)
GET_DISPUTE = Query(
    "disputes.get",
    Tier.SIMPLE,
    f"SELECT {COLUMNS} FROM disputes WHERE id = $1 AND merchant_id = $2",
)


def _list(name: str, where: str, order: str) -> Query:
    return Query(
        name,
        Tier.STANDARD,
        f"SELECT {COLUMNS} FROM disputes WHERE merchant_id = $1 {where} ORDER BY {order} LIMIT $2",
    )


class DisputeRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def active_merchants(self, after: uuid.UUID, limit: int) -> list[tuple[uuid.UUID, str]]:
        rows = await self.db.fetch(ACTIVE_MERCHANTS, after, limit)
        return [(r["id"], r["epx_merch_nbr"]) for r in rows]

    async def sync_state(self, merchant_id: uuid.UUID) -> tuple[datetime | None, bool] | None:
        row = await self.db.fetchrow(SYNC_STATE, merchant_id)
        return (row["last_success_at"], row["complete"]) if row is not None else None

    async def record_sync(self, merchant_id: uuid.UUID, error: str | None, complete: bool) -> None:
        await self.db.execute(RECORD_SYNC, merchant_id, error, complete)

    async def candidate(self, con: Connection, merchant_id: uuid.UUID, tran_nbr: int) -> Any:
        return await con.fetchrow(CANDIDATE, merchant_id, tran_nbr)

    async def lock(self, con: Connection, merchant_id: uuid.UUID, case_number: str) -> Any:
        return await con.fetchrow(LOCK_DISPUTE, merchant_id, case_number)

    async def insert(self, con: Connection, args: tuple[Any, ...]) -> Any:
        return await con.fetchrow(INSERT_DISPUTE, *args)

    async def update(self, con: Connection, args: tuple[Any, ...]) -> Any:
        return await con.fetchrow(UPDATE_DISPUTE, *args)

    async def insert_event(self, con: Connection, args: tuple[Any, ...]) -> None:
        await con.execute(INSERT_EVENT, *args, origin())

    async def get(self, dispute_id: uuid.UUID, merchant_id: uuid.UUID) -> Any:
        return await self.db.fetchrow(GET_DISPUTE, dispute_id, merchant_id)

    async def list(
        self,
        merchant_id: uuid.UUID,
        *,
        limit: int,
        status: str | None,
        payment_id: uuid.UUID | None,
        created_gte: datetime | None,
        created_lt: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Any]:
        args: list[Any] = [merchant_id, limit]
        equals = (("status", status), ("payment_id", payment_id))
        page = keyset(
            args, equals=equals, created_gte=created_gte, created_lt=created_lt, after=after, before=before
        )
        rows = list(
            await self.db.fetch(_list(listing_name("disputes.list", equals), page.where, page.order), *args)
        )
        if page.reverse:
            rows.reverse()
        return rows
