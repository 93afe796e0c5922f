"""SEC-1: card, ACH and key flows through the whole app with DEBUG logging on: the rendered JSON
stream contains no PAN, BRIC, account or routing number or API key. (`capture_logs` with the
masking processor is covered in tests/unit/observability/test_logging.py.)"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest

from paycore.platform.observability.logging import configure_logging, flush_logs
from tests.support.tokens import DECLINE_CARD, VISA, mint_token

pytestmark = pytest.mark.integration

ACCOUNT = "000123456789"
ROUTING = "021000021"


async def _flows(api: Any, epx_sim: Any) -> list[str]:
    """Sale, refund, decline, a PAN sent by mistake, a bank account, a bad key. Returns the
    secrets that went through."""
    client = api.client
    token = await mint_token(epx_sim.server_post_url)
    declined = await mint_token(epx_sim.server_post_url, pan=DECLINE_CARD)
    sale = await client.post(
        "/v1/payments",
        json={"amount": 2500, "currency": "USD", "token": token, "description": f"card {VISA}"},
        headers=api.headers(uuid.uuid4().hex),
    )
    assert sale.status_code == 201, sale.text
    refund = await client.post(
        f"/v1/payments/{sale.json()['id']}/refunds",
        json={"amount": 500},
        headers=api.headers(uuid.uuid4().hex),
    )
    assert refund.status_code == 201, refund.text
    decline = await client.post(
        "/v1/payments",
        json={"amount": 1000, "currency": "USD", "token": declined},
        headers=api.headers(uuid.uuid4().hex),
    )
    assert decline.status_code == 402
    pan_as_token = await client.post(
        "/v1/payments",
        json={"amount": 1000, "currency": "USD", "token": VISA},
        headers=api.headers(uuid.uuid4().hex),
    )
    assert pan_as_token.status_code in (400, 402, 422, 424)
    bank = await client.post(
        "/v1/customers/cus_sec/payment_methods",
        json={
            "type": "ach",
            "account_type": "checking",
            "routing_number": ROUTING,
            "account_number": ACCOUNT,
            "holder": {"first_name": "Ada", "last_name": "Lovelace"},
            "sec_code": "WEB",
        },
        headers=api.headers(uuid.uuid4().hex),
    )
    assert bank.status_code in (200, 201, 402), bank.text
    unauthorized = await client.get("/v1/payments", headers={"Authorization": "Bearer sk_test_" + "Z" * 32})
    assert unauthorized.status_code == 401
    return [token, declined, VISA, ACCOUNT, api.api_key, "sk_test_" + "Z" * 32]


def _assert_absent(text: str, secrets: list[str]) -> None:
    for secret in [*secrets, ROUTING]:
        assert secret not in text, secret


async def test_no_sensitive_data_in_the_rendered_log_stream(inproc_api: Any, epx_sim: Any) -> None:
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    try:
        secrets = await _flows(inproc_api, epx_sim)
    finally:
        flush_logs()
    text = buffer.getvalue()
    assert text.strip(), "the flows logged nothing at DEBUG"
    for line in text.splitlines():
        json.loads(line)  # every line is one JSON object
    _assert_absent(text, secrets)
