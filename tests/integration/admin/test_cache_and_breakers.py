"""P2-1: one merchant evicted from the credential caches of every instance; CRITICAL-3: breakers
listed, forced open and reset through the admin API, in every instance."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.admin.conftest import eventually, new_admin_token, new_merchant_key

pytestmark = pytest.mark.integration


async def test_evicting_a_merchant_makes_every_instance_reload_it(admin_stack):
    a = await admin_stack.start()
    b = await admin_stack.start()
    _, admin = await new_admin_token(a)
    merchant_id, key = await new_merchant_key(a)
    assert (await a.request("GET", "/v1/payments", key)).status == 200
    assert (await b.request("GET", "/v1/payments", key)).status == 200  # both cached the credentials

    grants = b.container.merchants.service_grants
    client, other_merchant = uuid.uuid4(), uuid.uuid4()
    grants.put((client, merchant_id), True)  # a service client's cached grant for this merchant
    grants.put((client, other_merchant), True)
    await admin_stack.sql("UPDATE merchants SET status = 'suspended' WHERE id = $1", merchant_id)
    assert (await a.request("GET", "/v1/payments", key)).status == 200  # stale: served from the cache
    assert (await b.request("GET", "/v1/payments", key)).status == 200

    evicted = await a.request("DELETE", f"/admin/v1/merchants/{merchant_id}/cache", admin)
    assert evicted.status == 200
    assert evicted.json()["merchant_id"] == str(merchant_id) and evicted.json()["principals_evicted"] == 1
    reply = await a.request("GET", "/v1/payments", key)
    assert reply.status == 403 and reply.json()["code"] == "forbidden"

    await eventually(lambda: len(b.container.merchants.principals) == 0, timeout=2.0)
    assert (await b.request("GET", "/v1/payments", key)).status == 403
    assert grants.get((client, merchant_id)) is None and grants.get((client, other_merchant)) is True

    [row] = [r for r in await admin_stack.audit_rows() if r["action"] == "admin.merchant_cache.evict"]
    assert (
        row["merchant_id"] == merchant_id
        and row["object_id"] == str(merchant_id)
        and row["outcome"] == "success"
    )

    bad = await a.request("DELETE", "/admin/v1/merchants/not-a-uuid/cache", admin)
    assert bad.status in (400, 404)


async def test_breakers_listed_forced_open_and_reset_everywhere(admin_stack, token):
    a = await admin_stack.start()
    b = await admin_stack.start()
    _, admin = await new_admin_token(a)
    _, key = await new_merchant_key(a)

    listed = await a.request("GET", "/admin/v1/breakers", admin)
    assert listed.status == 200
    assert [br["name"] for br in listed.json()["data"]] == [
        "gateway_bric_storage",
        "gateway_key_exchange",
        "gateway_server_post",
        "reporting_api",
    ]
    assert {br["state"] for br in listed.json()["data"]} == {"closed"}

    opened = await a.request("POST", "/admin/v1/breakers/gateway_server_post/open", admin)
    assert opened.status == 200
    assert opened.json()["breaker"]["state"] == "open" and opened.json()["breaker"]["forced"] == "open"
    server_post_b = b.container.breakers["gateway_server_post"]
    await eventually(lambda: server_post_b.forced is not None, timeout=2.0)

    headers = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"amount": 1234, "currency": "USD", "token": token}
    paid = await b.request("POST", "/v1/payments", key, json_body=body, **headers)
    assert paid.status == 424 and paid.json()["code"] == "gateway_unavailable"  # nothing sent to EPX

    reset = await b.request("POST", "/admin/v1/breakers/gateway_server_post/reset", admin)
    assert reset.json()["breaker"]["state"] == "closed" and reset.json()["breaker"]["forced"] is None
    await eventually(lambda: a.container.breakers["gateway_server_post"].forced is None, timeout=2.0)
    again = await a.request(
        "POST",
        "/v1/payments",
        key,
        json_body={**body, "amount": 1235},
        **{"Idempotency-Key": uuid.uuid4().hex},
    )
    assert again.status == 201

    unknown = await a.request("POST", "/admin/v1/breakers/mainframe/open", admin)
    assert unknown.status == 404 and unknown.json()["code"] == "circuit_breaker_not_found"
