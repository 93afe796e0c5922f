"""RES-M1: the leak guard itself. `LeakTracker` is driven directly (each kind of leak is seen, a
clean run is silent), then a real pytest run proves that a leaking test fails."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.support.leaks import LeakTracker, database_backends

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


async def test_a_task_left_running_is_reported_and_cancelled() -> None:
    tracker = LeakTracker()
    tracker.start_tasks()
    sleeper = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="deliberate-leak")
    quick = asyncio.get_running_loop().create_task(asyncio.sleep(0.05), name="finishes-in-grace")
    problems = await tracker.leaked_tasks(grace=0.3)
    assert len(problems) == 1 and "deliberate-leak" in problems[0]
    assert sleeper.cancelled() and quick.done() and not quick.cancelled()


async def test_no_report_when_nothing_leaks() -> None:
    tracker = LeakTracker()
    tracker.start_tasks()
    await asyncio.get_running_loop().create_task(asyncio.sleep(0))
    assert await tracker.leaked_tasks(grace=0.1) == []


async def test_unclosed_pool_connection_and_session_are_reported(database_url: str) -> None:
    tracker = LeakTracker()
    tracker.install()
    try:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        con = await asyncpg.connect(database_url)
        session = aiohttp.ClientSession()
        held = await pool.acquire()
    finally:
        tracker.uninstall()
    problems = tracker.open_resources()
    try:
        assert any("pool not closed (1 of 1 connections held)" in p for p in problems), problems
        assert any("asyncpg connection not closed" in p for p in problems)
        assert "aiohttp ClientSession not closed" in problems
        assert any("TCPConnector not closed" in p for p in problems)
        assert any("still on" in p for p in await database_backends(database_url, grace=0.1))
    finally:
        await pool.release(held)
        await pool.close()
        await con.close()
        await session.close()
    assert tracker.open_resources() == []
    assert await database_backends(database_url) == []


def test_a_leaking_test_fails_under_pytest(tmp_path: Path) -> None:
    """A real pytest run: the leaking tests error at teardown and name the leak; a clean one passes."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            from tests.support.leaks import add_guards, leak_guard, task_leak_guard

            def pytest_collection_modifyitems(config, items):
                for item in items:
                    add_guards(item)
            """
        )
    )
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            import aiohttp
            import pytest

            pytestmark = pytest.mark.integration
            _keep = []

            async def test_leaks_a_task():
                _keep.append(asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="sleeper"))

            async def test_leaks_a_session():
                _keep.append(aiohttp.ClientSession())

            async def test_clean():
                async with aiohttp.ClientSession():
                    await asyncio.sleep(0)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_XDIST_WORKER", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "markers=integration",
            "-W",
            "ignore::ResourceWarning",
            str(tmp_path),
        ],
        cwd=tmp_path,
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "3 passed, 2 errors" in out, out
    assert "task left running: sleeper" in out
    assert "aiohttp ClientSession not closed" in out
