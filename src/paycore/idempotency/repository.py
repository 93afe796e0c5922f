"""SQL for idempotency records. Every statement runs inside the caller's transaction."""

from __future__ import annotations

import uuid

from paycore.idempotency.model import IdempotencyRequest, StoredOutcome
from paycore.platform.db import Connection, Database, Query, Tier

# Claim a key: $1 merchant, $2 key, $3 fingerprint, $4 method, $5 path, $6 resource id. An expired
# record (past retention, not yet purged) is taken over. The CTE is also the first step of the hot
# paths that claim a key and insert their pending row in one statement (payments, checkout).
CLAIM_CTE = """claim AS (
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, method, path, status, resource_id,
                                      expires_at)
        VALUES ($1, $2, $3, $4, $5, 'in_flight', $6, now() + interval '24 hours')
        ON CONFLICT (merchant_id, key) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, method = EXCLUDED.method, path = EXCLUDED.path,
                status = 'in_flight', response_status = NULL, response_body = NULL,
                resource_id = EXCLUDED.resource_id, created_at = now(), completed_at = NULL,
                expires_at = EXCLUDED.expires_at
            WHERE idempotency_keys.expires_at < now()
        RETURNING 1
    )"""
CLAIM = Query("idempotency.claim", Tier.SIMPLE, f"WITH {CLAIM_CTE} SELECT 1 FROM claim")
GET = Query(
    "idempotency.get",
    Tier.SIMPLE,
    """
    SELECT status, fingerprint, response_status, response_body, resource_id
      FROM idempotency_keys WHERE merchant_id = $1 AND key = $2
    """,
)
COMPLETE = Query(
    "idempotency.complete",
    Tier.SIMPLE,
    """
    UPDATE idempotency_keys
       SET status = 'completed', response_status = $3, response_body = $4, resource_id = $5,
           completed_at = now()
     WHERE merchant_id = $1 AND key = $2
    """,
)
COMPLETE_FOR_RESOURCE = Query(
    "idempotency.complete_for_resource",
    Tier.SIMPLE,
    """
    UPDATE idempotency_keys
       SET status = 'completed', response_status = $2, response_body = $3, completed_at = now()
     WHERE resource_id = $1 AND status = 'in_flight'
    """,
)
RELEASE = Query(
    "idempotency.release",
    Tier.SIMPLE,
    "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND status = 'in_flight'",
)
RELEASE_FOR_RESOURCE = Query(
    "idempotency.release_for_resource",
    Tier.SIMPLE,
    "DELETE FROM idempotency_keys WHERE resource_id = $1 AND status = 'in_flight'",
)
PURGE_EXPIRED = Query(
    "idempotency.purge_expired",
    Tier.STANDARD,
    """
    DELETE FROM idempotency_keys
     WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT $1))
    """,
)


class IdempotencyRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self, con: Connection, merchant_id: uuid.UUID, req: IdempotencyRequest, resource_id: uuid.UUID | None
    ) -> bool:
        """True when this request now owns the key."""
        row = await con.fetchrow(
            CLAIM, merchant_id, req.key, req.fingerprint, req.method, req.path, resource_id
        )
        return row is not None

    async def get(self, con: Connection | None, merchant_id: uuid.UUID, key: str) -> StoredOutcome | None:
        row = await (con.fetchrow(GET, merchant_id, key) if con else self.db.fetchrow(GET, merchant_id, key))
        if row is None:
            return None
        return StoredOutcome(
            status=row["status"],
            fingerprint=bytes(row["fingerprint"]),
            response_status=row["response_status"],
            response_body=bytes(row["response_body"]) if row["response_body"] is not None else None,
            resource_id=row["resource_id"],
        )

    async def complete(
        self,
        con: Connection,
        merchant_id: uuid.UUID,
        key: str,
        status: int,
        body: bytes,
        resource_id: uuid.UUID | None,
    ) -> None:
        await con.execute(COMPLETE, merchant_id, key, status, body, resource_id)

    async def complete_for_resource(
        self, con: Connection, resource_id: uuid.UUID, status: int, body: bytes
    ) -> None:
        await con.execute(COMPLETE_FOR_RESOURCE, resource_id, status, body)

    async def release(self, con: Connection | None, merchant_id: uuid.UUID, key: str) -> None:
        if con is None:
            await self.db.execute(RELEASE, merchant_id, key)
        else:
            await con.execute(RELEASE, merchant_id, key)

    async def release_for_resource(self, con: Connection, resource_id: uuid.UUID) -> None:
        await con.execute(RELEASE_FOR_RESOURCE, resource_id)

    async def purge_expired(self, batch: int = 1000) -> int:
        status = await self.db.execute(PURGE_EXPIRED, batch)
        return int(status.split()[-1])
