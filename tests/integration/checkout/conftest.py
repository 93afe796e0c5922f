"""Fixtures for hosted checkout against the real PostgreSQL and the simulator process.

Each test gets its own EPX merchant (a random 4-part key and MAC registered in the simulator), so
TRAN_NBRs, TACs and MACs never collide with other tests sharing the simulator.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import msgspec
import pytest

from paycore.bootstrap import Container, build_container
from paycore.checkout import schemas
from paycore.checkout.service import CallbackAnswer
from paycore.epx_sim.browser_post import parse_form_page
from paycore.gateway.port import MerchantKey
from paycore.idempotency.model import request_for
from paycore.merchants.model import Merchant, Principal
from tests.support.sim import SimControl, SimProcess
from tests.support.stack import stack_settings

BASE_URL = "http://paycore.test"
RETURN_URL = "https://shop.example/checkout/return"
DECLINE_URL = "https://shop.example/checkout/declined"
VISA = "4111111111111111"
DECLINE_CARD = "4000000000000002"


@pytest.fixture
async def container(clean_db, epx_sim):
    settings = stack_settings(clean_db, epx_sim, PAYCORE_PUBLIC_BASE_URL=BASE_URL)
    built = await build_container(settings)
    yield built
    await built.aclose()


async def new_merchant(container: Container, sim_control: SimControl, slug: str | None = None) -> Merchant:
    """A merchant known to both paycore and the simulator (unique key and MAC)."""
    merch = str(secrets.randbelow(9_000_000) + 1_000_000)
    terminal = str(secrets.randbelow(900) + 100)
    key = MerchantKey(cust_nbr="9101", merch_nbr=merch, dba_nbr="3", terminal_nbr=terminal)
    mac = "mac-" + secrets.token_hex(12)
    await sim_control.add_merchant(key.cust_nbr, key.merch_nbr, key.dba_nbr, key.terminal_nbr, mac)
    return await container.merchants.create_merchant(
        slug=slug or f"shop-{merch}",
        name="Shop",
        environment="sandbox",
        epx=key,
        mac_secret=mac,
        return_urls=(RETURN_URL, DECLINE_URL),
    )


@pytest.fixture
async def merchant(container: Container, sim_control: SimControl) -> Merchant:
    return await new_merchant(container, sim_control)


@pytest.fixture
async def principal(merchant: Merchant) -> Principal:
    return Principal(merchant=merchant, mode="test")


@pytest.fixture
async def browser():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def idem(body: dict[str, Any], key: str | None = None):
    return request_for(key or uuid.uuid4().hex, "POST", "/v1/checkout/sessions", body)


async def create(
    container: Container, principal: Principal, key: str | None = None, **overrides: Any
) -> schemas.CheckoutForm:
    body: dict[str, Any] = {
        "mode": "sale",
        "amount": 1050,
        "currency": "USD",
        "return_url": RETURN_URL,
        "decline_url": DECLINE_URL,
        **overrides,
    }
    cmd = msgspec.convert(body, schemas.CreateCheckoutSession)
    created = await container.checkout.create(principal, cmd, idem(body, key))
    assert created.status == 201
    return msgspec.json.decode(created.body, type=schemas.CheckoutForm)


@dataclass
class Redirect:
    """EPX's result page: where it sends the browser and with what (the shopper's browser's view)."""

    target: str
    fields: list[tuple[str, str]]
    repeat: int

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)

    def field(self, name: str) -> str | None:
        return dict(self.fields).get(name)

    def replace(self, **changes: str) -> Redirect:
        fields = [(k, changes.get(k, v)) for k, v in self.fields]
        return Redirect(self.target, fields, self.repeat)


async def pay(
    browser: aiohttp.ClientSession,
    sim: SimProcess,
    form: schemas.CheckoutForm,
    *,
    card: str = VISA,
    exp: str = "3012",
    cvv: str = "123",
    zip_code: str = "12345",
) -> Redirect:
    """Post the form with a card straight to the simulator's Browser Post URL, as the shopper's
    browser does, and read EPX's redirect page."""
    data = {**form.fields, "ACCOUNT_NBR": card, "EXP_DATE": exp, "CVV": cvv, "ZIP_CODE": zip_code}
    async with browser.post(form.action, data=data, allow_redirects=False) as resp:
        assert resp.status == 200, await resp.text()
        page = await resp.text()
    action, method, fields, repeat = parse_form_page(page)
    assert method == "post" and action, page[:500]
    return Redirect(urljoin(sim.browser_post_url, action), fields, repeat)


async def deliver(container: Container, redirect: Redirect, *, as_get: bool = False) -> CallbackAnswer:
    """The browser delivering EPX's result to paycore's callback (POST form, or GET query)."""
    if as_get:
        return await container.checkout.handle_callback([*redirect.query, *redirect.fields], [])
    return await container.checkout.handle_callback(redirect.query, redirect.fields)


def location_params(answer: CallbackAnswer) -> tuple[str, dict[str, str]]:
    assert answer.status == 303 and answer.location, answer
    split = urlsplit(answer.location)
    return f"{split.scheme}://{split.netloc}{split.path}", dict(parse_qsl(split.query))
