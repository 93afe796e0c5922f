"""SQL for webhooks: endpoints, the outbox fan-out, delivery claims and the delivery log (0004)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paycore.platform.db import Connection, Database, Query, Tier
from paycore.platform.db.keyset import keyset

_ENDPOINT_COLUMNS = """id, merchant_id, url, description, event_types, status, disabled_reason, metadata,
    secret_ciphertext, secret_key_version, previous_secret_ciphertext, previous_secret_key_version,
    previous_secret_expires_at, consecutive_failures, failing_since, created_at, updated_at"""


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: uuid.UUID
    merchant_id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    status: str
    disabled_reason: str | None
    metadata: dict[str, str] | None
    secret_ciphertext: str
    secret_key_version: str
    previous_secret_ciphertext: str | None
    previous_secret_key_version: str | None
    previous_secret_expires_at: datetime | None
    consecutive_failures: int
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EventRow:
    id: uuid.UUID
    merchant_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    livemode: bool
    traceparent: str | None = None
    request_id: str | None = None  # LOG-2: the request that wrote it (sent as X-Request-ID)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: uuid.UUID
    event_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: uuid.UUID
    attempted_at: datetime
    outcome: str
    status_code: int | None
    duration_ms: int
    error: str | None


def _endpoint(row: Any) -> EndpointRow:
    data = dict(row)
    data["event_types"] = list(data["event_types"])
    return EndpointRow(**data)


_DELIVERY_COLUMNS = """id, event_id, endpoint_id, event_type, status, attempts, next_attempt_at,
    last_status_code, last_error, created_at, delivered_at"""


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(**dict(row))


# --- endpoints ------------------------------------------------------------------------------------
INSERT_ENDPOINT = Query(
    "webhooks.insert_endpoint",
    Tier.SIMPLE,
    f"""INSERT INTO webhook_endpoints (id, merchant_id, url, description, event_types, metadata,
                                      secret_ciphertext, secret_key_version)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_ENDPOINT_COLUMNS}""",
)
GET_ENDPOINT = Query(
    "webhooks.get_endpoint",
    Tier.SIMPLE,
    f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
    "WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL",
)
UPDATE_ENDPOINT = Query(
    "webhooks.update_endpoint",
    Tier.SIMPLE,
    f"""UPDATE webhook_endpoints
           SET url = coalesce($3, url), description = coalesce($4, description),
               event_types = coalesce($5, event_types), metadata = coalesce($6, metadata),
               status = coalesce($7, status),
               disabled_reason = CASE WHEN $7 = 'enabled' THEN NULL
                                      WHEN $7 = 'disabled' THEN 'disabled by the merchant'
                                      ELSE disabled_reason END,
               consecutive_failures = CASE WHEN $7 = 'enabled' THEN 0 ELSE consecutive_failures END,
               failing_since = CASE WHEN $7 = 'enabled' THEN NULL ELSE failing_since END,
               updated_at = now()
         WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL
        RETURNING {_ENDPOINT_COLUMNS}""",
)
DELETE_ENDPOINT = Query(
    "webhooks.delete_endpoint",
    Tier.SIMPLE,
    """WITH e AS (
           UPDATE webhook_endpoints SET deleted_at = now(), status = 'disabled',
                  disabled_reason = 'deleted', updated_at = now()
            WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL
           RETURNING id)
       UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted', updated_at = now(),
              next_attempt_at = NULL
        WHERE endpoint_id IN (SELECT id FROM e) AND status = 'pending'
       RETURNING (SELECT id FROM e)""",
)
ENDPOINT_EXISTS_DELETED = Query(
    "webhooks.endpoint_deleted",
    Tier.SIMPLE,
    "SELECT deleted_at IS NOT NULL FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2",
)
ROTATE_SECRET = Query(
    "webhooks.rotate_secret",
    Tier.SIMPLE,
    f"""UPDATE webhook_endpoints
           SET previous_secret_ciphertext = CASE WHEN $5 > 0 THEN secret_ciphertext END,
               previous_secret_key_version = CASE WHEN $5 > 0 THEN secret_key_version END,
               previous_secret_expires_at = CASE WHEN $5 > 0 THEN now() + make_interval(secs => $5) END,
               secret_ciphertext = $3, secret_key_version = $4, updated_at = now()
         WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL
        RETURNING {_ENDPOINT_COLUMNS}""",
)


def _list_endpoints(where: str, order: str) -> Query:
    return Query(
        "webhooks.list_endpoints",
        Tier.STANDARD,
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints "
        f"WHERE merchant_id = $1 AND deleted_at IS NULL {where} ORDER BY {order} LIMIT $2",
    )


ENDPOINTS_BY_IDS = Query(
    "webhooks.endpoints_by_ids",
    Tier.SIMPLE,
    f"SELECT {_ENDPOINT_COLUMNS}, deleted_at FROM webhook_endpoints WHERE id = ANY($1::uuid[])",
)
ENABLED_ENDPOINTS_FOR = Query(
    "webhooks.enabled_endpoints_for",
    Tier.SIMPLE,
    "SELECT id, merchant_id, event_types FROM webhook_endpoints "
    "WHERE merchant_id = ANY($1::uuid[]) AND status = 'enabled' AND deleted_at IS NULL",
)
SEALED_NOT_AT = Query(
    "webhooks.sealed_not_at",
    Tier.STANDARD,
    """SELECT id, secret_ciphertext, secret_key_version, previous_secret_ciphertext,
              previous_secret_key_version
         FROM webhook_endpoints
        WHERE secret_key_version <> $1
           OR (previous_secret_key_version IS NOT NULL AND previous_secret_key_version <> $1)
        LIMIT $2""",
)
UPDATE_SEALED = Query(
    "webhooks.update_sealed",
    Tier.SIMPLE,
    """UPDATE webhook_endpoints
          SET secret_ciphertext = $2, secret_key_version = $3,
              previous_secret_ciphertext = $4, previous_secret_key_version = $5
        WHERE id = $1 AND secret_key_version = $6
          AND previous_secret_key_version IS NOT DISTINCT FROM $7""",
)
RECORD_HEALTH_SUCCESS = Query(
    "webhooks.endpoint_success",
    Tier.SIMPLE,
    "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL WHERE id = $1 "
    "AND (consecutive_failures <> 0 OR failing_since IS NOT NULL)",
)
RECORD_HEALTH_FAILURE = Query(
    "webhooks.endpoint_failure",
    Tier.SIMPLE,
    """UPDATE webhook_endpoints
          SET consecutive_failures = consecutive_failures + 1,
              failing_since = coalesce(failing_since, now()),
              status = CASE WHEN coalesce(failing_since, now()) <= now() - make_interval(secs => $2)
                            THEN 'disabled' ELSE status END,
              disabled_reason = CASE WHEN coalesce(failing_since, now()) <= now() - make_interval(secs => $2)
                                     AND status = 'enabled'
                                     THEN 'every delivery failed for too long' ELSE disabled_reason END,
              updated_at = now()
        WHERE id = $1
       RETURNING status""",
)
DISABLE_ENDPOINT = Query(
    "webhooks.disable_endpoint",
    Tier.SIMPLE,
    "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2, updated_at = now() "
    "WHERE id = $1 AND status = 'enabled'",
)

# --- outbox fan-out -----------------------------------------------------------------------------------
LOCK_UNDISPATCHED = Query(
    "webhooks.lock_undispatched",
    Tier.SIMPLE,
    """SELECT id, merchant_id, event_type FROM outbox_events
        WHERE dispatched_at IS NULL ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
)
INSERT_DELIVERIES = Query(
    "webhooks.insert_deliveries",
    Tier.SIMPLE,
    """INSERT INTO webhook_deliveries (id, event_id, endpoint_id, merchant_id, event_type, status,
                                       next_attempt_at)
       SELECT d.id, d.event_id, d.endpoint_id, d.merchant_id, d.event_type, 'pending', now()
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[])
              AS d(id, event_id, endpoint_id, merchant_id, event_type)
       ON CONFLICT (event_id, endpoint_id) DO NOTHING""",
)
MARK_DISPATCHED = Query(
    "webhooks.mark_dispatched",
    Tier.SIMPLE,
    "UPDATE outbox_events SET dispatched_at = now() WHERE id = ANY($1::uuid[])",
)

