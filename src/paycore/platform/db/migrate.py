"""Versioned SQL migrations (`paycore migrate`).

* Files `NNNN_name.sql` in `migrations/`, applied in order, each recorded with its SHA-256.
* A PostgreSQL advisory lock on a dedicated connection serialises concurrent runners: two
  instances may start `paycore migrate` at once; the second waits, then finds nothing to do.
* An applied migration whose file changed is refused (checksum mismatch): write a new one.
* A file whose first line is `-- paycore:no-transaction` runs statement by statement outside a
  transaction (for `CREATE INDEX CONCURRENTLY`); every other file runs in one transaction.
* Statements run with `statement_timeout` and `lock_timeout` from the settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger("paycore.migrate")

ADVISORY_LOCK_KEY = 0x70617963  # "payc"
NO_TRANSACTION_MARK = "-- paycore:no-transaction"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION_MARK)

    def statements(self) -> list[str]:
        """Split a no-transaction file on `;` at line ends (index statements only)."""
        parts = re.split(r";\s*\n", self.sql + "\n")
        out = []
        for part in parts:
            lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
            stmt = "\n".join(lines).strip()
            if stmt:
                out.append(stmt)
        return out


def load_migrations(directory: Path | None = None) -> list[Migration]:
    if directory is None:
        root = resources.files("paycore.platform.db") / "migrations"
        entries = [(p.name, p.read_text()) for p in root.iterdir() if p.name.endswith(".sql")]
    else:
        entries = [(p.name, p.read_text()) for p in directory.iterdir() if p.suffix == ".sql"]
    migrations = []
    seen: set[int] = set()
    for name, text in sorted(entries):
        match = _FILE.match(name)
        if match is None:
            raise MigrationError(f"bad migration file name {name!r} (want NNNN_name.sql)")
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"two migrations share version {version}")
        seen.add(version)
        migrations.append(Migration(version, match.group(2), text))
    return migrations


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def applied_versions(con: asyncpg.Connection) -> dict[int, str]:
    exists = await con.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await con.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


async def pending_migrations(con: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    applied = await applied_versions(con)
    return [mg for mg in migrations if mg.version not in applied]


async def is_current(con: asyncpg.Connection, migrations: list[Migration] | None = None) -> bool:
    migrations = load_migrations() if migrations is None else migrations
    applied = await applied_versions(con)
    return all(applied.get(mg.version) == mg.checksum for mg in migrations)


async def _acquire_lock(con: asyncpg.Connection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await con.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationError(f"another `paycore migrate` held the migration lock for over {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def migrate(
    dsn: str,
    *,
    statement_timeout: float = 300.0,
    lock_timeout: float = 5.0,
    migrations: list[Migration] | None = None,
    lock_wait: float = 600.0,
) -> list[int]:
    """Apply every pending migration; returns the versions applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    con = await asyncpg.connect(
        dsn,
        server_settings={
            "application_name": "paycore-migrate",
            "timezone": "UTC",
            "statement_timeout": str(int(statement_timeout * 1000)),
            "lock_timeout": str(int(lock_timeout * 1000)),
        },
    )
    applied_now: list[int] = []
    try:
        # A session advisory lock is fine here: this connection is dedicated, never pooled. It is
        # polled, never waited for inside a statement: a runner blocked in `pg_advisory_lock` holds
        # a transaction that the other runner's `CREATE INDEX CONCURRENTLY` would wait for, and the
        # two would deadlock.
        await _acquire_lock(con, lock_wait)
        try:
            await con.execute(_CREATE_TABLE)
            applied = await applied_versions(con)
            for mg in migrations:
                if mg.version in applied:
                    if applied[mg.version] != mg.checksum:
                        raise MigrationError(
                            f"migration {mg.version:04d}_{mg.name} was edited after it was applied "
                            f"(checksum mismatch); add a new migration instead"
                        )
                    continue
                log.info("migration_apply", version=mg.version, name=mg.name)
                if mg.transactional:
                    async with con.transaction():
                        await con.execute(mg.sql)
                        await con.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                            mg.version,
                            mg.name,
                            mg.checksum,
                        )
                else:
                    for stmt in mg.statements():
                        await con.execute(stmt)
                    await con.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        mg.version,
                        mg.name,
                        mg.checksum,
                    )
                applied_now.append(mg.version)
            unknown = sorted(set(applied) - {mg.version for mg in migrations})
            if unknown:
                log.warning("migration_unknown_versions", versions=unknown)
        finally:
            await con.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await con.close()
    return applied_now
