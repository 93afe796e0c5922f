"""A minimal EPX client for the simulator's integration tests (paycore's own client is not used)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import aiohttp

from paycore.epx_sim.wire import decode_response

KEY = {"CUST_NBR": "9001", "MERCH_NBR": "900300", "DBA_NBR": "2", "TERMINAL_NBR": "77"}
VISA = {"ACCOUNT_NBR": "4111111111111111", "EXP_DATE": "3012", "CVV2": "123", "CARD_ENT_METH": "E"}
ACH = {
    "ACCOUNT_NBR": "1234567890",
    "ROUTING_NBR": "021000021",
    "FIRST_NAME": "Ada",
    "LAST_NAME": "Lovelace",
    "CARD_ENT_METH": "X",
    "STD_ENTRY_CLASS": "WEB",
    "INDUSTRY_TYPE": "E",
}
_numbers = itertools.count(random.SystemRandom().randrange(1_000_000_000, 8_000_000_000, 100_000))


def next_tran_nbr() -> int:
    return next(_numbers)


def form(tran_type: str, amount: str | None, tran_nbr: int | None = None, **fields: str) -> dict[str, str]:
    f = {**KEY, "TRAN_TYPE": tran_type, "BATCH_ID": "20260302", "TRAN_NBR": str(tran_nbr or next_tran_nbr())}
    if amount is not None:
        f["AMOUNT"] = amount
    f.update(fields)
    return f


async def post(
    session: aiohttp.ClientSession, url: str, fields: dict[str, str], *, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    async with session.post(url, data=fields, headers=headers) as resp:
        text = await resp.text()
        if resp.status != 200:
            return resp.status, {"_body": text}
        return resp.status, decode_response(text)


async def get_json(session: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(content_type=None)
