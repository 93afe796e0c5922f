"""SQL for merchants, API keys, service clients and grants, and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from paycore.gateway.port import MerchantKey
from paycore.merchants.model import Merchant, ServiceClient, load_rsa_public_key
from paycore.platform.db import Connection, Database, Query, Tier

INSERT_MERCHANT = Query(
    "merchants.insert",
    Tier.SIMPLE,
    """
    INSERT INTO merchants (id, slug, name, environment, epx_cust_nbr, epx_merch_nbr, epx_dba_nbr,
                           epx_terminal_nbr, mac_secret_ciphertext, mac_secret_key_version,
                           multi_capture, timezone, return_urls)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    RETURNING *
    """,
)
GET_MERCHANT = Query("merchants.get", Tier.SIMPLE, "SELECT * FROM merchants WHERE id = $1")
GET_MERCHANT_BY_SLUG = Query("merchants.get_by_slug", Tier.SIMPLE, "SELECT * FROM merchants WHERE slug = $1")
LIST_MERCHANTS = Query("merchants.list", Tier.STANDARD, "SELECT * FROM merchants ORDER BY slug LIMIT $1")
# The cache warm-up's choice (CACHE-1): active merchants by payments (roots) created in the last $1
# seconds, most first. Each merchant's count is an index-only range scan of
# `idx_transactions_merchant_created` (its partial predicate repeated), capped at $3 rows, so the
# whole query reads at most merchants × $3 index entries whatever the traffic.
BUSIEST_MERCHANTS = Query(
    "merchants.busiest",
    Tier.REPORT,
    """
    SELECT m.id
      FROM merchants m
      CROSS JOIN LATERAL (
            SELECT count(*) AS n
              FROM (SELECT 1 FROM transactions t
                     WHERE t.merchant_id = m.id AND t.parent_id IS NULL
                       AND t.created_at >= now() - make_interval(secs => $1)
                     LIMIT $3) capped
           ) recent
     WHERE m.status = 'active' AND recent.n > 0
     ORDER BY recent.n DESC, m.id
     LIMIT $2
    """,
)
INSERT_API_KEY = Query(
    "api_keys.insert",
    Tier.SIMPLE,
    """
    INSERT INTO api_keys (id, merchant_id, key_hash, display_prefix, mode, name)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id, created_at
    """,
)
RESOLVE_API_KEY = Query(
    "api_keys.resolve",
    Tier.SIMPLE,
    """
    SELECT k.id AS api_key_id, k.mode, m.*
      FROM api_keys k JOIN merchants m ON m.id = k.merchant_id
     WHERE k.key_hash = $1 AND k.revoked_at IS NULL
    """,
)
TOUCH_API_KEY = Query(
    "api_keys.touch",
    Tier.SIMPLE,
    "UPDATE api_keys SET last_used_at = now() WHERE id = $1 "
    "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
)
REVOKE_API_KEY = Query(
    "api_keys.revoke",
    Tier.SIMPLE,
    "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL "
    "RETURNING key_hash, merchant_id",
)
LIST_API_KEYS = Query(
    "api_keys.list",
    Tier.STANDARD,
    """
    SELECT id, display_prefix, mode, name, created_at, revoked_at, last_used_at
      FROM api_keys WHERE merchant_id = $1 ORDER BY created_at DESC LIMIT 100
    """,
)
INSERT_AUDIT = Query(
    "audit_log.insert",
    Tier.SIMPLE,
    """
    INSERT INTO audit_log (actor, action, object_type, object_id, merchant_id, request_id, ip, outcome,
                           details)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    """,
)
GET_MAC_SECRET = Query(
    "merchants.get_mac_secret",
    Tier.SIMPLE,
    "SELECT mac_secret_ciphertext, mac_secret_key_version FROM merchants WHERE id = $1",
)
LIST_SEALED_SECRETS = Query(
    "merchants.list_sealed_secrets",
    Tier.STANDARD,
    """
    SELECT id, mac_secret_ciphertext, mac_secret_key_version FROM merchants
     WHERE mac_secret_ciphertext IS NOT NULL AND mac_secret_key_version <> $1
     ORDER BY id LIMIT 500
    """,
)
UPDATE_SEALED_SECRET = Query(
    "merchants.update_sealed_secret",
    Tier.SIMPLE,
    """
    UPDATE merchants SET mac_secret_ciphertext = $2, mac_secret_key_version = $3, updated_at = now()
     WHERE id = $1 AND mac_secret_key_version = $4
    """,
)

# --- service clients, grants and revoked token ids (migration 0008) ------------------------------
INSERT_SERVICE_CLIENT = Query(
    "service_clients.insert",
    Tier.SIMPLE,
    """
    INSERT INTO service_clients (id, issuer, name, public_key_pem, key_fingerprint)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (issuer) DO NOTHING
    RETURNING *
    """,
)
GET_SERVICE_CLIENT_BY_ISSUER = Query(
    "service_clients.get_by_issuer", Tier.SIMPLE, "SELECT * FROM service_clients WHERE issuer = $1"
)
GET_SERVICE_CLIENT = Query("service_clients.get", Tier.SIMPLE, "SELECT * FROM service_clients WHERE id = $1")
LIST_SERVICE_CLIENTS = Query(
    "service_clients.list",
    Tier.STANDARD,
    """
    SELECT id, issuer, name, key_fingerprint, status, created_at, revoked_at
      FROM service_clients ORDER BY issuer LIMIT $1
    """,
)
REVOKE_SERVICE_CLIENT = Query(
    "service_clients.revoke",
    Tier.SIMPLE,
    """
    UPDATE service_clients SET status = 'revoked', revoked_at = now()
     WHERE id = $1 AND status = 'active'
    RETURNING issuer
    """,
)
INSERT_SERVICE_GRANT = Query(
    "service_grants.insert",
    Tier.SIMPLE,
    """
    INSERT INTO service_grants (id, client_id, merchant_id) VALUES ($1, $2, $3)
    ON CONFLICT (client_id, merchant_id) WHERE status = 'active' DO NOTHING
    RETURNING id
    """,
)
HAS_ACTIVE_GRANT = Query(
    "service_grants.has_active",
    Tier.SIMPLE,
    "SELECT EXISTS (SELECT 1 FROM service_grants WHERE client_id = $1 AND merchant_id = $2 "
    "AND status = 'active')",
)
REVOKE_SERVICE_GRANT = Query(
    "service_grants.revoke",
    Tier.SIMPLE,
    """
    UPDATE service_grants SET status = 'revoked', revoked_at = now()
     WHERE client_id = $1 AND merchant_id = $2 AND status = 'active'
    RETURNING id
    """,
)
_GRANT_COLUMNS = """
    SELECT g.id, c.issuer, g.client_id, m.slug AS merchant_slug, g.merchant_id, g.status, g.created_at,
           g.revoked_at
      FROM service_grants g
      JOIN service_clients c ON c.id = g.client_id
      JOIN merchants m ON m.id = g.merchant_id
