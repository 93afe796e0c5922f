"""LOG-2 end to end (the whole app in process, the real HTTP receiver): the X-Request-ID of the API
request whose transaction wrote an event is stored with it and sent as `X-Request-ID` — next to
the signature headers — on every delivery attempt; an event written outside a request has none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook

from paycore.app import create_app
from paycore.platform.db import Query, Tier
from tests.integration.webhooks.conftest import WEBHOOK_ENV, add_event
from tests.support.merchants import seed_merchant
from tests.support.stack import stack_settings
from tests.support.tokens import mint_token

pytestmark = pytest.mark.integration

STORED = Query("test.outbox_request_id", Tier.SIMPLE, "SELECT request_id FROM outbox_events WHERE id = $1")


class App:
    def __init__(self, client: Any, app: Any, api_key: str) -> None:
        self.client = client
        self.app = app
        self.api_key = api_key

    def headers(self, request_id: str | None = None, key: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if request_id:
            headers["X-Request-ID"] = request_id
        if key:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        return headers


@pytest.fixture
async def worker(make_container: Any) -> Any:
    """A container of its own in the test's loop, as the worker process runs dispatch/delivery
    (the app under the test client runs in another loop)."""
    return await make_container()


@pytest.fixture
async def app(clean_db: str, epx_sim: Any) -> AsyncIterator[App]:
    settings = stack_settings(clean_db, epx_sim, **WEBHOOK_ENV)
    _, secret = await seed_merchant(settings, clean_db)
    litestar_app = create_app(settings)
    async with AsyncTestClient(app=litestar_app) as client:
        yield App(client, litestar_app, secret)


async def _deliver_until(worker: Any, receiver: Any, count: int) -> None:
    for _ in range(50):
        await worker.webhooks.dispatch()
        await worker.webhooks.deliver_due()
        if len(receiver.at("/hook")) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"receiver got {len(receiver.at('/hook'))} requests, expected {count}")


async def test_deliveries_carry_the_originating_request_id(app, worker, receiver, epx_sim):
    resp = await app.client.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url("/hook"), "enabled_events": ["*"]},
        headers=app.headers("setup-1"),
    )
    assert resp.status_code == 201, resp.text
    secret = resp.json()["secret"]
    receiver.behave("/hook", statuses=[500])  # the first attempt fails: the retry carries it too

    token = await mint_token(epx_sim.server_post_url)
    body = {"amount": 1234, "currency": "USD", "token": token}
    resp = await app.client.post("/v1/payments", json=body, headers=app.headers("req-pay.1_A", key=True))
    assert resp.status_code == 201, resp.text
    assert resp.headers["x-request-id"] == "req-pay.1_A"

    await _deliver_until(worker, receiver, 2)  # the 500, then the retry on the 300 ms schedule
    first, retry = receiver.at("/hook")
    for got in (first, retry):
        event = Webhook(secret).verify(got.body, got.headers)  # the signature still verifies
        assert event["type"] == "payment.succeeded"
        assert got.headers["X-Request-ID"] == "req-pay.1_A"
        assert got.headers["webhook-id"] == event["id"]
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert await worker.db.fetchval(STORED, uuid.UUID(event["id"])) == "req-pay.1_A"

    # a generated id (no X-Request-ID sent) is stored and forwarded the same way
    resp = await app.client.post("/v1/payments", json=body, headers=app.headers(key=True))
    assert resp.status_code == 201
    generated = resp.headers["x-request-id"]
    await _deliver_until(worker, receiver, 3)
    assert receiver.at("/hook")[2].headers["X-Request-ID"] == generated


async def test_a_payment_method_event_carries_the_request_of_its_change(app, worker, receiver, epx_sim):
    resp = await app.client.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url("/hook"), "enabled_events": ["payment_method.deactivated"]},
        headers=app.headers(),
    )
    assert resp.status_code == 201
    token = await mint_token(epx_sim.server_post_url)
    base = "/v1/customers/cus_7/payment_methods"
    card = {"type": "card", "token": token, "exp_month": 12, "exp_year": 2031}
    resp = await app.client.post(base, json=card, headers=app.headers("pm-create", key=True))
    assert resp.status_code == 201, resp.text
    resp = await app.client.post(f"{base}/{resp.json()['id']}/deactivate", headers=app.headers("pm-off-9"))
    assert resp.status_code == 200
    await _deliver_until(worker, receiver, 1)
    [got] = receiver.at("/hook")
    assert got.headers["X-Request-ID"] == "pm-off-9"


async def test_an_event_written_outside_a_request_has_no_request_id(app, worker, receiver):
    resp = await app.client.post(
        "/v1/webhook_endpoints",
        json={"url": receiver.url("/hook"), "enabled_events": ["*"]},
        headers=app.headers(),
    )
    assert resp.status_code == 201
    principal = await worker.merchants.authenticate(app.api_key)
    await add_event(worker, principal)  # as a job writes it: no request
    await _deliver_until(worker, receiver, 1)
    [got] = receiver.at("/hook")
    assert "x-request-id" not in {k.lower() for k in got.headers}
    assert got.headers["webhook-signature"].startswith("v1,")
