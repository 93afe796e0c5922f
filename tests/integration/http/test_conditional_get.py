"""API-9 over HTTP (the whole app in process): merchant GETs carry a strong ETag of the exact body
and `Cache-Control: private, max-age=<PAYCORE_ETAG_MAX_AGE>`; `If-None-Match` → 304 with no body;
a change → 200 with a new tag; POSTs, errors, health and metrics never carry one; gzip and identity
answers share the tag; the OpenAPI document describes the 304."""

from __future__ import annotations

import gzip
import hashlib
import uuid

import pytest

pytestmark = pytest.mark.integration

PM_BASE = "/v1/customers/cus_42/payment_methods"


def _tag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


async def _payment(api, token, *, capture: bool) -> dict:
    body = {"amount": 10_000, "currency": "USD", "token": token, "capture": capture}
    resp = await api.client.post("/v1/payments", json=body, headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == 201, resp.text
    assert "etag" not in resp.headers and "cache-control" not in resp.headers  # a POST never
    return resp.json()  # type: ignore[no-any-return]


async def test_payment_etag_304_and_a_new_tag_after_capture_and_refund(api, token):
    payment = await _payment(api, token, capture=False)
    url = f"/v1/payments/{payment['id']}"
    first = await api.client.get(url, headers=api.headers())
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag == _tag(first.content)  # strong, of the exact bytes sent
    assert first.headers["cache-control"] == "private, max-age=0"
    assert {v.strip().lower() for v in first.headers["vary"].split(",")} >= {
        "authorization",
        "accept-encoding",
    }
    assert first.headers["x-request-id"]

    again = await api.client.get(url, headers={**api.headers(), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["cache-control"] == "private, max-age=0"
    assert "content-type" not in again.headers and again.headers["x-request-id"]

    for condition in (f'"nope", W/{etag}', f'"a", {etag}', "*", f" {etag} "):
        resp = await api.client.get(url, headers={**api.headers(), "If-None-Match": condition})
        assert resp.status_code == 304, condition
    for condition in ('"nope"', f'W/{etag[:-2]}"', "garbage", etag[1:-1]):
        resp = await api.client.get(url, headers={**api.headers(), "If-None-Match": condition})
        assert resp.status_code == 200 and resp.headers["etag"] == etag, condition

    resp = await api.client.post(
        f"{url}/capture", json={"amount": 4_000}, headers=api.headers(uuid.uuid4().hex)
    )
    assert resp.status_code == 201, resp.text
    assert "etag" not in resp.headers
    captured = await api.client.get(url, headers={**api.headers(), "If-None-Match": etag})
    assert captured.status_code == 200 and captured.json()["amount_captured"] == 4_000
    assert captured.headers["etag"] not in (etag, None)
    assert captured.headers["etag"] == _tag(captured.content)

    resp = await api.client.post(
        f"{url}/refunds", json={"amount": 1_000}, headers=api.headers(uuid.uuid4().hex)
    )
    assert resp.status_code == 201, resp.text
    refunded = await api.client.get(url, headers={**api.headers(), "If-None-Match": captured.headers["etag"]})
    assert refunded.status_code == 200 and refunded.headers["etag"] != captured.headers["etag"]


async def test_listing_etag_changes_with_a_new_payment_and_survives_gzip(api, token):
    for _ in range(6):
        await _payment(api, token, capture=True)
    plain = await api.client.get(
        "/v1/payments?limit=20", headers={**api.headers(), "Accept-Encoding": "identity"}
    )
    assert plain.status_code == 200 and len(plain.content) > 1024
    etag = plain.headers["etag"]
    assert etag == _tag(plain.content)
    # the gzip answer carries the tag of the uncompressed representation, and one Vary
    resp = await api.client.get("/v1/payments?limit=20", headers={**api.headers(), "Accept-Encoding": "gzip"})
    assert resp.headers.get("content-encoding") == "gzip"
    assert resp.headers["etag"] == etag
    varies = [v.strip().lower() for v in resp.headers["vary"].split(",")]
    assert sorted(varies) == ["accept-encoding", "authorization"]
    assert resp.content == plain.content or gzip.decompress(resp.content) == plain.content
    not_modified = await api.client.get(
        "/v1/payments?limit=20", headers={**api.headers(), "Accept-Encoding": "gzip", "If-None-Match": etag}
    )
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert "content-encoding" not in not_modified.headers and not_modified.headers["etag"] == etag
    assert "accept-encoding" in not_modified.headers["vary"].lower()

    await _payment(api, token, capture=True)
    changed = await api.client.get("/v1/payments?limit=20", headers={**api.headers(), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_payment_method_deactivation_changes_the_tag(api, token):
    body = {"type": "card", "token": token, "exp_month": 12, "exp_year": 2031}
    resp = await api.client.post(PM_BASE, json=body, headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == 201, resp.text
    url = f"{PM_BASE}/{resp.json()['id']}"
    first = await api.client.get(url, headers=api.headers())
    listing = await api.client.get(PM_BASE, headers=api.headers())
    etag, list_etag = first.headers["etag"], listing.headers["etag"]
    assert (await api.client.get(url, headers={**api.headers(), "If-None-Match": etag})).status_code == 304
    resp = await api.client.post(f"{url}/deactivate", headers=api.headers())
    assert resp.status_code == 200 and "etag" not in resp.headers
    after = await api.client.get(url, headers={**api.headers(), "If-None-Match": etag})
    assert after.status_code == 200 and after.json()["status"] == "inactive" and after.headers["etag"] != etag
    after_list = await api.client.get(PM_BASE, headers={**api.headers(), "If-None-Match": list_etag})
    assert after_list.status_code == 200 and after_list.headers["etag"] != list_etag


async def test_only_successful_merchant_gets_carry_a_tag(api):
    wildcard = {**api.headers(), "If-None-Match": "*"}
    missing = await api.client.get(f"/v1/payments/{uuid.uuid4()}", headers=wildcard)
    assert missing.status_code == 404 and "etag" not in missing.headers  # errors: never 304
    unauthenticated = await api.client.get("/v1/payments", headers={"If-None-Match": "*"})
    assert unauthenticated.status_code == 401 and "etag" not in unauthenticated.headers
    for path in ("/healthz", "/metrics", "/openapi.json"):
        resp = await api.client.get(path, headers={"If-None-Match": "*"})
        assert resp.status_code in (200, 503) and "etag" not in resp.headers, path
    assert "etag" in (await api.client.get("/v1/webhook_endpoints", headers=api.headers())).headers
    assert "etag" in (await api.client.get("/v1/events", headers=api.headers())).headers
    assert "etag" in (await api.client.get("/v1/subscriptions", headers=api.headers())).headers


async def test_openapi_describes_the_304(api):
    schema = (await api.client.get("/openapi.json")).json()
    get_payment = schema["paths"]["/v1/payments/{payment_id}"]["get"]
    assert "304" in get_payment["responses"]
    assert "ETag" in get_payment["responses"]["200"]["headers"]
    assert any(p["name"] == "If-None-Match" and p["in"] == "header" for p in get_payment["parameters"])
    assert "304" not in schema["paths"]["/v1/payments"]["post"]["responses"]
    assert "304" not in schema["paths"]["/healthz"]["get"]["responses"]