"""
LIST_GRANTS_OF_CLIENT = Query(
    "service_grants.list_of_client",
    Tier.STANDARD,
    _GRANT_COLUMNS + " WHERE g.client_id = $1 ORDER BY g.created_at DESC LIMIT $2",
)
LIST_GRANTS_OF_MERCHANT = Query(
    "service_grants.list_of_merchant",
    Tier.STANDARD,
    _GRANT_COLUMNS + " WHERE g.merchant_id = $1 ORDER BY g.created_at DESC LIMIT $2",
)
LIST_GRANTS = Query(
    "service_grants.list",
    Tier.STANDARD,
    _GRANT_COLUMNS + " ORDER BY g.client_id, g.created_at DESC LIMIT $1",
)
REVOKE_JTI = Query(
    "revoked_jtis.insert",
    Tier.SIMPLE,
    """
    INSERT INTO revoked_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3)
    ON CONFLICT (client_id, jti) DO UPDATE
       SET expires_at = GREATEST(revoked_jtis.expires_at, EXCLUDED.expires_at)
    """,
)
LIVE_REVOKED_JTIS = Query(
    "revoked_jtis.live",
    Tier.STANDARD,
    """
    SELECT client_id, jti FROM revoked_jtis
     WHERE expires_at > now() - make_interval(secs => $1)
     ORDER BY expires_at LIMIT $2
    """,
)
PURGE_REVOKED_JTIS = Query(
    "revoked_jtis.purge",
    Tier.STANDARD,
    """
    DELETE FROM revoked_jtis
     WHERE (client_id, jti) IN (
           SELECT client_id, jti FROM revoked_jtis
            WHERE expires_at < now() - make_interval(secs => $1)
            ORDER BY expires_at LIMIT $2)
    """,
)
IS_JTI_REVOKED = Query(
    "revoked_jtis.exists",
    Tier.SIMPLE,
    "SELECT EXISTS (SELECT 1 FROM revoked_jtis WHERE client_id = $1 AND jti = $2)",
)
NOTIFY = Query("merchants.notify", Tier.SIMPLE, "SELECT pg_notify($1, $2)")


def service_client_from_row(row: Any) -> ServiceClient:
    return ServiceClient(
        id=row["id"],
        issuer=row["issuer"],
        name=row["name"],
        status=row["status"],
        public_key=load_rsa_public_key(row["public_key_pem"]),
        key_fingerprint=row["key_fingerprint"],
    )


def merchant_from_row(row: Any) -> Merchant:
    return Merchant(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        environment=row["environment"],
        status=row["status"],
        epx=MerchantKey(
            cust_nbr=row["epx_cust_nbr"],
            merch_nbr=row["epx_merch_nbr"],
            dba_nbr=row["epx_dba_nbr"],
            terminal_nbr=row["epx_terminal_nbr"],
        ),
        multi_capture=row["multi_capture"],
        timezone=row["timezone"],
        return_urls=tuple(row["return_urls"] or ()),
    )


class MerchantRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, con: Connection, values: tuple[Any, ...]) -> Merchant:
        row = await con.fetchrow(INSERT_MERCHANT, *values)
        assert row is not None
        return merchant_from_row(row)

    async def get(self, merchant_id: uuid.UUID) -> Merchant | None:
        row = await self.db.fetchrow(GET_MERCHANT, merchant_id)
        return merchant_from_row(row) if row else None

    async def get_by_slug(self, slug: str) -> Merchant | None:
        row = await self.db.fetchrow(GET_MERCHANT_BY_SLUG, slug)
        return merchant_from_row(row) if row else None

    async def list_all(self, limit: int = 100) -> list[Merchant]:
        return [merchant_from_row(r) for r in await self.db.fetch(LIST_MERCHANTS, limit)]

    async def busiest(self, limit: int, *, window: float, cap: int) -> list[uuid.UUID]:
        """Up to `limit` active merchants with the most payments over the last `window` seconds
        (each counted up to `cap`), most first."""
        return [r["id"] for r in await self.db.fetch(BUSIEST_MERCHANTS, window, limit, cap)]

    async def insert_api_key(
        self,
        con: Connection,
        key_id: uuid.UUID,
        merchant_id: uuid.UUID,
        key_hash: bytes,
        prefix: str,
        mode: str,
        name: str,
    ) -> None:
        await con.fetchrow(INSERT_API_KEY, key_id, merchant_id, key_hash, prefix, mode, name)

    async def resolve_api_key(self, key_hash: bytes) -> tuple[Merchant, str, uuid.UUID] | None:
        row = await self.db.fetchrow(RESOLVE_API_KEY, key_hash)
        if row is None:
            return None
        return merchant_from_row(row), row["mode"], row["api_key_id"]

    async def touch_api_key(self, key_id: uuid.UUID) -> None:
        await self.db.execute(TOUCH_API_KEY, key_id)

    async def revoke_api_key(self, con: Connection, key_id: uuid.UUID) -> tuple[bytes, uuid.UUID] | None:
        row = await con.fetchrow(REVOKE_API_KEY, key_id)
        return (row["key_hash"], row["merchant_id"]) if row else None

    async def list_api_keys(self, merchant_id: uuid.UUID) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.fetch(LIST_API_KEYS, merchant_id)]

    async def audit(self, con: Connection | None, *values: Any) -> None:
        if con is None:
            await self.db.execute(INSERT_AUDIT, *values)
        else:
            await con.execute(INSERT_AUDIT, *values)

    async def get_sealed_mac(self, merchant_id: uuid.UUID) -> tuple[str, str] | None:
        row = await self.db.fetchrow(GET_MAC_SECRET, merchant_id)
        if row is None or row["mac_secret_ciphertext"] is None:
            return None
        return row["mac_secret_ciphertext"], row["mac_secret_key_version"]

    async def sealed_secrets_not_at(self, version: str) -> list[tuple[uuid.UUID, str, str]]:
        rows = await self.db.fetch(LIST_SEALED_SECRETS, version)
        return [(r["id"], r["mac_secret_ciphertext"], r["mac_secret_key_version"]) for r in rows]

    async def update_sealed_secret(
        self, merchant_id: uuid.UUID, ciphertext: str, version: str, old_version: str
    ) -> bool:
        status = await self.db.execute(UPDATE_SEALED_SECRET, merchant_id, ciphertext, version, old_version)
        return status.endswith(" 1")

    # -- service clients, grants, revoked token ids ------------------------------------------------
    async def insert_service_client(
        self, con: Connection, client_id: uuid.UUID, issuer: str, name: str, pem: str, fingerprint: str
    ) -> ServiceClient | None:
        """None when the issuer is taken."""
        row = await con.fetchrow(INSERT_SERVICE_CLIENT, client_id, issuer, name, pem, fingerprint)
        return service_client_from_row(row) if row else None

    async def get_service_client_by_issuer(self, issuer: str) -> ServiceClient | None:
        row = await self.db.fetchrow(GET_SERVICE_CLIENT_BY_ISSUER, issuer)
        return service_client_from_row(row) if row else None

    async def get_service_client(self, client_id: uuid.UUID) -> ServiceClient | None:
        row = await self.db.fetchrow(GET_SERVICE_CLIENT, client_id)
        return service_client_from_row(row) if row else None

    async def list_service_clients(self, limit: int = 500) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.fetch(LIST_SERVICE_CLIENTS, limit)]

    async def revoke_service_client(self, con: Connection, client_id: uuid.UUID) -> str | None:
        """The revoked client's issuer; None when it was unknown or already revoked."""
        row = await con.fetchrow(REVOKE_SERVICE_CLIENT, client_id)
        return row["issuer"] if row else None

    async def insert_grant(
        self, con: Connection, grant_id: uuid.UUID, client_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> uuid.UUID | None:
        """None when an active grant already exists."""
        row = await con.fetchrow(INSERT_SERVICE_GRANT, grant_id, client_id, merchant_id)
        return row["id"] if row else None

    async def has_active_grant(self, client_id: uuid.UUID, merchant_id: uuid.UUID) -> bool:
        return bool(await self.db.fetchval(HAS_ACTIVE_GRANT, client_id, merchant_id))

    async def revoke_grant(
        self, con: Connection, client_id: uuid.UUID, merchant_id: uuid.UUID
    ) -> uuid.UUID | None:
        row = await con.fetchrow(REVOKE_SERVICE_GRANT, client_id, merchant_id)
        return row["id"] if row else None

    async def list_grants(
        self, *, client_id: uuid.UUID | None = None, merchant_id: uuid.UUID | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        if client_id is not None:
            rows = await self.db.fetch(LIST_GRANTS_OF_CLIENT, client_id, limit)
            if merchant_id is not None:
                rows = [r for r in rows if r["merchant_id"] == merchant_id]
        elif merchant_id is not None:
            rows = await self.db.fetch(LIST_GRANTS_OF_MERCHANT, merchant_id, limit)
        else:
            rows = await self.db.fetch(LIST_GRANTS, limit)
        return [dict(r) for r in rows]

    async def revoke_jti(self, con: Connection, client_id: uuid.UUID, jti: str, expires_at: datetime) -> None:
        await con.execute(REVOKE_JTI, client_id, jti, expires_at)

    async def live_revoked_jtis(self, leeway: float, limit: int) -> list[tuple[uuid.UUID, str]]:
        rows = await self.db.fetch(LIVE_REVOKED_JTIS, leeway, limit)
        return [(r["client_id"], r["jti"]) for r in rows]

    async def purge_revoked_jtis(self, older_than: float, batch: int) -> int:
        """Delete up to `batch` revocations whose token expired more than `older_than` s ago."""
        status = await self.db.execute(PURGE_REVOKED_JTIS, older_than, batch)
        return int(status.split()[-1])

    async def is_jti_revoked(self, client_id: uuid.UUID, jti: str) -> bool:
        return bool(await self.db.fetchval(IS_JTI_REVOKED, client_id, jti))

    async def notify(self, con: Connection | None, channel: str, payload: str) -> None:
        """`pg_notify`: inside a transaction it is delivered at commit (never for a rollback)."""
        if con is None:
            await self.db.fetchval(NOTIFY, channel, payload)
        else:
            await con.fetchval(NOTIFY, channel, payload)
