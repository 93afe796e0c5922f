"""The payment-method routes over HTTP (the whole app in process: middleware, auth, DI, errors),
paying with a saved method through `/v1/payments`, and the OpenAPI description of every route."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.payment_methods.helpers import ACCOUNT, ROUTING, mint_financial_bric

pytestmark = pytest.mark.integration

BASE = "/v1/customers/cus_42/payment_methods"


def bank(account: str = ACCOUNT, **extra):
    return {
        "type": "ach",
        "account_type": "checking",
        "routing_number": ROUTING,
        "account_number": account,
        "holder": {"first_name": "Ada", "last_name": "Lovelace"},
        **extra,
    }


async def test_card_lifecycle_over_http(api, epx_sim):
    token = await mint_financial_bric(epx_sim.server_post_url)
    body = {
        "type": "card",
        "token": token,
        "billing": {"zip_code": "12345"},
        "exp_month": 12,
        "exp_year": 2031,
    }
    # Idempotency-Key is required
    resp = await api.client.post(BASE, json=body, headers=api.headers())
    assert resp.status_code == 400 and resp.json()["code"] == "idempotency_key_missing"
    key = uuid.uuid4().hex
    resp = await api.client.post(BASE, json=body, headers=api.headers(key))
    assert resp.status_code == 201, resp.text
    card = resp.json()
    assert (
        card["object"] == "payment_method" and card["card"]["last4"] == "1111" and card["livemode"] is False
    )
    replay = await api.client.post(BASE, json=body, headers=api.headers(key))
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == card
    pm = card["id"]
    assert (await api.client.get(f"{BASE}/{pm}", headers=api.headers())).json() == card
    resp = await api.client.post(f"{BASE}/{pm}/default", headers=api.headers())
    assert resp.status_code == 200 and resp.json()["is_default"] is True
    resp = await api.client.post(f"{BASE}/{pm}/deactivate", headers=api.headers())
    assert resp.status_code == 200 and resp.json()["status"] == "inactive"
    pay = {"amount": 1234, "currency": "USD", "payment_method_id": pm}
    resp = await api.client.post("/v1/payments", json=pay, headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == 409 and resp.json()["code"] == "payment_method_inactive"
    resp = await api.client.post(f"{BASE}/{pm}/activate", headers=api.headers())
    assert resp.status_code == 200 and resp.json()["status"] == "active"
    resp = await api.client.post("/v1/payments", json=pay, headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == 201, resp.text
    assert resp.json()["payment_method_id"] == pm and resp.json()["customer_id"] == "cus_42"
    listed = (await api.client.get(BASE, headers=api.headers())).json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [pm]
    resp = await api.client.delete(f"{BASE}/{pm}", headers=api.headers())
    assert resp.status_code == 200 and resp.json() == {"id": pm, "object": "payment_method", "deleted": True}
    assert (await api.client.get(f"{BASE}/{pm}", headers=api.headers())).status_code == 404
    assert (await api.client.get(BASE, headers=api.headers())).json()["data"] == []


async def test_bank_account_over_http_never_echoes_the_account_number(api):
    resp = await api.client.post(BASE, json=bank(), headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == 201, resp.text
    assert ACCOUNT not in resp.text
    out = resp.json()
    assert out["verification_status"] == "pending" and out["bank_account"]["last4"] == ACCOUNT[-4:]
    pending = (await api.client.get(f"{BASE}?type=ach&state=pending", headers=api.headers())).json()
    assert [m["id"] for m in pending["data"]] == [out["id"]]
    assert (await api.client.get(f"{BASE}?state=verified", headers=api.headers())).json()["data"] == []
    pay = {"amount": 500, "currency": "USD", "payment_method_id": out["id"]}
    resp = await api.client.post("/v1/payments", json=pay, headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == 409 and resp.json()["code"] == "payment_method_not_verified"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (bank(routing_number="123456789"), 422, "routing_number_invalid"),
        (bank(account="12"), 422, "account_number_invalid"),
        ({"type": "card", "token": "4111111111111111"}, 422, "token_looks_like_card_number"),
        ({"type": "card"}, 422, "validation_failed"),
        ({"type": "paypal", "token": "x"}, 422, "validation_failed"),
        ({**bank(), "cvv": "123"}, 422, "validation_failed"),
        (bank(account_type="brokerage"), 422, "validation_failed"),
    ],
)
async def test_invalid_bodies_have_stable_codes_and_echo_no_numbers(api, body, status, code):
    resp = await api.client.post(BASE, json=body, headers=api.headers(uuid.uuid4().hex))
    assert resp.status_code == status and resp.json()["code"] == code, resp.text
    assert "4111111111111111" not in resp.text and ACCOUNT not in resp.text


async def test_parameters_and_unknown_ids(api):
    assert (await api.client.get(f"{BASE}?state=bogus", headers=api.headers())).json()[
        "code"
    ] == "invalid_parameter"
    assert (await api.client.get(f"{BASE}?type=wire", headers=api.headers())).status_code == 400
    assert (await api.client.get(f"{BASE}?limit=101", headers=api.headers())).status_code == 400
    resp = await api.client.get("/v1/customers/bad%20id/payment_methods", headers=api.headers())
    assert resp.status_code == 400 and resp.json()["param"] == "customer_id"
    for path in (f"{BASE}/not-a-uuid", f"{BASE}/{uuid.uuid4()}"):
        resp = await api.client.get(path, headers=api.headers())
        assert resp.status_code == 404 and resp.json()["code"] == "payment_method_not_found"
    resp = await api.client.post(f"{BASE}/{uuid.uuid4()}/default", headers=api.headers())
    assert resp.status_code == 404
    assert (await api.client.get(BASE)).status_code == 401


async def test_openapi_describes_every_payment_method_route(api):
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        ("/v1/customers/{customer_id}/payment_methods", "post"),
        ("/v1/customers/{customer_id}/payment_methods", "get"),
        ("/v1/customers/{customer_id}/payment_methods/{payment_method_id}", "get"),
        ("/v1/customers/{customer_id}/payment_methods/{payment_method_id}", "delete"),
        ("/v1/customers/{customer_id}/payment_methods/{payment_method_id}/default", "post"),
        ("/v1/customers/{customer_id}/payment_methods/{payment_method_id}/activate", "post"),
        ("/v1/customers/{customer_id}/payment_methods/{payment_method_id}/deactivate", "post"),
    }
    for path, method in expected:
        operation = paths[path][method]
        assert operation["summary"], (path, method)
        assert "404" in operation["responses"], (path, method)
    create = paths["/v1/customers/{customer_id}/payment_methods"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in create["parameters"])
    refs = {
        o["$ref"].rsplit("/", 1)[-1]
        for o in create["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    }
    assert refs == {"SaveCard", "SaveBankAccount"}
    assert "routing_number_invalid" in create["description"]
