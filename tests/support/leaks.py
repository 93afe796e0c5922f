"""Leak detection for tests (RES-M1): a test must not leave behind asyncio tasks, asyncpg pools or
connections, aiohttp sessions or connectors, nor PostgreSQL backends on its database.

`tests/conftest.py` adds two fixtures to every integration, e2e and chaos test:

* `leak_guard` (every such test): records each asyncpg `Pool`/`Connection` and aiohttp
  `ClientSession`/`BaseConnector` created during the test; afterwards every one must be closed.
  When the test used the worker's database it also waits (briefly) until `pg_stat_activity` shows
  no backend on it: this catches connections held by a server subprocess too.
* `task_leak_guard` (async tests): a baseline of `asyncio.all_tasks()` is taken when the test's
  loop starts; at the end, tasks beyond it that do not finish within a short grace period fail
  the test (they are then cancelled, so one leak does not cascade).

A failure is reported at teardown (an error of that test) and names what leaked. `LeakTracker` is
the logic; the fixtures only call it, so it is tested directly as well as through pytest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import asyncpg.connection
import asyncpg.pool
import pytest

TASK_GRACE_S = 1.0
BACKEND_GRACE_S = 5.0


class LeakTracker:
    def __init__(self) -> None:
        self.pools: list[Any] = []
        self.connections: list[Any] = []
        self.sessions: list[aiohttp.ClientSession] = []
        self.connectors: list[aiohttp.BaseConnector] = []
        self._undo: list[Callable[[], None]] = []
        self._tasks_before: set[asyncio.Task[Any]] | None = None

    # --- recording ---------------------------------------------------------------------------
    def install(self) -> None:
        self._wrap(asyncpg.pool.Pool, self.pools)
        self._wrap(asyncpg.connection.Connection, self.connections)
        self._wrap(aiohttp.ClientSession, self.sessions)
        self._wrap(aiohttp.BaseConnector, self.connectors)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap(self, cls: type, sink: list[Any]) -> None:
        own = cls.__dict__.get("__init__")
        original = cls.__init__  # type: ignore[misc]

        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:
            original(obj, *args, **kwargs)
            sink.append(obj)

        cls.__init__ = __init__  # type: ignore[misc]

        def undo() -> None:
            if own is None:
                delattr(cls, "__init__")
            else:
                cls.__init__ = own  # type: ignore[misc]

        self._undo.append(undo)

    def start_tasks(self) -> None:
        self._tasks_before = set(asyncio.all_tasks())

    # --- checking ----------------------------------------------------------------------------
    def open_resources(self) -> list[str]:
        problems: list[str] = []
        for pool in self.pools:
            if not pool.is_closing():
                held = pool.get_size() - pool.get_idle_size()
                problems.append(f"asyncpg pool not closed ({held} of {pool.get_size()} connections held)")
        for con in self.connections:
            if not con.is_closed():
                problems.append(f"asyncpg connection not closed (backend pid {con.get_server_pid()})")
        for session in self.sessions:
            if not session.closed:
                problems.append("aiohttp ClientSession not closed")
        for connector in self.connectors:
            if not connector.closed:
                problems.append(f"aiohttp {type(connector).__name__} not closed")
        return problems

    async def leaked_tasks(self, grace: float = TASK_GRACE_S) -> list[str]:
        if self._tasks_before is None:
            return []
        current = asyncio.current_task()
        extra = {t for t in asyncio.all_tasks() if t not in self._tasks_before and t is not current}
        if extra:
            _, still = await asyncio.wait(extra, timeout=grace)
            extra = {t for t in still if not t.done()}
        problems = [f"task left running: {describe(t)}" for t in sorted(extra, key=lambda t: t.get_name())]
        for task in extra:
            task.cancel()
        if extra:
            await asyncio.wait(extra, timeout=1.0)
        return problems


def describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or type(coro).__name__
    return f"{task.get_name()} ({name})"


async def database_backends(dsn: str, *, grace: float = BACKEND_GRACE_S) -> list[str]:
    """Backends still connected to the database of `dsn` (other than this check's own), after
    waiting up to `grace` seconds for closing ones to go away."""
    base, _, name = dsn.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        deadline = time.monotonic() + grace
        while True:
            rows = await admin.fetch(
                "SELECT pid, application_name, state FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            if not rows or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    return [
        f"backend {r['pid']} ({r['application_name'] or '?'}, {r['state']}) still on {name}" for r in rows
    ]


def _fail(what: str, problems: list[str]) -> None:
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def leak_guard(request: pytest.FixtureRequest) -> Iterator[LeakTracker]:
    tracker = LeakTracker()
    tracker.install()
    try:
        yield tracker
    finally:
        tracker.uninstall()
    problems = tracker.open_resources()
    if "database_url" in request.fixturenames:
        problems += asyncio.run(database_backends(request.getfixturevalue("database_url")))
    _fail("the test leaked resources", problems)


@pytest.fixture
async def task_leak_guard() -> AsyncIterator[None]:
    tracker = LeakTracker()
    tracker.start_tasks()
    yield
    _fail("the test leaked asyncio tasks", await tracker.leaked_tasks())


GUARDED_KINDS = ("integration", "e2e", "chaos")


def add_guards(item: pytest.Item) -> None:
    """Called from `pytest_collection_modifyitems`: guard integration, e2e and chaos tests."""
    marked = any(item.get_closest_marker(kind) for kind in GUARDED_KINDS)
    if not marked and not any(part in GUARDED_KINDS for part in item.path.parts):
        return
    names: list[str] | None = getattr(item, "fixturenames", None)
    if names is None:
        return
    if asyncio.iscoroutinefunction(getattr(item, "obj", None)) and "task_leak_guard" not in names:
        names.insert(0, "task_leak_guard")
    if "leak_guard" not in names:
        names.insert(0, "leak_guard")
