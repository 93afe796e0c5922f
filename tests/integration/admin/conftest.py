"""The real app in-process (ASGI lifespan), twice if a test wants two instances on one database,
each with its own container, caches, breakers and LISTEN connection; an admin token."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from paycore.app import create_app
from paycore.bootstrap import Container
from tests.integration.resilience.asgi import Reply, call, lifespan
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY


@dataclass
class Instance:
    app: Any

    @property
    def container(self) -> Container:
        container: Container = self.app.state.container
        return container

    async def request(
        self, method: str, path: str, token: str | None = None, json_body: Any = None, **headers: str
    ) -> Reply:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await call(self.app, method, path, headers=headers, json_body=json_body)

    async def listening(self) -> None:
        assert self.container.listener is not None
        await asyncio.wait_for(self.container.listener.listening.wait(), 10)


@dataclass
class AdminStack:
    database_url: str
    start: Callable[..., Awaitable[Instance]]

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        con = await asyncpg.connect(self.database_url)
        try:
            return await con.fetch(query, *args)
        finally:
            await con.close()

    async def audit_rows(self) -> list[dict[str, Any]]:
        rows = await self.sql("SELECT * FROM audit_log WHERE action LIKE 'admin.%' ORDER BY id")
        return [{**dict(r), "details": json.loads(r["details"]) if r["details"] else None} for r in rows]


@pytest.fixture
async def admin_stack(clean_db, epx_sim, monkeypatch) -> AsyncIterator[AdminStack]:
    monkeypatch.setattr("paycore.app.configure_logging", lambda *args, **kwargs: None)
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Instance:
            settings = dataclasses.replace(stack_settings(clean_db, epx_sim), **overrides)
            app = await stack.enter_async_context(lifespan(create_app(settings)))
            instance = Instance(app)
            await instance.listening()
            return instance

        yield AdminStack(clean_db, start)


async def new_admin_token(instance: Instance, name: str = "ops") -> tuple[uuid.UUID, str]:
    assert instance.container.admin is not None
    created = await instance.container.admin.tokens.create_token(name)
    return created.id, created.secret


async def new_merchant_key(instance: Instance) -> tuple[uuid.UUID, str]:
    directory = instance.container.merchants
    merchant = await directory.create_merchant(
        slug=f"m{uuid.uuid4().hex[:8]}", name="Shop", environment="sandbox", epx=SANDBOX_KEY, mac_secret="mac"
    )
    return merchant.id, (await directory.create_api_key(merchant.id)).secret


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
