"""Test databases: one migrated template per migration set, one clone per xdist worker."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

import asyncpg

from paycore.platform.db.migrate import load_migrations, migrate

ADMIN_DSN = os.environ.get("PAYCORE_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(name: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


def _template_name() -> str:
    digest = hashlib.sha256("".join(mg.checksum for mg in load_migrations()).encode()).hexdigest()[:10]
    return f"paycore_tpl_{digest}"


async def _ensure_template() -> str:
    name = _template_name()
    lock_path = Path(tempfile.gettempdir()) / f"{name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await admin.execute(f'CREATE DATABASE "{name}"')
                try:
                    await migrate(dsn_for(name))
                except BaseException:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                    raise
        finally:
            await admin.close()
    return name


async def create_database(name: str) -> str:
    template = await _ensure_template()
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for attempt in range(20):
            try:
                await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except asyncpg.ObjectInUseError:
                # another worker is copying the template at this instant
                await asyncio.sleep(0.2 * (attempt + 1))
    finally:
        await admin.close()
    return dsn_for(name)


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_empty_database(name: str) -> str:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return dsn_for(name)
