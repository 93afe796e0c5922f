"""A pooled connection left mid-protocol by a cancelled statement (asyncpg#1069; chaos C2 meets it
when pool saturation makes statements time out) is terminated, never reused, and costs a clean
503 `database_unavailable` — or nothing, when asyncpg refused the statement before sending it."""

from __future__ import annotations

import asyncpg
import pytest

from paycore.platform.db.database import Database, DatabaseUnavailable, Query, StaleConnection, Tier
from paycore.platform.db.pool import create_database
from tests.support.stack import stack_settings

pytestmark = pytest.mark.integration

ONE = Query("test.one", Tier.SIMPLE, "SELECT 1")


@pytest.fixture
async def db(clean_db, epx_sim):
    database = await create_database(stack_settings(clean_db, epx_sim), clean_db, min_size=2, max_size=2)
    yield database
    await database.pool.close()


def corrupt_next(db: Database, message: str, times: int = 1) -> list[asyncpg.Connection]:
    """Make the next `times` statements fail the way a stale connection does."""
    used: list[asyncpg.Connection] = []
    original = db._run

    async def run(con, q, method, args, tx_deadline):
        if len(used) < times:
            used.append(con._con)  # the connection behind the pool proxy
            raise asyncpg.InternalClientError(message)
        return await original(con, q, method, args, tx_deadline)

    async def patched(con, q, method, args, tx_deadline):
        try:
            return await run(con, q, method, args, tx_deadline)
        except asyncpg.InternalClientError as exc:
            from paycore.platform.db.database import _stale

            raise _stale(con, exc) from exc

    db._run = patched  # type: ignore[method-assign]
    return used


async def test_unsent_statement_moves_to_a_fresh_connection(db: Database) -> None:
    used = corrupt_next(db, "cannot switch to state 12; another operation (2) is in progress", times=2)
    assert await db.fetchval(ONE) == 1
    assert len(used) == 2 and all(con.is_closed() for con in used)


async def test_possibly_sent_statement_is_a_clean_503(db: Database) -> None:
    used = corrupt_next(db, "unknown error in protocol implementation")
    with pytest.raises(StaleConnection) as info:
        await db.fetchval(ONE)
    assert isinstance(info.value, DatabaseUnavailable) and info.value.status == 503
    assert used[0].is_closed()
    assert await db.fetchval(ONE) == 1  # the pool replaced it
