"""The asyncpg pool (no-op reset, server-side backstops) and its monitor (CRITICAL-4, DB-2)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from paycore.config import Settings
from paycore.kernel import codec
from paycore.platform.db.database import Database, Query, Tier, TierTimeouts
from paycore.platform.observability import metrics as m

log = structlog.get_logger("paycore.db.pool")


async def _init_connection(con: asyncpg.Connection) -> None:
    # JSONB through msgspec (MEM-16): encode to text, decode from text.
    await con.set_type_codec(
        "jsonb",
        encoder=lambda v: codec.encode(v).decode(),
        decoder=codec.decode,
        schema="pg_catalog",
        format="text",
    )
    await con.set_type_codec(
        "json",
        encoder=lambda v: codec.encode(v).decode(),
        decoder=codec.decode,
        schema="pg_catalog",
        format="text",
    )


async def _no_reset(con: asyncpg.Connection) -> None:
    """No `RESET ALL` round trip on release (design.md): paycore keeps no session state.

    asyncpg still rolls back an open transaction before calling this.
    """


def server_settings(settings: Settings, application_name: str = "paycore") -> dict[str, str]:
    return {
        "timezone": "UTC",
        "application_name": application_name,
        "statement_timeout": str(int(settings.db_statement_timeout * 1000)),
        "idle_in_transaction_session_timeout": str(int(settings.db_idle_in_tx_timeout * 1000)),
    }


async def create_database(
    settings: Settings,
    dsn: str,
    *,
    application_name: str = "paycore",
    min_size: int | None = None,
    max_size: int | None = None,
) -> Database:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.db_min_conns if min_size is None else min_size,
        max_size=settings.db_max_conns if max_size is None else max_size,
        max_inactive_connection_lifetime=settings.db_max_conn_idle,
        command_timeout=settings.query_timeout_standard,
        statement_cache_size=settings.db_statement_cache_size,
        server_settings=server_settings(settings, application_name),
        init=_init_connection,
        reset=_no_reset,
    )
    return Database(
        pool,
        tiers=TierTimeouts(
            simple=settings.query_timeout_simple,
            standard=settings.query_timeout_standard,
            complex=settings.query_timeout_complex,
            report=settings.query_timeout_report,
            export=settings.query_timeout_export,
        ),
        tx_timeout=settings.tx_timeout,
        acquire_timeout=settings.db_acquire_timeout,
    )


PING = Query("platform.ping", Tier.SIMPLE, "SELECT 1")


class PoolMonitor:
    """Samples the pool into gauges, logs WARN/ERROR above thresholds, recommends sizing."""

    def __init__(self, db: Database, *, warn_ratio: float = 0.8, error_ratio: float = 0.95) -> None:
        self.db = db
        self.warn_ratio = warn_ratio
        self.error_ratio = error_ratio
        self._ticks = 0
        self._last_empty = 0.0

    def sample(self) -> dict[str, Any]:
        pool = self.db.pool
        size = pool.get_size()
        idle = pool.get_idle_size()
        maximum = pool.get_max_size()
        acquired = size - idle
        utilisation = acquired / maximum if maximum else 0.0
        m.DB_POOL_MAX.set(maximum)
        m.DB_POOL_MIN.set(pool.get_min_size())
        m.DB_POOL_SIZE.set(size)
        m.DB_POOL_IDLE.set(idle)
        m.DB_POOL_ACQUIRED.set(acquired)
        m.DB_POOL_WAITERS.set(self.db.waiting)
        return {
            "max": maximum,
            "size": size,
            "idle": idle,
            "acquired": acquired,
            "waiting": self.db.waiting,
            "utilisation": utilisation,
        }

    def tick(self) -> dict[str, Any]:
        stats = self.sample()
        self._ticks += 1
        utilisation = stats["utilisation"]
        if utilisation > self.error_ratio:
            log.error("db_pool_critical", **stats)
        elif utilisation > self.warn_ratio:
            log.warning("db_pool_high", **stats)
        if self._ticks % 3 == 0:
            advice = recommend_pool_size(stats["max"], utilisation)
            if advice != stats["max"]:
                log.info("db_pool_recommendation", current=stats["max"], recommended=advice)
        return stats

    async def ping(self) -> bool:
        try:
            await self.db.fetchval(PING)
        except Exception:
            m.DB_UP.set(0)
            return False
        m.DB_UP.set(1)
        return True

    async def run(self, interval: float) -> None:
        while True:
            self.tick()
            await asyncio.sleep(interval)


def recommend_pool_size(current: int, utilisation: float) -> int:
    """Advisory only (DB-2): > 75 % → +5 (≤ 100); < 30 % → −2 (≥ 2)."""
    if utilisation > 0.75:
        return min(current + 5, 100)
    if utilisation < 0.30:
        return max(current - 2, 2)
    return current
