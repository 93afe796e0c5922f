from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from paycore.bootstrap import build_merchant_directory
from paycore.config import load_settings
from paycore.platform.db.pool import create_database
from tests.support.stack import ServerProcess, stack_env
from tests.support.tokens import SANDBOX_KEY, mint_token


async def _seed_merchant(env: dict[str, str]) -> tuple[str, str]:
    settings = load_settings(env)
    db = await create_database(settings, env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await directory.create_merchant(
            slug="shop", name="Shop", environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
        )
        key = await directory.create_api_key(merchant.id)
        return str(merchant.id), key.secret
    finally:
        await db.pool.close()


class Api:
    def __init__(self, server: ServerProcess, api_key: str, env: dict[str, str]) -> None:
        self.server = server
        self.url = server.url
        self.api_key = api_key
        self.env = env

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json", **extra}
        if key:
            headers["Idempotency-Key"] = key
        return headers


@contextlib.asynccontextmanager
async def serve_api(clean_db: str, epx_sim: Any, **extra_env: str) -> AsyncIterator[Api]:
    """`paycore serve` on the test database and simulator, one sandbox merchant and its key;
    `extra_env` adds or overrides settings."""
    env = stack_env(clean_db, epx_sim, **extra_env)
    _, api_key = await _seed_merchant(env)
    server = ServerProcess(env)
    await asyncio.to_thread(server.start)
    try:
        yield Api(server, api_key, env)
    finally:
        server.kill()


@pytest.fixture
async def api(clean_db, epx_sim):
    async with serve_api(clean_db, epx_sim) as served:
        yield served


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def token(epx_sim) -> str:
    return await mint_token(epx_sim.server_post_url)
