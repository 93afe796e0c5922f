"""Mint gateway tokens in the simulator the way a merchant would get them: a keyed `CCE8` storage
(the sandbox test cards of epx-protocol.md §9). Tests only; paycore itself never sees a PAN."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aiohttp

from paycore.gateway.epx import wire
from paycore.gateway.port import MerchantKey

SANDBOX_KEY = MerchantKey(cust_nbr="9001", merch_nbr="900300", dba_nbr="2", terminal_nbr="77")
VISA = "4111111111111111"
DECLINE_CARD = "4000000000000002"


async def mint_token(
    server_post_url: str, *, pan: str = VISA, cvv: str = "123", merchant: MerchantKey = SANDBOX_KEY
) -> str:
    now = datetime.now(UTC)
    request = wire.for_card_storage(
        merchant=merchant,
        tran_nbr=wire.tran_nbr_for(uuid.uuid4()),
        at=now,
        card=wire.KeyedCard(pan=pan, exp_yymm=f"{(now.year + 3) % 100:02d}12", cvv2=cvv),
        billing=wire.Billing(address="123 Main St", zip_code="12345"),
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server_post_url,
            data=wire.encode(request),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as resp,
    ):
        body = await resp.read()
    parsed = wire.parse_response(body, zero_dollar=True)
    assert parsed.auth_guid, (
        f"the simulator did not store the card: {parsed.auth_resp} {parsed.auth_resp_text}"
    )
    return parsed.auth_guid