# --- delivery claims --------------------------------------------------------------------------------
REQUEUE_LAPSED = Query(
    "webhooks.requeue_lapsed",
    Tier.SIMPLE,
    """UPDATE webhook_deliveries SET status = 'pending', claim_token = NULL, locked_until = NULL,
              next_attempt_at = now(), updated_at = now()
        WHERE status = 'delivering' AND locked_until < now()""",
)
CLAIM_DUE = Query(
    "webhooks.claim_due",
    Tier.SIMPLE,
    f"""WITH due AS (
            SELECT id FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
        UPDATE webhook_deliveries d
           SET status = 'delivering', claim_token = $2, locked_until = now() + make_interval(secs => $3),
               updated_at = now()
          FROM due WHERE d.id = due.id
        RETURNING {", ".join("d." + c.strip() for c in _DELIVERY_COLUMNS.split(","))}""",
)
EVENTS_BY_IDS = Query(
    "webhooks.events_by_ids",
    Tier.SIMPLE,
    """SELECT e.id, e.merchant_id, e.event_type, e.payload, e.created_at,
              m.environment = 'production' AS livemode, e.traceparent, e.request_id
         FROM outbox_events e JOIN merchants m ON m.id = e.merchant_id
        WHERE e.id = ANY($1::uuid[])""",
)
FINISH_DELIVERY = Query(
    "webhooks.finish_delivery",
    Tier.SIMPLE,
    """WITH d AS (
           UPDATE webhook_deliveries
              SET status = $3, attempts = attempts + 1, next_attempt_at = $4, last_status_code = $5,
                  last_error = $6, claim_token = NULL, locked_until = NULL, updated_at = now(),
                  delivered_at = CASE WHEN $3 = 'succeeded' THEN now() ELSE delivered_at END
            WHERE id = $1 AND claim_token = $2
           RETURNING id)
       INSERT INTO webhook_delivery_attempts (delivery_id, outcome, status_code, duration_ms, error)
       SELECT id, $7, $5, $8, $6 FROM d
       RETURNING delivery_id""",
)
CANCEL_DELIVERY = Query(
    "webhooks.cancel_delivery",
    Tier.SIMPLE,
    """UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = $3,
              claim_token = NULL, locked_until = NULL, updated_at = now()
        WHERE id = $1 AND claim_token = $2""",
)

