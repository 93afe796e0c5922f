"""Hosted checkout over HTTP: a running `paycore serve` (test environment, demo routes on), the real
PostgreSQL and the simulator. The test client plays the shopper's browser (no JavaScript); the
Chromium flows are in test_hosted_checkout_browser.py."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import pytest

from paycore.bootstrap import build_merchant_directory
from paycore.checkout.api import route_handlers
from paycore.config import load_settings
from paycore.epx_sim.browser_post import parse_form_page
from paycore.gateway.port import MerchantKey
from paycore.platform.db.pool import create_database
from tests.support.stack import ServerProcess, stack_env

pytestmark = pytest.mark.e2e

CALLBACK = "/v1/epx/browser-post/callback"


@dataclass
class DemoStack:
    url: str
    api_key: str
    merchant_id: str
    sim_browser_post_url: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        return headers


async def seed_demo_merchant(env: dict[str, str], base: str, sim_control) -> tuple[str, str]:
    """The `demo` merchant (as `paycore up` seeds it), with its own key and MAC in the simulator."""
    key = MerchantKey(
        cust_nbr="9201",
        merch_nbr=str(secrets.randbelow(9_000_000) + 1_000_000),
        dba_nbr="4",
        terminal_nbr=str(secrets.randbelow(900) + 100),
    )
    mac = "demo-" + secrets.token_hex(12)
    await sim_control.add_merchant(key.cust_nbr, key.merch_nbr, key.dba_nbr, key.terminal_nbr, mac)
    settings = load_settings(env)
    db = await create_database(settings, env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await directory.create_merchant(
            slug="demo",
            name="Demo Merchant",
            environment="sandbox",
            epx=key,
            mac_secret=mac,
            return_urls=(f"{base}/demo/return", f"{base}/demo/decline", "https://shop.example/return"),
        )
        api_key = await directory.create_api_key(merchant.id)
        return str(merchant.id), api_key.secret
    finally:
        await db.pool.close()


@pytest.fixture
async def demo_stack(clean_db, epx_sim, sim_control):
    env = stack_env(clean_db, epx_sim)
    server = ServerProcess(env)
    merchant_id, api_key = await seed_demo_merchant(server.env, server.url, sim_control)
    await asyncio.to_thread(server.start)
    try:
        yield DemoStack(server.url, api_key, merchant_id, epx_sim.browser_post_url)
    finally:
        server.kill()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def create_session(http, stack: DemoStack, key: str | None = None, **body):
    payload = {"mode": "sale", "amount": 1999, "currency": "USD", "return_url": "https://shop.example/return"}
    payload.update(body)
    async with http.post(
        stack.url + "/v1/checkout/sessions", json=payload, headers=stack.headers(key or uuid.uuid4().hex)
    ) as r:
        return r.status, await r.json(content_type=None), r.headers


async def browser_pays(http, stack: DemoStack, form: dict, card: str = "4111111111111111"):
    """POST the form and a card to the simulator, then read EPX's auto-submitting result page."""
    data = {**form["fields"], "ACCOUNT_NBR": card, "EXP_DATE": "3012", "CVV": "123", "ZIP_CODE": "12345"}
    async with http.post(form["action"], data=data) as r:
        assert r.status == 200
        page = await r.text()
    action, _, fields, _ = parse_form_page(page)
    return urljoin(stack.sim_browser_post_url, action), fields


