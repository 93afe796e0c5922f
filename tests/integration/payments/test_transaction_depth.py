"""DB-5 (ADR 0011): a write that would make a transaction chain deeper than
`PAYCORE_MAX_TRANSACTION_DEPTH` (10) is refused with 409 `transaction_depth_exceeded` — nothing
written, nothing sent to the gateway, the Idempotency-Key not consumed. Through the whole in-process
app, on the real database and the simulator process.

Real API flows stop at depth 2 (authorization → capture → refund), so the default limit is
reached by giving a real capture a deeper `depth` by SQL (as a chain of ten levels would have);
with the limit lowered to 1 the same refusal comes from API calls alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from paycore.app import create_app
from paycore.bootstrap import build_merchant_directory
from paycore.platform.db.pool import create_database
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY, mint_token

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, client: Any, api_key: str, database_url: str) -> None:
        self.client = client
        self.api_key = api_key
        self.database_url = database_url

    async def post(self, path: str, body: dict[str, Any], key: str | None = None) -> Any:
        return await self.client.post(
            path,
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": key or uuid.uuid4().hex},
        )

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        con = await asyncpg.connect(self.database_url)
        try:
            return await con.fetch(query, *args)
        finally:
            await con.close()


@pytest.fixture
async def make_api(clean_db: str, epx_sim: Any) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    async with AsyncExitStack() as stack:

        async def make(**env: str) -> Api:
            settings = stack_settings(clean_db, epx_sim, **env)
            db = await create_database(settings, clean_db, min_size=1, max_size=2)
            try:
                directory = build_merchant_directory(settings, db)
                merchant = await directory.create_merchant(
                    slug=f"d{uuid.uuid4().hex[:8]}",
                    name="Depth",
                    environment="sandbox",
                    epx=SANDBOX_KEY,
                    mac_secret="test-mac",
                )
                key = await directory.create_api_key(merchant.id)
            finally:
                await db.pool.close()
            client = await stack.enter_async_context(AsyncTestClient(app=create_app(settings)))
            return Api(client, key.secret, clean_db)

        yield make


async def authorize_and_capture(api: Api, token: str) -> tuple[str, str]:
    """A real authorization (depth 0) and a real capture of it (depth 1); their ids."""
    auth = await api.post(
        "/v1/payments", {"amount": 5000, "currency": "USD", "token": token, "capture": False}
    )
    assert auth.status_code == 201, auth.text
    payment_id = auth.json()["id"]
    captured = await api.post(f"/v1/payments/{payment_id}/capture", {"amount": 5000})
    assert captured.status_code == 201, captured.text
    return payment_id, captured.json()["id"]


async def assert_refused(api: Api, sim_control: Any, payment_id: str, depth: int, limit: int) -> None:
    before = await api.sql("SELECT id FROM transactions WHERE group_id = $1", uuid.UUID(payment_id))
    sent_before = len(await sim_control.ledger())
    key = uuid.uuid4().hex
    refused = await api.post(f"/v1/payments/{payment_id}/refunds", {"amount": 100}, key=key)

    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "transaction_depth_exceeded", problem
    assert f"depth {depth} exceeds {limit}" in problem["detail"]
    after = await api.sql("SELECT id FROM transactions WHERE group_id = $1", uuid.UUID(payment_id))
    assert {r["id"] for r in after} == {r["id"] for r in before}, "a refused operation wrote a row"
    assert len(await sim_control.ledger()) == sent_before, "a refused refund was sent"
    assert await api.sql("SELECT 1 FROM idempotency_keys WHERE key = $1", key) == []


async def test_eleventh_level_rejected(make_api, epx_sim, sim_control) -> None:
    api = await make_api()  # the default PAYCORE_MAX_TRANSACTION_DEPTH=10
    token = await mint_token(epx_sim.server_post_url)
    payment_id, capture_id = await authorize_and_capture(api, token)

    # the capture as the ninth level of a chain: a refund of it is the tenth — allowed
    await api.sql("UPDATE transactions SET depth = 9 WHERE id = $1", uuid.UUID(capture_id))
    tenth = await api.post(f"/v1/payments/{payment_id}/refunds", {"amount": 100})
    assert tenth.status_code == 201, tenth.text
    [row] = await api.sql(
        "SELECT depth, parent_id FROM transactions WHERE id = $1", uuid.UUID(tenth.json()["id"])
    )
    assert row["depth"] == 10 and row["parent_id"] == uuid.UUID(capture_id)

    # the capture as the tenth level: a refund of it would be the eleventh — refused
    await api.sql("UPDATE transactions SET depth = 10 WHERE id = $1", uuid.UUID(capture_id))
    await assert_refused(api, sim_control, payment_id, depth=11, limit=10)


async def test_depth_limit_from_settings_refuses_a_real_chain(make_api, epx_sim, sim_control) -> None:
    """PAYCORE_MAX_TRANSACTION_DEPTH=1: authorization → capture is allowed, its refund (2) is not."""
    api = await make_api(PAYCORE_MAX_TRANSACTION_DEPTH="1")
    token = await mint_token(epx_sim.server_post_url)
    payment_id, _ = await authorize_and_capture(api, token)
    await assert_refused(api, sim_control, payment_id, depth=2, limit=1)