# --- events API -------------------------------------------------------------------------------------
GET_EVENT = Query(
    "webhooks.get_event",
    Tier.SIMPLE,
    """SELECT e.id, e.merchant_id, e.event_type, e.payload, e.created_at,
              m.environment = 'production' AS livemode, e.traceparent
         FROM outbox_events e JOIN merchants m ON m.id = e.merchant_id
        WHERE e.id = $1 AND e.merchant_id = $2 AND e.created_at >= now() - make_interval(secs => $3)""",
)
EVENT_DELIVERIES = Query(
    "webhooks.event_deliveries",
    Tier.SIMPLE,
    f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE event_id = $1 AND merchant_id = $2 "
    "ORDER BY created_at, id",
)
DELIVERY_ATTEMPTS = Query(
    "webhooks.delivery_attempts",
    Tier.SIMPLE,
    "SELECT delivery_id, attempted_at, outcome, status_code, duration_ms, error "
    "FROM webhook_delivery_attempts WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, id",
)
RESEND = Query(
    "webhooks.resend",
    Tier.SIMPLE,
    f"""INSERT INTO webhook_deliveries (id, event_id, endpoint_id, merchant_id, event_type, status,
                                       next_attempt_at)
        SELECT d.id, $1, d.endpoint_id, $2, $3, 'pending', now()
          FROM unnest($4::uuid[], $5::uuid[]) AS d(id, endpoint_id)
        ON CONFLICT (event_id, endpoint_id) DO UPDATE
           SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL,
               locked_until = NULL, updated_at = now()
         WHERE webhook_deliveries.status <> 'delivering'
        RETURNING {_DELIVERY_COLUMNS}""",
)