async def test_session_api_and_callback_over_http(demo_stack, http):
    async with http.post(
        demo_stack.url + "/v1/checkout/sessions",
        json={"mode": "sale", "amount": 5, "return_url": "https://shop.example/return"},
        headers=demo_stack.headers(),
    ) as r:
        assert r.status == 400 and (await r.json())["code"] == "idempotency_key_missing"
    status, problem, _ = await create_session(http, demo_stack, return_url="https://evil.example/return")
    assert status == 422 and problem["code"] == "return_url_not_allowed" and problem["param"] == "return_url"

    status, form, _ = await create_session(http, demo_stack, key="same-key")
    assert status == 201 and form["object"] == "checkout_form" and form["fields"]["AMOUNT"] == "19.99"
    assert form["fields"]["REDIRECT_URL"].startswith(demo_stack.url + CALLBACK + "?txn=")
    status, again, headers = await create_session(http, demo_stack, key="same-key")
    assert status == 201 and again == form and headers.get("Idempotent-Replayed") == "true"

    async with http.get(
        f"{demo_stack.url}/v1/checkout/sessions/{form['session_id']}", headers=demo_stack.headers()
    ) as r:
        session = await r.json()
        assert r.status == 200 and session["state"] == "open" and session["payment_status"] == "pending"
    async with http.get(
        f"{demo_stack.url}/v1/checkout/sessions/{uuid.uuid4()}", headers=demo_stack.headers()
    ) as r:
        assert r.status == 404 and (await r.json())["code"] == "checkout_session_not_found"
    async with http.post(
        f"{demo_stack.url}/v1/checkout/sessions/{form['session_id']}/form", headers=demo_stack.headers()
    ) as r:
        fresh = await r.json()
        assert r.status == 200 and fresh["fields"]["TRAN_NBR"] == form["fields"]["TRAN_NBR"]
        assert fresh["fields"]["TAC"] != form["fields"]["TAC"]

    target, fields = await browser_pays(http, demo_stack, fresh)
    async with http.post(target, data=fields, allow_redirects=False) as r:
        assert r.status == 303
        location = r.headers["Location"]
    split = urlsplit(location)
    assert f"{split.scheme}://{split.netloc}{split.path}" == "https://shop.example/return"
    assert dict(parse_qsl(split.query)) == {"payment_id": form["payment_id"], "status": "approved"}
    async with http.post(target, data=fields, allow_redirects=False) as r:  # a replay
        assert r.status == 303 and r.headers["Location"] == location
    async with http.get(target, params=fields, allow_redirects=False) as r:  # the same result as a GET
        assert r.status == 303 and r.headers["Location"] == location
    tampered = [(k, "99.99" if k == "AMOUNT" else v) for k, v in fields]
    async with http.post(target, data=tampered, allow_redirects=False) as r:
        assert r.status == 400 and r.content_type == "text/html"
        assert "could not confirm" in await r.text()
    async with http.get(
        f"{demo_stack.url}/v1/payments/{form['payment_id']}", headers=demo_stack.headers()
    ) as r:
        payment = await r.json()
        assert payment["status"] == "approved" and payment["amount"] == 1999
        assert payment["card"] == {"brand": "visa", "last4": "1111"}

    async with http.get(demo_stack.url + "/openapi.json") as r:
        paths = (await r.json())["paths"]
    for path in (
        "/v1/checkout/sessions",
        "/v1/checkout/sessions/{session_id}",
        "/v1/checkout/sessions/{session_id}/form",
        CALLBACK,
        "/demo/checkout",
    ):
        assert path in paths, path


async def test_demo_page_renders_a_form_posting_to_the_gateway_not_to_paycore(demo_stack, http):
    async with http.get(demo_stack.url + "/demo/checkout?amount=1234") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    action, method, fields, _ = parse_form_page(page)
    assert method == "post" and action == demo_stack.sim_browser_post_url
    names = [name for name, _ in fields]
    assert {"ACCOUNT_NBR", "EXP_DATE", "CVV", "TAC", "TRAN_NBR"} <= set(names)
    assert dict(fields)["AMOUNT"] == "12.34"


async def test_public_callback_is_rate_limited_per_ip(demo_stack, http):
    async def hit() -> tuple[int, str | None]:
        async with http.post(demo_stack.url + CALLBACK, data={"txn": "x"}, allow_redirects=False) as r:
            return r.status, r.headers.get("Retry-After")

    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(hit() for _ in range(60)))
    elapsed = loop.time() - started
    statuses = [status for status, _ in results]
    assert set(statuses) == {400, 429}
    # burst 20, refilled at 10/s while the requests were being served
    assert statuses.count(400) <= 20 + int(elapsed * 10) + 1, (statuses.count(400), elapsed)
    assert all(int(after or 0) >= 1 for status, after in results if status == 429)


def test_demo_routes_exist_only_in_development_and_test():
    from paycore.checkout.api import DemoController

    assert DemoController in route_handlers("development") and DemoController in route_handlers("test")
    assert DemoController not in route_handlers("production")
    assert DemoController not in route_handlers("staging")
