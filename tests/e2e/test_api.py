"""The HTTP API end to end: a running `paycore serve` against PostgreSQL and the simulator."""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytestmark = pytest.mark.e2e


async def post(http, api, path, body, key=None, **headers):
    async with http.post(
        api.url + path, json=body, headers=api.headers(key or uuid.uuid4().hex, **headers)
    ) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_take_a_payment_and_replay_it(api, http, token):
    key = uuid.uuid4().hex
    body = {"amount": 2500, "currency": "USD", "token": token}
    status, payment, headers = await post(http, api, "/v1/payments", body, key)
    assert status == 201 and payment["status"] == "approved"
    assert "x-request-id" in {k.lower() for k in headers}
    status2, again, headers2 = await post(http, api, "/v1/payments", body, key)
    assert status2 == 201 and again == payment and headers2.get("Idempotent-Replayed") == "true"
    status3, problem, _ = await post(http, api, "/v1/payments", {**body, "amount": 2501}, key)
    assert status3 == 422 and problem["code"] == "idempotency_key_reused"
    async with http.get(f"{api.url}/v1/payments/{payment['id']}", headers=api.headers()) as r:
        assert r.status == 200 and (await r.json())["id"] == payment["id"]


async def test_problem_details_for_bad_input(api, http, token):
    async with http.post(api.url + "/v1/payments", data=b'{"amount": ', headers=api.headers("k1")) as r:
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert (await r.json())["code"] == "malformed_request"
    status, problem, _ = await post(
        http, api, "/v1/payments", {"amount": -5, "currency": "USD", "token": token}
    )
    assert status == 422 and problem["code"] == "validation_failed" and problem["param"] == "amount"
    status, problem, _ = await post(
        http, api, "/v1/payments", {"amount": 10.5, "currency": "USD", "token": token}
    )
    assert status == 422
    async with http.post(
        api.url + "/v1/payments", json={"amount": 1, "currency": "USD", "token": token}, headers=api.headers()
    ) as r:
        assert r.status == 400 and (await r.json())["code"] == "idempotency_key_missing"
    for field in ("type", "title", "status", "detail", "code", "request_id"):
        assert field in problem


async def test_authentication_and_tenancy(api, http, token):
    async with http.get(api.url + "/v1/payments") as r:
        assert r.status == 401 and (await r.json())["code"] == "unauthenticated"
    async with http.get(
        api.url + "/v1/payments", headers={"Authorization": "Bearer sk_test_" + "x" * 32}
    ) as r:
        assert r.status == 401
    async with http.get(f"{api.url}/v1/payments/{uuid.uuid4()}", headers=api.headers()) as r:
        assert r.status == 404 and (await r.json())["code"] == "payment_not_found"
    async with http.get(f"{api.url}/v1/payments/not-a-uuid", headers=api.headers()) as r:
        assert r.status == 404


async def test_body_limit(api, http):
    big = b'{"amount": 1, "currency": "USD", "token": "' + b"A" * (2 * 1024 * 1024) + b'"}'
    async with http.post(api.url + "/v1/payments", data=big, headers=api.headers("big")) as r:
        assert r.status == 413 and (await r.json())["code"] == "body_too_large"


async def test_concurrent_refunds_over_http_never_over_refund(api, http, token):
    _, sale, _ = await post(http, api, "/v1/payments", {"amount": 1000, "currency": "USD", "token": token})
    path = f"/v1/payments/{sale['id']}/refunds"
    results = await asyncio.gather(*(post(http, api, path, {"amount": 150}) for _ in range(12)))
    statuses = [s for s, _, _ in results]
    assert statuses.count(201) == 6, statuses
    assert set(statuses) <= {201, 422}
    async with http.get(f"{api.url}/v1/payments/{sale['id']}", headers=api.headers()) as r:
        final = await r.json()
    assert final["amount_refunded"] == 900 and final["amount_refundable"] == 100


async def test_health_metrics_and_openapi(api, http, token):
    async with http.get(api.url + "/healthz") as r:
        assert r.status == 200 and (await r.json()) == {"status": "alive"}
    async with http.get(api.url + "/readyz") as r:
        body = await r.json()
        assert r.status == 200 and body["checks"]["database"] == "ok"
    await post(http, api, "/v1/payments", {"amount": 1234, "currency": "USD", "token": token})
    async with http.get(api.url + "/metrics") as r:
        text = await r.text()
    assert (
        'payment_transactions_total{merchant="other",payment_type="card",status="approved",'
        'transaction_type="sale"}' in text
    )
    assert 'http_requests_total{code="201",method="POST",route="/v1/payments"}' in text
    assert "db_pool_size" in text and "circuit_breaker_state" in text
    async with http.get(api.url + "/openapi.json") as r:
        spec = await r.json()
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    for route in (
        "/v1/payments",
        "/v1/payments/{payment_id}",
        "/v1/payments/{payment_id}/capture",
        "/v1/payments/{payment_id}/refunds",
        "/v1/payments/{payment_id}/void",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert route in paths, route
    headers = [p["name"] for p in paths["/v1/payments"]["post"]["parameters"] if p["in"] == "header"]
    assert "Idempotency-Key" in headers
    responses = paths["/v1/payments"]["post"]["responses"]
    for code in ("201", "202", "400", "401", "402", "409", "422", "424", "503"):
        assert code in responses, code
    async with http.get(api.url + "/docs") as r:
        assert r.status == 200 and "text/html" in r.content_type


async def test_batch_get_over_http(api, http, token):
    status, sale, _ = await post(
        http, api, "/v1/payments", {"amount": 1300, "currency": "USD", "token": token}
    )
    assert status == 201
    missing = str(uuid.uuid4())
    async with http.post(
        api.url + "/v1/payments/batch-get", json={"ids": [sale["id"], missing]}, headers=api.headers()
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert body["object"] == "batch" and body["not_found"] == [missing]
    assert body["found"][sale["id"]]["amount"] == 1300 and body["found"][sale["id"]]["status"] == "approved"
    for bad in ({"ids": []}, {"ids": ["not-a-uuid"]}, {"ids": [missing] * 2, "extra": 1}):
        async with http.post(api.url + "/v1/payments/batch-get", json=bad, headers=api.headers()) as r:
            assert r.status in (400, 422) and r.content_type == "application/problem+json"
    many = {"ids": [str(uuid.uuid4()) for _ in range(101)]}
    async with http.post(api.url + "/v1/payments/batch-get", json=many, headers=api.headers()) as r:
        assert r.status == 422 and (await r.json())["param"] == "ids"
