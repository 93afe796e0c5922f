"""Key Exchange + Browser Post round trips, with a test client acting as the shopper's browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web

from paycore.epx_sim.browser_post import parse_form_page
from paycore.epx_sim.engine import redirect_mac
from paycore.epx_sim.model import DEFAULT_MAC
from paycore.epx_sim.wire import decode_response
from tests.integration.epx_sim.client import KEY, next_tran_nbr
from tests.support.sim import SimControl, SimProcess

pytestmark = pytest.mark.integration


class Receiver:
    """paycore's callback endpoint, reduced to recording what the browser delivered."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else {}
        self.calls.append({"method": request.method, "query": dict(request.query), "form": form})
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/cb", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/cb"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def get_tac(
    http: aiohttp.ClientSession, sim: SimProcess, tran_nbr: int, amount: str, group: str, redirect: str
) -> str:
    fields = {"MAC": DEFAULT_MAC, "TRAN_NBR": str(tran_nbr), "AMOUNT": amount, "TRAN_GROUP": group}
    fields["REDIRECT_URL"] = redirect
    async with http.post(sim.key_exchange_url, data=fields) as r:
        assert r.status == 200
        return decode_response(await r.text())["TAC"]


def bp_form(tac: str, tran_nbr: int, amount: str, code: str, **extra: str) -> dict[str, str]:
    return {
        "TAC": tac,
        **KEY,
        "TRAN_NBR": str(tran_nbr),
        "AMOUNT": amount,
        "TRAN_CODE": code,
        "INDUSTRY_TYPE": "E",
        "USER_DATA_1": "txn-1",
        **extra,
    }


async def act_as_browser(
    http: aiohttp.ClientSession, page: str, base: str
) -> tuple[str, list[tuple[str, str]], int]:
    action, method, fields, repeat = parse_form_page(page)
    assert method == "post"
    target = urljoin(base, action)
    for _ in range(repeat):
        async with http.post(target, data=fields) as r:
            assert r.status == 200
    return target, fields, repeat


async def test_hosted_form_then_redirect_round_trip(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    tn = next_tran_nbr()
    redirect = f"{receiver.url}?txn=abc&m=m1"
    tac = await get_tac(http, epx_sim, tn, "25.00", "SALE", redirect)
    async with http.post(
        epx_sim.browser_post_url, data=bp_form(tac, tn, "25.00", "SALE", ZIP_CODE="12345")
    ) as r:
        card_page = await r.text()
    action, _, hidden, _ = parse_form_page(card_page)
    card = dict(hidden)
    card.update({"ACCOUNT_NBR": "4111111111111111", "EXP_DATE": "3012", "CVV": "123"})
    async with http.post(urljoin(epx_sim.browser_post_url, action), data=card) as r:
        redirect_html = await r.text()
    target, _fields, _ = await act_as_browser(http, redirect_html, epx_sim.browser_post_url)
    assert target == redirect
    [call] = receiver.calls
    assert call["query"] == {"txn": "abc", "m": "m1"}
    got = call["form"]
    assert got["AUTH_RESP"] == "00" and got["AUTH_AMOUNT"] == "25.00" and got["TRAN_NBR"] == str(tn)
    assert got["TRAN_GROUP"] == "SALE" and got["USER_DATA_1"] == "txn-1" and got["AUTH_AVS"] == "Z"
    assert got["CUST_NBR"] == "9001" and got["MERCH_NBR"] == "900300" and got["AMOUNT"] == "25.00"
    assert got["MAC"] == redirect_mac(DEFAULT_MAC, {k: v for k, v in got.items() if k != "MAC"})
    [entry] = await sim_control.ledger(tran_nbr=tn, endpoint="browser_post", processed=True)
    assert entry["tran_type"] == "CCE1" and entry["auth_guid"] == got["AUTH_GUID"]

    # the TAC is single use: a second submission is refused with 58
    async with http.post(epx_sim.browser_post_url, data=card) as r:
        _, _, again, _ = parse_form_page(await r.text())
    assert dict(again)["AUTH_RESP"] == "58"


async def test_storage_and_303_mode(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await sim_control.settings(redirect_mode="303")
    tn = next_tran_nbr()
    tac = await get_tac(http, epx_sim, tn, "0.00", "STORAGE", receiver.url + "?txn=s1")
    form = bp_form(tac, tn, "0.00", "STORAGE", ACCOUNT_NBR="5454545454545454", EXP_DATE="3101", CVV="123")
    async with http.post(epx_sim.browser_post_url, data=form, allow_redirects=False) as r:
        assert r.status == 303
        location = r.headers["Location"]
    assert location.startswith(receiver.url + "?txn=s1&")
    async with http.get(location) as r:
        assert r.status == 200
    query = receiver.calls[0]["query"]
    assert query["AUTH_RESP"] == "00" and "AUTH_AMOUNT" not in query and query["TRAN_GROUP"] == "STORAGE"
    assert query["AUTH_MASKED_ACCOUNT_NBR"].endswith("5454") and query["EXP_DATE"] == "3101"


async def test_browser_post_faults(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    card = {"ACCOUNT_NBR": "4111111111111111", "EXP_DATE": "3012", "CVV": "123"}
    # an unrecoverable error page after the payment went through: no redirect at all
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {
            "target": "redirect",
            "match": {"tran_nbr": tn},
            "action": {"type": "bp_error_page", "process": True},
        }
    )
    tac = await get_tac(http, epx_sim, tn, "5.00", "SALE", receiver.url)
    async with http.post(epx_sim.browser_post_url, data=bp_form(tac, tn, "5.00", "SALE", **card)) as r:
        assert "unrecoverable error" in await r.text()
    [entry] = await sim_control.ledger(tran_nbr=tn, endpoint="browser_post")
    assert entry["processed"] is True and entry["fault_action"] == "bp_error_page"

    # a tampered redirect with a bad MAC, delivered twice
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {
            "target": "redirect",
            "match": {"tran_nbr": tn},
            "action": {"type": "bp_tamper", "field": "AMOUNT", "value": "500.00", "mac": "keep"},
        }
    )
    tac = await get_tac(http, epx_sim, tn, "5.00", "SALE", receiver.url)
    async with http.post(epx_sim.browser_post_url, data=bp_form(tac, tn, "5.00", "SALE", **card)) as r:
        _, _, fields, _ = parse_form_page(await r.text())
    got = dict(fields)
    assert got["AMOUNT"] == "500.00" and got["AUTH_AMOUNT"] == "5.00"
    assert got["MAC"] != redirect_mac(DEFAULT_MAC, {k: v for k, v in got.items() if k != "MAC"})

    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"target": "redirect", "match": {"tran_nbr": tn}, "action": {"type": "bp_duplicate", "repeat": 2}}
    )
    tac = await get_tac(http, epx_sim, tn, "5.00", "SALE", receiver.url)
    async with http.post(epx_sim.browser_post_url, data=bp_form(tac, tn, "5.00", "SALE", **card)) as r:
        assert r.headers["X-Sim-Redirect-Repeat"] == "2"
        page = await r.text()
    receiver.calls.clear()
    await act_as_browser(http, page, epx_sim.browser_post_url)
    assert len(receiver.calls) == 2 and receiver.calls[0]["form"] == receiver.calls[1]["form"]
    assert [r["tran_nbr"] for r in await sim_control.redirects(tran_nbr=tn)] == [tn]


