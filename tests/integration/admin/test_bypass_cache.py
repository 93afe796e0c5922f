"""`X-Bypass-Cache: true` (roadmap §2.4): honoured only with an admin token — the admin API's
merchant read goes to the database and refreshes the cache — and ignored for merchant credentials
(an API key or a service JWT), which keep being answered from the caches."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from tests.integration.admin.conftest import new_admin_token, new_merchant_key

pytestmark = pytest.mark.integration

BYPASS = {"X-Bypass-Cache": "true"}


def hits(cache: str) -> float:
    return REGISTRY.get_sample_value("cache_hits_total", {"cache": cache}) or 0.0


async def test_an_admin_read_bypasses_the_merchant_cache_only_when_asked(admin_stack):
    a = await admin_stack.start()
    _, admin = await new_admin_token(a)
    merchant_id, _ = await new_merchant_key(a)
    path = f"/admin/v1/merchants/{merchant_id}"

    first = await a.request("GET", path, admin)
    assert first.status == 200 and first.json()["source"] == "loaded"
    assert "mac" not in first.json() and "epx" not in first.json()
    await admin_stack.sql("UPDATE merchants SET name = 'Renamed' WHERE id = $1", merchant_id)
    cached = await a.request("GET", path, admin)
    assert (cached.json()["source"], cached.json()["name"]) == ("cache", "Shop")  # not re-read

    fresh = await a.request("GET", path, admin, **BYPASS)
    assert fresh.status == 200 and (fresh.json()["source"], fresh.json()["name"]) == ("database", "Renamed")
    after = await a.request("GET", path, admin)  # the bypass refreshed the cache
    assert (after.json()["source"], after.json()["name"]) == ("cache", "Renamed")
    ignored = await a.request("GET", path, admin, **{"X-Bypass-Cache": "yes please"})
    assert ignored.json()["source"] == "cache"

    unknown = await a.request("GET", f"/admin/v1/merchants/{uuid.uuid4()}", admin, **BYPASS)
    assert unknown.status == 404 and unknown.json()["code"] == "merchant_not_found"
    reads = [r for r in await admin_stack.audit_rows() if r["action"] == "admin.merchant.read"]
    assert [bool(r["details"].get("bypass_cache")) for r in reads] == [False, False, True, False, False, True]


async def test_an_api_key_never_bypasses_the_caches(admin_stack):
    a = await admin_stack.start()
    merchant_id, key = await new_merchant_key(a)
    assert (await a.request("GET", "/v1/payments", key)).status == 200  # credentials cached
    await admin_stack.sql("UPDATE merchants SET status = 'suspended' WHERE id = $1", merchant_id)
    before = hits("merchant_credentials")
    reply = await a.request("GET", "/v1/payments", key, **BYPASS)
    assert reply.status == 200  # answered from the cache: the suspension is not seen yet
    assert hits("merchant_credentials") == before + 1
    # and a merchant key cannot reach the admin read, header or not
    refused = await a.request("GET", f"/admin/v1/merchants/{merchant_id}", key, **BYPASS)
    assert refused.status == 403 and refused.json()["code"] == "admin_credentials_required"


async def test_a_service_jwt_never_bypasses_the_caches(admin_stack):
    a = await admin_stack.start()
    merchant_id, _ = await new_merchant_key(a)
    directory = a.container.merchants
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client = await directory.create_service_client(
        issuer="billing-service", name="Billing", public_key_pem=pem
    )
    await directory.grant(client.id, merchant_id)

    def token() -> str:
        now = int(time.time())
        claims = {"iss": "billing-service", "merchant_id": str(merchant_id), "jti": uuid.uuid4().hex}
        return jwt.encode({**claims, "iat": now, "exp": now + 300}, private, algorithm="RS256")

    assert (await a.request("GET", "/v1/payments", token())).status == 200  # merchant cached
    await admin_stack.sql("UPDATE merchants SET status = 'suspended' WHERE id = $1", merchant_id)
    before = hits("merchant")
    reply = await a.request("GET", "/v1/payments", token(), **BYPASS)
    assert reply.status == 200  # the cached merchant, not a fresh read
    assert hits("merchant") == before + 1
