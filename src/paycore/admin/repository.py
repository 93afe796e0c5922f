"""SQL of the admin capability: admin tokens, feature-flag overrides, audit rows, NOTIFY."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from paycore.platform.db import Connection, Database, Query, Tier

INSERT_TOKEN = Query(
    "admin_tokens.insert",
    Tier.SIMPLE,
    "INSERT INTO admin_tokens (id, name, token_hash, prefix) VALUES ($1, $2, $3, $4)",
)
RESOLVE_TOKEN = Query(
    "admin_tokens.resolve",
    Tier.SIMPLE,
    "SELECT id, name FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
)
TOUCH_TOKEN = Query(
    "admin_tokens.touch",
    Tier.SIMPLE,
    "UPDATE admin_tokens SET last_used_at = now() "
    "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
)
REVOKE_TOKEN = Query(
    "admin_tokens.revoke",
    Tier.SIMPLE,
    "UPDATE admin_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING name",
)
LIST_TOKENS = Query(
    "admin_tokens.list",
    Tier.STANDARD,
    "SELECT id, name, prefix, created_at, revoked_at, last_used_at FROM admin_tokens "
    "ORDER BY created_at DESC LIMIT $1",
)
LIST_OVERRIDES = Query(
    "feature_flag_overrides.list", Tier.SIMPLE, "SELECT flag, enabled FROM feature_flag_overrides"
)
UPSERT_OVERRIDE = Query(
    "feature_flag_overrides.upsert",
    Tier.SIMPLE,
    """
    INSERT INTO feature_flag_overrides (flag, enabled, updated_by) VALUES ($1, $2, $3)
    ON CONFLICT (flag) DO UPDATE
       SET enabled = EXCLUDED.enabled, updated_by = EXCLUDED.updated_by, updated_at = now()
    """,
)
DELETE_OVERRIDE = Query(
    "feature_flag_overrides.delete", Tier.SIMPLE, "DELETE FROM feature_flag_overrides WHERE flag = $1"
)
INSERT_AUDIT = Query(
    "audit_log.insert_admin",
    Tier.SIMPLE,
    """
    INSERT INTO audit_log (actor, action, object_type, object_id, merchant_id, request_id, ip, outcome,
                           details)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    """,
)
NOTIFY = Query("admin.notify", Tier.SIMPLE, "SELECT pg_notify($1, $2)")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    object_type: str | None
    object_id: str | None
    merchant_id: uuid.UUID | None
    request_id: str | None
    ip: str | None
    outcome: str
    details: dict[str, Any] | None


class AdminTokenRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class AdminRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- tokens -------------------------------------------------------------------------------------
    async def insert_token(
        self, con: Connection, token_id: uuid.UUID, name: str, token_hash: bytes, prefix: str
    ) -> None:
        await con.execute(INSERT_TOKEN, token_id, name, token_hash, prefix)

    async def resolve_token(self, token_hash: bytes) -> tuple[uuid.UUID, str] | None:
        row = await self.db.fetchrow(RESOLVE_TOKEN, token_hash)
        return None if row is None else (row["id"], row["name"])

    async def touch_token(self, token_id: uuid.UUID) -> None:
        await self.db.execute(TOUCH_TOKEN, token_id)

    async def revoke_token(self, con: Connection, token_id: uuid.UUID) -> str | None:
        name: str | None = await con.fetchval(REVOKE_TOKEN, token_id)
        return name

    async def list_tokens(self, limit: int = 1000) -> list[AdminTokenRow]:
        rows = await self.db.fetch(LIST_TOKENS, limit)
        return [AdminTokenRow(**dict(r)) for r in rows]

    # -- feature-flag overrides -------------------------------------------------------------------
    async def overrides(self) -> dict[str, bool]:
        return {r["flag"]: r["enabled"] for r in await self.db.fetch(LIST_OVERRIDES)}

    async def set_override(self, con: Connection, flag: str, enabled: bool, actor: str) -> None:
        await con.execute(UPSERT_OVERRIDE, flag, enabled, actor)

    async def clear_override(self, con: Connection, flag: str) -> bool:
        status = await con.execute(DELETE_OVERRIDE, flag)
        return status.rsplit(" ", 1)[-1] != "0"

    # -- audit and notifications ------------------------------------------------------------------
    async def audit(self, con: Connection | None, entry: AuditEntry) -> None:
        values = (
            entry.actor,
            entry.action,
            entry.object_type,
            entry.object_id,
            entry.merchant_id,
            entry.request_id,
            entry.ip,
            entry.outcome,
            entry.details,
        )
        if con is None:
            await self.db.execute(INSERT_AUDIT, *values)
        else:
            await con.execute(INSERT_AUDIT, *values)

    async def notify(self, con: Connection | None, channel: str, payload: str) -> None:
        """NOTIFY; inside `con`'s transaction it is delivered at commit, never for a rollback."""
        if con is None:
            await self.db.fetchval(NOTIFY, channel, payload)
        else:
            await con.fetchval(NOTIFY, channel, payload)