async def test_decline_goes_to_the_decline_url_and_bp_140(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    tn = next_tran_nbr()
    tac = await get_tac(http, epx_sim, tn, "1.05", "SALE", receiver.url)
    card = {"ACCOUNT_NBR": "4111111111111111", "EXP_DATE": "3012", "CVV": "123"}
    form = bp_form(tac, tn, "1.05", "SALE", REDIRECT_URL_DECLINE=receiver.url + "?declined=1", **card)
    async with http.post(epx_sim.browser_post_url, data=form) as r:
        action, _, fields, _ = parse_form_page(await r.text())
    assert action.endswith("?declined=1") and dict(fields)["AUTH_RESP"] == "05"
    tn = next_tran_nbr()
    tac = await get_tac(http, epx_sim, tn, "2.00", "SALE", receiver.url)
    form = bp_form(tac, tn, "2.00", "SALE", CARD_NBR="4111111111111111", **card)
    async with http.post(epx_sim.browser_post_url, data=form) as r:
        _, _, fields, _ = parse_form_page(await r.text())
    assert dict(fields)["BP_RESP_CODE"] == "BP_140" and "CARD_NBR" in dict(fields)["BP_FIELD_ERRORS"]


async def test_key_exchange_errors_and_faults(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    base = {"TRAN_NBR": "1", "AMOUNT": "1.00", "TRAN_GROUP": "SALE", "REDIRECT_URL": "https://x.example/cb"}
    async with http.post(epx_sim.key_exchange_url, data={**base, "MAC": "wrong"}) as r:
        assert r.status == 401
    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "bad_body", "kind": "empty_tac"}, "first": 1}
    )
    async with http.post(epx_sim.key_exchange_url, data={**base, "MAC": DEFAULT_MAC}) as r:
        assert decode_response(await r.text()).get("TAC") == ""
    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "bad_body", "kind": "bare_tac"}, "first": 1}
    )
    async with http.post(epx_sim.key_exchange_url, data={**base, "MAC": DEFAULT_MAC}) as r:
        bare = await r.text()
    assert bare and not bare.startswith("<")
    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "http_error", "status": 500}, "first": 1}
    )
    async with http.post(epx_sim.key_exchange_url, data={**base, "MAC": DEFAULT_MAC}) as r:
        assert r.status == 500
    async with http.post(epx_sim.key_exchange_url, data={**base, "MAC": DEFAULT_MAC}) as r:
        assert r.status == 200
