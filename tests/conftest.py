"""Shared fixtures: a migrated PostgreSQL database per xdist worker, settings for tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

os.environ.setdefault("PAYCORE_ENV", "test")
os.environ.setdefault("PAYCORE_LOG_LEVEL", "warning")

from tests.support import db as test_db
from tests.support.leaks import add_guards, leak_guard, task_leak_guard
from tests.support.sim_fixtures import epx_sim, sim_control

__all__ = ["epx_sim", "leak_guard", "sim_control", "task_leak_guard"]


def _configure_uncached(*args: object, **kwargs: object) -> None:
    # An app built in-process (create_app → configure_logging) would cache every structlog logger
    # it touches; `capture_logs()` in any later test of that worker would then see nothing. The
    # test process never caches loggers (servers in subprocesses are unaffected).
    kwargs["cache_logger_on_first_use"] = False
    _structlog_configure(*args, **kwargs)


_structlog_configure = structlog.configure
structlog.configure = _configure_uncached  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    # An in-process app also filters below PAYCORE_LOG_LEVEL (warning here) in its wrapper class,
    # which `capture_logs()` keeps: a later test of the worker capturing INFO would see nothing,
    # depending on how xdist distributed the tests. Each test starts from the configuration the
    # previous one found.
    saved = structlog.get_config()
    yield
    _structlog_configure(**saved)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # RES-M1: integration, e2e and chaos tests fail when they leave tasks, pools, sessions or
    # database backends behind (tests/support/leaks.py).
    for item in items:
        add_guards(item)


def _worker_id(config: pytest.Config) -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database for this test worker, cloned from a template."""
    # The run id keeps concurrent test runs on one machine (several engineers, one PostgreSQL)
    # from dropping each other's databases.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"p{os.getpid()}")[:8]
    name = f"paycore_test_{_worker_id(request.config)}_{run_id}"
    dsn = asyncio.run(test_db.create_database(name))
    yield dsn
    asyncio.run(test_db.drop_database(name))


@pytest.fixture
async def clean_db(database_url: str) -> AsyncIterator[str]:
    """The worker's database emptied of rows (schema kept)."""
    import asyncpg

    con = await asyncpg.connect(database_url)
    try:
        tables = await con.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        names = ", ".join(f'"{t["tablename"]}"' for t in tables)
        await con.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await con.close()
    yield database_url
