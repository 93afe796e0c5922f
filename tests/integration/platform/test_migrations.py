"""`paycore migrate`: ordered, checksummed, advisory-locked, with non-transactional steps."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from paycore.platform.db.migrate import MigrationError, is_current, load_migrations, migrate
from tests.support import db as test_db

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_db():
    name = f"paycore_mig_{uuid.uuid4().hex[:8]}"
    dsn = await test_db.create_empty_database(name)
    yield dsn
    await test_db.drop_database(name)


async def test_two_runners_at_once_apply_each_migration_once(empty_db):
    results = await asyncio.gather(migrate(empty_db), migrate(empty_db))
    versions = [mg.version for mg in load_migrations()]
    assert sorted(results[0] + results[1]) == versions
    con = await asyncpg.connect(empty_db)
    try:
        assert await con.fetchval("SELECT count(*) FROM schema_migrations") == len(versions)
        assert await is_current(con)
    finally:
        await con.close()
    # FIX-3: the database's own default zone is UTC for every new session
    con = await asyncpg.connect(empty_db, server_settings={})
    try:
        assert await con.fetchval("SHOW timezone") == "UTC"
    finally:
        await con.close()


async def test_edited_migration_is_refused(empty_db, tmp_path: Path):
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (id int);")
    await migrate(empty_db, migrations=load_migrations(tmp_path))
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="checksum"):
        await migrate(empty_db, migrations=load_migrations(tmp_path))


async def test_no_transaction_migration_runs_create_index_concurrently(empty_db, tmp_path: Path):
    (tmp_path / "0001_table.sql").write_text("CREATE TABLE t2 (id int, v int);")
    (tmp_path / "0002_index.sql").write_text(
        "-- paycore:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_t2_v ON t2 (v);\n"
    )
    applied = await migrate(empty_db, migrations=load_migrations(tmp_path))
    assert applied == [1, 2]
    con = await asyncpg.connect(empty_db)
    try:
        assert await con.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_t2_v'") == 1
    finally:
        await con.close()


async def test_a_failing_migration_leaves_nothing_behind(empty_db, tmp_path: Path):
    (tmp_path / "0001_bad.sql").write_text("CREATE TABLE t3 (id int); SELECT 1/0;")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(empty_db, migrations=load_migrations(tmp_path))
    con = await asyncpg.connect(empty_db)
    try:
        assert await con.fetchval("SELECT to_regclass('t3')") is None
        assert await con.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await con.close()


async def test_every_timestamp_column_is_timestamptz(database_url):
    con = await asyncpg.connect(database_url)
    try:
        naive = await con.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'"
        )
        assert naive == []
    finally:
        await con.close()
