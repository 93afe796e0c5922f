"""The real paycore app in-process (ASGI lifespan + the harness in `asgi.py`), the worker's
database and the simulator process; settings may be patched per test (`dataclasses.replace`)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from paycore.app import create_app
from paycore.bootstrap import Container
from paycore.gateway.port import MerchantKey
from tests.integration.resilience.asgi import Reply, call, lifespan
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY, mint_token


@dataclass
class LiveApp:
    app: Any
    api_key: str
    database_url: str

    @property
    def container(self) -> Container:
        container: Container = self.app.state.container
        return container

    async def pay(
        self,
        amount: int,
        token: str,
        *,
        headers: dict[str, str] | None = None,
        disconnect_after: float | None = None,
    ) -> Reply:
        return await call(
            self.app,
            "POST",
            "/v1/payments",
            json_body={"amount": amount, "currency": "USD", "token": token},
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Idempotency-Key": uuid.uuid4().hex,
                **(headers or {}),
            },
            disconnect_after=disconnect_after,
        )

    async def another_api_key(self) -> str:
        """A second merchant (its own EPX key, no gateway calls) on the same app; its API key."""
        directory = self.container.merchants
        epx = MerchantKey(cust_nbr="9002", merch_nbr="900301", dba_nbr="2", terminal_nbr="78")
        merchant = await directory.create_merchant(
            slug=f"m{uuid.uuid4().hex[:8]}", name="Other", environment="sandbox", epx=epx
        )
        return (await directory.create_api_key(merchant.id)).secret

    async def get(self, path: str, api_key: str | None = None) -> Reply:
        return await call(
            self.app, "GET", path, headers={"Authorization": f"Bearer {api_key or self.api_key}"}
        )

    async def rows(self, amount: int) -> list[asyncpg.Record]:
        con = await asyncpg.connect(self.database_url)
        try:
            return await con.fetch(
                "SELECT id, status, failure_code, tran_nbr, attempts FROM transactions WHERE amount = $1",
                amount,
            )
        finally:
            await con.close()


@pytest.fixture
async def live_app(clean_db, epx_sim, monkeypatch) -> AsyncIterator[Callable[..., Awaitable[LiveApp]]]:
    """`await live_app(request_timeout=0.2, ...)`: a started app with one merchant and API key."""
    # The app's logging setup caches structlog loggers on first use, which would blind
    # `capture_logs()` in later tests of this worker: keep the test process's logging as it is.
    monkeypatch.setattr("paycore.app.configure_logging", lambda *args, **kwargs: None)
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> LiveApp:
            settings = dataclasses.replace(stack_settings(clean_db, epx_sim), **overrides)
            app = await stack.enter_async_context(lifespan(create_app(settings)))
            directory = app.state.container.merchants
            merchant = await directory.create_merchant(
                slug=f"m{uuid.uuid4().hex[:8]}",
                name="Resilience",
                environment="sandbox",
                epx=SANDBOX_KEY,
                mac_secret="test-mac",
            )
            key = await directory.create_api_key(merchant.id)
            return LiveApp(app, key.secret, clean_db)

        yield start


@pytest.fixture
async def token(epx_sim) -> str:
    return await mint_token(epx_sim.server_post_url)
