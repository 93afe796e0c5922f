"""A8 for service JWTs: a service acting for a merchant draws on that merchant's own limit — the
same bucket as the merchant's API keys, so a second credential does not double the allowance."""

from __future__ import annotations

import math
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.integration


async def test_jwt_and_api_key_share_the_merchants_limit(live_app) -> None:
    live = await live_app(
        merchant_rate_limit_rps=10, merchant_rate_limit_burst=20, rate_limit_storage="memory://"
    )
    directory = live.container.merchants
    merchant = (await directory.authenticate(live.api_key)).merchant
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client = await directory.create_service_client(issuer="billing", name="Billing", public_key_pem=pem)
    await directory.grant(client.id, merchant.id)
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": "billing",
            "merchant_id": str(merchant.id),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 300,
        },
        private,
        algorithm="RS256",
    )
    started = time.perf_counter()
    replies = []
    for _ in range(25):  # interleaved: one bucket drained by both credentials
        replies.append(await live.get("/v1/payments?limit=1", token))
        replies.append(await live.get("/v1/payments?limit=1"))
    refill = math.ceil(10 * (time.perf_counter() - started))
    statuses = [r.status for r in replies]
    assert set(statuses) == {200, 429}
    assert 20 <= statuses.count(200) <= 20 + refill, statuses
    jwt_statuses = statuses[0::2]
    assert 200 in jwt_statuses and 429 in jwt_statuses  # the JWT is limited too, not exempt
    refused = next(r for r in replies[0::2] if r.status == 429)
    assert refused.json()["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
