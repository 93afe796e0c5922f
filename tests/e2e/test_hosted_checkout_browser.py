"""Hosted checkout in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run)
driven by Playwright, against a running `paycore serve`, PostgreSQL and the simulator.

The shopper opens paycore's demo checkout page, types a test card into it and pays: the browser
posts the card straight to the simulator's Browser Post endpoint, follows EPX's auto-submitting
result form to paycore's callback, and is redirected to the demo return (or decline) page. The
payment is then read back through the API. Playwright never downloads a browser here: it launches
the system Chromium by path.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.e2e.test_hosted_checkout import DemoStack, demo_stack, http  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = os.environ.get("PAYCORE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VISA = "4111111111111111"
DECLINE_CARD = "4000000000000002"


def expiry() -> str:
    return f"{(datetime.now(UTC).year + 3) % 100:02d}12"  # YYMM


@pytest.fixture
async def chromium():
    playwright_api = pytest.importorskip("playwright.async_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def type_card(page, card: str) -> None:
    await page.fill("#card-number", card)
    await page.fill("#card-expiry", expiry())
    await page.fill("#card-cvv", "123")
    await page.fill("#billing-zip", "12345")


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


async def get_payment(http, stack: DemoStack, payment_id: str) -> dict:  # noqa: F811
    async with http.get(f"{stack.url}/v1/payments/{payment_id}", headers=stack.headers()) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_shopper_pays_with_a_test_card_and_lands_on_the_return_page(
    chromium,
    demo_stack,  # noqa: F811
    http,  # noqa: F811
):
    page = await chromium.new_page()
    card_requests: list[str] = []
    page.on(
        "request",
        lambda req: (
            card_requests.append(req.url) if req.method == "POST" and VISA in (req.post_data or "") else None
        ),
    )
    await page.goto(f"{demo_stack.url}/demo/checkout?amount=2500")
    assert "Pay $25.00" in await page.inner_text("#pay")
    await type_card(page, VISA)
    await page.click("#pay")
    await page.wait_for_url(f"{demo_stack.url}/demo/return?**", timeout=15_000)
    assert await page.inner_text("#result-title") == "Payment approved"
    assert await page.inner_text("#payment-status") == "approved"
    params = query_of(page.url)
    assert params["status"] == "approved"
    payment = await get_payment(http, demo_stack, params["payment_id"])
    assert payment["status"] == "approved" and payment["amount"] == 2500
    assert payment["card"]["last4"] == "1111"
    # the card number went to the gateway only, never to paycore
    assert card_requests and all(url.startswith(demo_stack.sim_browser_post_url) for url in card_requests)
    await page.close()


async def test_declined_card_lands_on_the_decline_page(chromium, demo_stack, http):  # noqa: F811
    page = await chromium.new_page()
    await page.goto(f"{demo_stack.url}/demo/checkout?amount=1500")
    await type_card(page, DECLINE_CARD)
    await page.click("#pay")
    await page.wait_for_url(f"{demo_stack.url}/demo/decline?**", timeout=15_000)
    assert await page.inner_text("#payment-status") == "declined"
    assert await page.inner_text("#result-title") == "Payment declined"
    params = query_of(page.url)
    assert params["status"] == "declined"
    assert (await get_payment(http, demo_stack, params["payment_id"]))["status"] == "declined"
    await page.close()


async def test_card_entered_on_the_gateways_hosted_page(chromium, demo_stack, http):  # noqa: F811
    """The second Browser Post mode: the form goes without card fields and EPX shows its own page."""
    page = await chromium.new_page()
    await page.goto(f"{demo_stack.url}/demo/checkout?amount=700&entry=hosted")
    assert await page.locator("#card-number").count() == 0
    await page.click("#pay")
    await page.wait_for_selector("#epx-card-form", timeout=15_000)
    assert page.url.startswith(demo_stack.sim_browser_post_url)
    await page.fill("input[name=ACCOUNT_NBR]", VISA)
    await page.fill("input[name=EXP_DATE]", expiry())
    await page.fill("input[name=CVV]", "123")
    await page.click("#epx-submit")
    await page.wait_for_url(f"{demo_stack.url}/demo/return?**", timeout=15_000)
    params = query_of(page.url)
    assert (await get_payment(http, demo_stack, params["payment_id"]))["status"] == "approved"
    await page.close()