def _list_events(where: str, order: str) -> Query:
    return Query(
        "webhooks.list_events",
        Tier.STANDARD,
        """SELECT e.id, e.merchant_id, e.event_type, e.payload, e.created_at, false AS livemode,
                  e.traceparent
             FROM outbox_events e
            WHERE e.merchant_id = $1 AND e.created_at >= now() - make_interval(secs => $3) """
        + where
        + f" ORDER BY {order} LIMIT $2",
    )


PURGE_EVENTS = Query(
    "webhooks.purge_events",
    Tier.STANDARD,
    """DELETE FROM outbox_events
        WHERE id = ANY (ARRAY(SELECT id FROM outbox_events
                               WHERE created_at < now() - make_interval(secs => $1)
                                 AND dispatched_at IS NOT NULL
                               LIMIT $2))""",
)


class WebhookRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- endpoints --------------------------------------------------------------------------------
    async def insert_endpoint(self, args: tuple[Any, ...]) -> EndpointRow:
        row = await self.db.fetchrow(INSERT_ENDPOINT, *args)
        assert row is not None
        return _endpoint(row)

    async def get_endpoint(self, endpoint_id: uuid.UUID, merchant_id: uuid.UUID) -> EndpointRow | None:
        row = await self.db.fetchrow(GET_ENDPOINT, endpoint_id, merchant_id)
        return _endpoint(row) if row is not None else None

    async def update_endpoint(self, args: tuple[Any, ...]) -> EndpointRow | None:
        row = await self.db.fetchrow(UPDATE_ENDPOINT, *args)
        return _endpoint(row) if row is not None else None

    async def delete_endpoint(self, endpoint_id: uuid.UUID, merchant_id: uuid.UUID) -> bool:
        async with self.db.transaction() as con:
            await con.fetch(DELETE_ENDPOINT, endpoint_id, merchant_id)
            deleted = await con.fetchval(ENDPOINT_EXISTS_DELETED, endpoint_id, merchant_id)
        return bool(deleted)

    async def rotate_secret(
        self, endpoint_id: uuid.UUID, merchant_id: uuid.UUID, ciphertext: str, version: str, overlap: float
    ) -> EndpointRow | None:
        row = await self.db.fetchrow(ROTATE_SECRET, endpoint_id, merchant_id, ciphertext, version, overlap)
        return _endpoint(row) if row is not None else None

    async def list_endpoints(
        self,
        merchant_id: uuid.UUID,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[EndpointRow]:
        args: list[Any] = [merchant_id, limit]
        where, order = "", "created_at DESC, id DESC"
        if after is not None:
            args.extend(after)
            where = "AND (created_at, id) < ($3, $4)"
        elif before is not None:
            args.extend(before)
            where, order = "AND (created_at, id) > ($3, $4)", "created_at ASC, id ASC"
        rows = [_endpoint(r) for r in await self.db.fetch(_list_endpoints(where, order), *args)]
        if before is not None:
            rows.reverse()
        return rows

    async def endpoints_by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[EndpointRow, bool]]:
        out: dict[uuid.UUID, tuple[EndpointRow, bool]] = {}
        for row in await self.db.fetch(ENDPOINTS_BY_IDS, ids):
            data = dict(row)
            deleted = data.pop("deleted_at") is not None
            out[data["id"]] = (_endpoint(data), deleted)
        return out

    async def sealed_not_at(self, version: str, limit: int) -> list[Any]:
        return await self.db.fetch(SEALED_NOT_AT, version, limit)

    async def update_sealed(self, args: tuple[Any, ...]) -> bool:
        return (await self.db.execute(UPDATE_SEALED, *args)).endswith(" 1")

    # -- outbox fan-out ----------------------------------------------------------------------------
    async def lock_undispatched(self, con: Connection, limit: int) -> list[Any]:
        return await con.fetch(LOCK_UNDISPATCHED, limit)

    async def enabled_endpoints_for(self, con: Connection, merchant_ids: list[uuid.UUID]) -> list[Any]:
        return await con.fetch(ENABLED_ENDPOINTS_FOR, merchant_ids)

    async def insert_deliveries(self, con: Connection, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            columns = list(zip(*rows, strict=True))
            await con.execute(INSERT_DELIVERIES, *[list(c) for c in columns])

    async def mark_dispatched(self, con: Connection, event_ids: list[uuid.UUID]) -> None:
        await con.execute(MARK_DISPATCHED, event_ids)

    # -- deliveries ----------------------------------------------------------------------------------
    async def requeue_lapsed(self) -> None:
        await self.db.execute(REQUEUE_LAPSED)

    async def claim_due(self, limit: int, token: uuid.UUID, lease: float) -> list[DeliveryRow]:
        return [_delivery(r) for r in await self.db.fetch(CLAIM_DUE, limit, token, lease)]

    async def events_by_ids(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, EventRow]:
        return {r["id"]: EventRow(**dict(r)) for r in await self.db.fetch(EVENTS_BY_IDS, ids)}

    async def finish_delivery(
        self,
        delivery_id: uuid.UUID,
        token: uuid.UUID,
        *,
        status: str,
        next_attempt_at: datetime | None,
        status_code: int | None,
        error: str | None,
        outcome: str,
        duration_ms: int,
        endpoint_id: uuid.UUID,
        health: str,
        disable_after: float,
        disable_reason: str | None = None,
    ) -> str | None:
        """Record one attempt (delivery row, log row, endpoint health) in one transaction.
        Returns the endpoint status after a failure (None when unchanged or the claim was lost)."""
        async with self.db.transaction() as con:
            recorded = await con.fetchval(
                FINISH_DELIVERY,
                delivery_id,
                token,
                status,
                next_attempt_at,
                status_code,
                error,
                outcome,
                duration_ms,
            )
            if recorded is None:
                return None
            if health == "success":
                await con.execute(RECORD_HEALTH_SUCCESS, endpoint_id)
                return None
            if disable_reason is not None:
                await con.execute(DISABLE_ENDPOINT, endpoint_id, disable_reason)
                return "disabled"
            endpoint_status: str | None = await con.fetchval(
                RECORD_HEALTH_FAILURE, endpoint_id, disable_after
            )
            return endpoint_status

    async def cancel_delivery(self, delivery_id: uuid.UUID, token: uuid.UUID, reason: str) -> None:
        await self.db.execute(CANCEL_DELIVERY, delivery_id, token, reason)

    # -- events API ----------------------------------------------------------------------------------
    async def get_event(self, event_id: uuid.UUID, merchant_id: uuid.UUID, window: float) -> EventRow | None:
        row = await self.db.fetchrow(GET_EVENT, event_id, merchant_id, window)
        return EventRow(**dict(row)) if row is not None else None

    async def event_deliveries(self, event_id: uuid.UUID, merchant_id: uuid.UUID) -> list[DeliveryRow]:
        return [_delivery(r) for r in await self.db.fetch(EVENT_DELIVERIES, event_id, merchant_id)]

    async def attempts_for(self, delivery_ids: list[uuid.UUID]) -> list[AttemptRow]:
        if not delivery_ids:
            return []
        return [AttemptRow(**dict(r)) for r in await self.db.fetch(DELIVERY_ATTEMPTS, delivery_ids)]

    async def resend(self, event: EventRow, rows: list[tuple[uuid.UUID, uuid.UUID]]) -> list[DeliveryRow]:
        ids = [r[0] for r in rows]
        endpoints = [r[1] for r in rows]
        result = await self.db.fetch(RESEND, event.id, event.merchant_id, event.event_type, ids, endpoints)
        return [_delivery(r) for r in result]

    async def list_events(
        self,
        merchant_id: uuid.UUID,
        *,
        limit: int,
        window: float,
        event_type: str | None,
        created_gte: datetime | None,
        created_lt: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[EventRow]:
        args: list[Any] = [merchant_id, limit, window]
        page = keyset(
            args,
            equals=(("event_type", event_type),),
            created_gte=created_gte,
            created_lt=created_lt,
            after=after,
            before=before,
            alias="e",
        )
        rows = [EventRow(**dict(r)) for r in await self.db.fetch(_list_events(page.where, page.order), *args)]
        if page.reverse:
            rows.reverse()
        return rows

    async def purge_events(self, older_than: float, batch: int = 1000) -> int:
        status = await self.db.execute(PURGE_EVENTS, older_than, batch)
        return int(status.split()[-1])
