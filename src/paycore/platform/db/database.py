"""Named queries with timeout tiers (CRITICAL-5), pool monitoring (CRITICAL-4), transactions (DB-8).

Repositories declare each statement once as a `Query(name, tier, sql)`; only this module talks to
asyncpg. The effective timeout of a statement is `min(tier, remaining request deadline)`, and of a
transaction `min(PAYCORE_TX_TIMEOUT, remaining)` for all its statements together.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from asyncpg import Record

from paycore.kernel import errors
from paycore.platform.observability import metrics as m
from paycore.platform.observability import tracing
from paycore.platform.resilience import deadline as dl

log = structlog.get_logger("paycore.db")

__all__ = ["Connection", "Database", "Query", "Record", "Tier"]


class Tier(enum.Enum):
    """Query timeout classes (roadmap CRITICAL-5)."""

    SIMPLE = "simple"  # by-id lookups, existence checks (2 s)
    STANDARD = "standard"  # filtered lists, search, sweeps (5 s)
    COMPLEX = "complex"  # recursive trees, aggregations (15 s)
    REPORT = "report"  # daily/monthly summaries (30 s)
    EXPORT = "export"  # exports (60 s)


@dataclass(frozen=True, slots=True)
class Query:
    """A statement with a static name (the metric label) and a timeout tier."""

    name: str
    tier: Tier
    sql: str


@dataclass(frozen=True, slots=True)
class TierTimeouts:
    simple: float = 2.0
    standard: float = 5.0
    complex: float = 15.0
    report: float = 30.0
    export: float = 60.0

    def of(self, tier: Tier) -> float:
        return float(getattr(self, tier.value))


class QueryTimeout(errors.PaycoreError):
    def __init__(self, query_name: str, tier: Tier) -> None:
        super().__init__(
            errors.DATABASE_UNAVAILABLE,
            "A database query timed out",
            headers={"Retry-After": "1"},
        )
        self.query_name = query_name
        self.tier = tier


class PoolExhausted(errors.PaycoreError):
    def __init__(self) -> None:
        super().__init__(
            errors.DATABASE_UNAVAILABLE,
            "No database connection became free in time",
            headers={"Retry-After": "1"},
        )


class DatabaseUnavailable(errors.PaycoreError):
    def __init__(self, detail: str = "The database is unreachable") -> None:
        super().__init__(errors.DATABASE_UNAVAILABLE, detail, headers={"Retry-After": "1"})


class StaleConnection(DatabaseUnavailable):
    """A pooled connection was left mid-protocol by a cancelled statement (asyncpg#1069, seen when
    pool saturation makes statements time out). It is terminated, never handed out again.
    `unsent` is True when asyncpg refused the new statement before sending anything."""

    def __init__(self, unsent: bool) -> None:
        super().__init__("A database connection failed; retry")
        self.unsent = unsent


def _stale(con: asyncpg.Connection, exc: asyncpg.InternalClientError) -> StaleConnection:
    con.terminate()
    log.warning("db_connection_stale", detail=str(exc)[:120])
    return StaleConnection(unsent=str(exc).startswith("cannot switch to state"))


# Query counter per request (DB-11): set by the HTTP middleware, read at the end of the request.
query_counter: ContextVar[list[int] | None] = ContextVar("paycore_query_counter", default=None)

_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return "constraint"
    if isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError):
        return "serialization"
    if isinstance(exc, _CONNECTION_ERRORS):
        return "connection"
    return "other"


class Connection:
    """A connection (usually inside a transaction) that runs named queries only."""

    __slots__ = ("_con", "_db", "_deadline")

    def __init__(self, db: Database, con: asyncpg.Connection, tx_deadline: float | None) -> None:
        self._db = db
        self._con = con
        self._deadline = tx_deadline

    async def fetch(self, q: Query, *args: Any) -> list[Record]:
        return await self._db._run(self._con, q, "fetch", args, self._deadline)  # type: ignore[no-any-return]

    async def fetchrow(self, q: Query, *args: Any) -> Record | None:
        return await self._db._run(self._con, q, "fetchrow", args, self._deadline)

    async def fetchval(self, q: Query, *args: Any) -> Any:
        return await self._db._run(self._con, q, "fetchval", args, self._deadline)

    async def execute(self, q: Query, *args: Any) -> str:
        return await self._db._run(self._con, q, "execute", args, self._deadline)  # type: ignore[no-any-return]

    async def executemany(self, q: Query, args: Sequence[Sequence[Any]]) -> None:
        await self._db._run(self._con, q, "executemany", (args,), self._deadline)

    @property
    def raw(self) -> asyncpg.Connection:
        """The asyncpg connection, for the platform only (migrations, LISTEN)."""
        return self._con


class Database:
    """The process's pool plus the policies every query goes through."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        tiers: TierTimeouts,
        tx_timeout: float = 10.0,
        acquire_timeout: float = 2.0,
    ) -> None:
        self.pool = pool
        self.tiers = tiers
        self.tx_timeout = tx_timeout
        self.acquire_timeout = acquire_timeout
        self.waiting = 0

    # -- pool access with monitoring ---------------------------------------------------------
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        timeout = dl.bounded(self.acquire_timeout)
        empty = self.pool.get_idle_size() == 0 and self.pool.get_size() >= self.pool.get_max_size()
        if empty:
            m.DB_POOL_EMPTY_ACQUIRES.inc()
        m.DB_POOL_ACQUIRES.inc()
        self.waiting += 1
        started = time.perf_counter()
        try:
            con = await self.pool.acquire(timeout=timeout)
        except TimeoutError:
            m.DB_POOL_CANCELED_ACQUIRES.inc()
            m.DB_POOL_ACQUIRE_DURATION.labels("timeout").observe(time.perf_counter() - started)
            raise PoolExhausted() from None
        except asyncio.CancelledError:
            m.DB_POOL_CANCELED_ACQUIRES.inc()
            m.DB_POOL_ACQUIRE_DURATION.labels("canceled").observe(time.perf_counter() - started)
            raise
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable() from exc
        finally:
            self.waiting -= 1
        m.DB_POOL_ACQUIRE_DURATION.labels("success").observe(time.perf_counter() - started)
        try:
            yield con
        finally:
            await self.pool.release(con)

    # -- single statements (each on its own pooled connection) --------------------------------
    async def _single(self, q: Query, method: str, args: tuple[Any, ...]) -> Any:
        # Each stale connection met is terminated, so this ends within the pool's size.
        for attempt in range(self.pool.get_max_size() + 1):
            async with self.acquire() as con:
                try:
                    return await self._run(con, q, method, args, None)
                except StaleConnection as exc:
                    # Nothing was sent: safe to run the statement on another connection.
                    if not exc.unsent or attempt == self.pool.get_max_size():
                        raise
        raise AssertionError("unreachable")

    async def fetch(self, q: Query, *args: Any) -> list[Record]:
        return await self._single(q, "fetch", args)  # type: ignore[no-any-return]

    async def fetchrow(self, q: Query, *args: Any) -> Record | None:
        return await self._single(q, "fetchrow", args)

    async def fetchval(self, q: Query, *args: Any) -> Any:
        return await self._single(q, "fetchval", args)

    async def execute(self, q: Query, *args: Any) -> str:
        return await self._single(q, "execute", args)  # type: ignore[no-any-return]

    # -- transactions -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One transaction under one deadline `min(tx_timeout, remaining)`; rollback is counted."""
        async with self.acquire() as con:
            tx_deadline = asyncio.get_running_loop().time() + dl.bounded(self.tx_timeout)
            started = time.perf_counter()
            tx = con.transaction()
            try:
                await asyncio.wait_for(tx.start(), self._left(tx_deadline, self.tiers.simple))
            except TimeoutError:
                raise QueryTimeout("transaction.begin", Tier.SIMPLE) from None
            except _CONNECTION_ERRORS as exc:
                raise DatabaseUnavailable() from exc
            except asyncpg.InternalClientError as exc:
                raise _stale(con, exc) from exc
            try:
                yield Connection(self, con, tx_deadline)
            except BaseException as exc:
                reason = (
                    "cancelled"
                    if isinstance(exc, asyncio.CancelledError)
                    else "timeout"
                    if isinstance(exc, TimeoutError | QueryTimeout)
                    else "error"
                )
                m.DB_TX_ROLLBACKS.labels(reason).inc()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(tx.rollback(), self.tiers.simple)
                raise
            else:
                try:
                    await asyncio.wait_for(tx.commit(), self._left(tx_deadline, self.tiers.simple))
                except TimeoutError:
                    m.DB_TX_ROLLBACKS.labels("timeout").inc()
                    raise QueryTimeout("transaction.commit", Tier.SIMPLE) from None
                except _CONNECTION_ERRORS as exc:
                    raise DatabaseUnavailable() from exc
            finally:
                m.DB_TX_DURATION.observe(time.perf_counter() - started)

    # -- the one place statements run ---------------------------------------------------------
    def _left(self, tx_deadline: float | None, own: float) -> float:
        timeout = dl.bounded(own)
        if tx_deadline is not None:
            timeout = min(timeout, tx_deadline - asyncio.get_running_loop().time())
        if timeout <= 0:
            raise dl.DeadlineExceeded("transaction deadline exceeded")
        return timeout

    async def _run(
        self,
        con: asyncpg.Connection,
        q: Query,
        method: str,
        args: tuple[Any, ...],
        tx_deadline: float | None,
    ) -> Any:
        counter = query_counter.get()
        if counter is not None:
            counter[0] += 1
        try:
            timeout = self._left(tx_deadline, self.tiers.of(q.tier))
        except dl.DeadlineExceeded:
            m.DB_QUERY_ERRORS.labels(q.name, "timeout").inc()
            raise QueryTimeout(q.name, q.tier) from None
        span = tracing.db_span(q.name, q.tier.value)
        started = time.perf_counter()
        status = "success"
        try:
            return await getattr(con, method)(q.sql, *args, timeout=timeout)
        except TimeoutError:
            status = "timeout"
            m.DB_QUERY_ERRORS.labels(q.name, "timeout").inc()
            log.warning("query_timeout", query=q.name, tier=q.tier.value, timeout=round(timeout, 3))
            raise QueryTimeout(q.name, q.tier) from None
        except asyncio.CancelledError:
            status = "error"
            raise
        except _CONNECTION_ERRORS as exc:
            status = "error"
            m.DB_QUERY_ERRORS.labels(q.name, "connection").inc()
            raise DatabaseUnavailable() from exc
        except asyncpg.InternalClientError as exc:
            status = "error"
            m.DB_QUERY_ERRORS.labels(q.name, "connection").inc()
            raise _stale(con, exc) from exc
        except Exception as exc:
            status = "error"
            m.DB_QUERY_ERRORS.labels(q.name, _error_type(exc)).inc()
            raise
        finally:
            m.DB_QUERY_DURATION.labels(q.name, q.tier.value, status).observe(time.perf_counter() - started)
            tracing.end_db_span(span, status)
