"""Service-to-service JWTs over HTTP: a running `paycore serve`, a client service registered with
`paycore admin` (a real subprocess, as an operator would), a payment taken with an RS256 token,
tenancy kept (another merchant's payment is a 404), and a `jti` revoked by the CLI refused by the
server within a second (NOTIFY into the serving process)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from paycore.gateway.port import MerchantKey
from tests.e2e.conftest import _seed_merchant
from tests.support.stack import ServerProcess, stack_env
from tests.support.tokens import mint_token

pytestmark = pytest.mark.e2e

GLOBEX_KEY = MerchantKey(
    cust_nbr="9402", merch_nbr="940301", dba_nbr="3", terminal_nbr="91"
)  # this file only


def admin(env: dict[str, str], *args: str) -> dict | list:
    out = subprocess.run(
        [sys.executable, "-m", "paycore.cli", "admin", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
async def stack(clean_db, epx_sim, tmp_path):
    env = stack_env(clean_db, epx_sim)
    shop_id, _ = await _seed_merchant(env)
    globex = await asyncio.to_thread(
        admin, env, "create-merchant", "--slug", "globex", "--name", "Globex", "--cust-nbr", "9402",
        "--merch-nbr", "940301", "--dba-nbr", "3", "--terminal-nbr", "91",
    )  # fmt: skip
    globex_key = (await asyncio.to_thread(admin, env, "create-api-key", "--merchant", "globex"))["api_key"]
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem_file = tmp_path / "billing.pub.pem"
    pem_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    client = await asyncio.to_thread(
        admin, env, "create-service-client", "--issuer", "billing", "--name", "Billing",
        "--public-key-file", str(pem_file),
    )  # fmt: skip
    await asyncio.to_thread(admin, env, "grant", "--client", "billing", "--merchant", "shop")
    server = ServerProcess(env)
    await asyncio.to_thread(server.start)
    yield {
        "env": env,
        "url": server.url,
        "shop_id": shop_id,
        "globex_id": globex["id"],
        "globex_key": globex_key,
        "private": private,
        "client_id": client["id"],
    }
    server.kill()


def service_token(private, merchant_id: str, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": "billing", "merchant_id": merchant_id, "jti": jti or uuid.uuid4().hex}
    return jwt.encode({**claims, "iat": now, "exp": now + 300}, private, algorithm="RS256")


def bearer(credential: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}", "Content-Type": "application/json", **extra}


async def test_a_service_takes_a_payment_with_a_jwt_and_sees_only_its_merchant(
    stack, http, epx_sim, sim_control
):
    url = stack["url"]
    token = service_token(stack["private"], stack["shop_id"])
    card = await mint_token(epx_sim.server_post_url)
    async with http.post(
        url + "/v1/payments",
        json={"amount": 1500, "currency": "USD", "token": card},
        headers=bearer(token, **{"Idempotency-Key": uuid.uuid4().hex}),
    ) as r:
        payment = await r.json()
        assert r.status == 201, payment
    assert payment["status"] == "approved" and payment["livemode"] is False
    async with http.get(f"{url}/v1/payments/{payment['id']}", headers=bearer(token)) as r:
        assert r.status == 200 and (await r.json())["id"] == payment["id"]

    # another merchant's payment, taken with that merchant's own API key (its EPX key made known
    # to the simulator)
    await sim_control.add_merchant("9402", "940301", "3", "91", mac="globex-mac")
    globex_card = await mint_token(epx_sim.server_post_url, merchant=GLOBEX_KEY)
    async with http.post(
        url + "/v1/payments",
        json={"amount": 700, "currency": "USD", "token": globex_card},
        headers=bearer(stack["globex_key"], **{"Idempotency-Key": uuid.uuid4().hex}),
    ) as r:
        theirs = await r.json()
        assert r.status == 201, theirs
    async with http.get(f"{url}/v1/payments/{theirs['id']}", headers=bearer(token)) as r:
        assert r.status == 404 and (await r.json())["code"] == "payment_not_found"
    async with http.get(url + "/v1/payments", headers=bearer(token)) as r:
        assert [p["id"] for p in (await r.json())["data"]] == [payment["id"]]

    # a token for a merchant the client holds no grant for
    async with http.get(
        url + "/v1/payments", headers=bearer(service_token(stack["private"], stack["globex_id"]))
    ) as r:
        problem = await r.json()
        assert r.status == 403 and problem["code"] == "forbidden"


async def test_bad_tokens_are_401_and_a_revoked_jti_is_refused_within_a_second(stack, http):
    url = stack["url"]
    async with http.get(url + "/v1/payments") as r:
        problem = await r.json()
        assert r.status == 401 and "service JWT" in problem["detail"]
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with http.get(url + "/v1/payments", headers=bearer(service_token(stranger, stack["shop_id"]))) as r:
        problem = await r.json()
        assert r.status == 401 and problem["code"] == "unauthenticated"
        assert problem["detail"] == "The token is not valid" and r.headers["WWW-Authenticate"] == "Bearer"

    token = service_token(stack["private"], stack["shop_id"], jti="leaked-token")
    async with http.get(url + "/v1/payments", headers=bearer(token)) as r:
        assert r.status == 200  # the server has cached the client, the grant and the revocation list
    expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    revoked = await asyncio.to_thread(
        admin,
        stack["env"],
        "revoke-jti",
        "--client",
        "billing",
        "--jti",
        "leaked-token",
        "--expires-at",
        expires,
    )
    assert revoked["revoked"] is True
    status = None
    for _ in range(100):
        async with http.get(url + "/v1/payments", headers=bearer(token)) as r:
            status = r.status
        if status == 401:
            break
        await asyncio.sleep(0.01)
    assert status == 401
    fresh = service_token(stack["private"], stack["shop_id"])
    async with http.get(url + "/v1/payments", headers=bearer(fresh)) as r:
        assert r.status == 200


async def test_the_openapi_security_scheme_names_both_credentials(stack, http):
    async with http.get(stack["url"] + "/openapi.json") as r:
        spec = await r.json()
    description = spec["components"]["securitySchemes"]["apiKey"]["description"]
    assert "sk_test_" in description and "RS256" in description and "JWT" in description
