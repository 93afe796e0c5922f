"""Admin credentials are separate from merchant credentials, and every admin call is audited."""

from __future__ import annotations

import pytest

from tests.integration.admin.conftest import new_admin_token, new_merchant_key

pytestmark = pytest.mark.integration


async def test_admin_routes_need_an_admin_token(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    _, merchant_key = await new_merchant_key(app)

    missing = await app.request("GET", "/admin/v1/flags")
    assert missing.status == 401 and missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "admin_token_invalid"
    assert missing.json()["request_id"]

    unknown = await app.request("GET", "/admin/v1/flags", "ak_" + "x" * 40)
    assert unknown.status == 401 and unknown.json()["code"] == "admin_token_invalid"

    malformed = await app.request("GET", "/admin/v1/flags", "not-a-token")
    assert malformed.status == 401

    as_merchant = await app.request(
        "PUT", "/admin/v1/flags/webhooks", merchant_key, json_body={"enabled": False}
    )
    assert as_merchant.status == 403 and as_merchant.json()["code"] == "admin_credentials_required"
    assert app.container.flags is not None and app.container.flags.is_on("webhooks")  # nothing changed

    ok = await app.request("GET", "/admin/v1/flags", admin)
    assert ok.status == 200 and {f["name"] for f in ok.json()["data"]} >= {"webhooks", "cb", "degraded"}


async def test_an_admin_token_is_not_a_merchant_credential(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    reply = await app.request("GET", "/v1/payments", admin)
    assert reply.status == 401 and reply.json()["code"] == "unauthenticated"


async def test_revoked_admin_token_is_refused_at_once(admin_stack):
    app = await admin_stack.start()
    token_id, admin = await new_admin_token(app)
    assert (await app.request("GET", "/admin/v1/breakers", admin)).status == 200
    assert app.container.admin is not None
    assert await app.container.admin.tokens.revoke_token(token_id)
    assert (await app.request("GET", "/admin/v1/breakers", admin)).status == 401
    [row] = await admin_stack.sql("SELECT revoked_at, last_used_at, token_hash FROM admin_tokens")
    assert row["revoked_at"] is not None and row["last_used_at"] is not None
    assert admin.encode() not in bytes(row["token_hash"])  # a keyed hash, never the token


async def test_every_admin_call_is_audited(admin_stack):
    app = await admin_stack.start()
    token_id, admin = await new_admin_token(app, "alice")
    await app.request(
        "PUT", "/admin/v1/flags/webhooks", admin, json_body={"enabled": False}, **{"X-Request-Id": "req-1"}
    )
    await app.request(
        "PUT", "/admin/v1/flags/nope", admin, json_body={"enabled": False}, **{"X-Request-Id": "req-2"}
    )
    await app.request("GET", "/admin/v1/flags", None, **{"X-Request-Id": "req-3"})
    await app.request(
        "PUT", "/admin/v1/flags/webhooks", admin, json_body={"enabled": "yes"}, **{"X-Request-Id": "req-4"}
    )
    rows = {r["request_id"]: r for r in await admin_stack.audit_rows()}

    done = rows["req-1"]
    assert (done["actor"], done["action"], done["object_type"], done["object_id"], done["outcome"]) == (
        "admin:alice",
        "admin.flag.set",
        "feature_flag",
        "webhooks",
        "success",
    )
    assert done["ip"] == "127.0.0.1"
    assert done["details"]["enabled"] is False and done["details"]["admin_token_id"] == str(token_id)
    assert done["details"]["status"] == 200

    unknown_flag = rows["req-2"]
    assert unknown_flag["outcome"] == "failure" and unknown_flag["details"]["status"] == 404

    anonymous = rows["req-3"]
    assert (anonymous["actor"], anonymous["outcome"], anonymous["details"]["status"]) == (
        "anonymous",
        "failure",
        401,
    )

    invalid_body = rows["req-4"]
    assert invalid_body["actor"] == "admin:alice" and invalid_body["outcome"] == "failure"
    assert invalid_body["details"]["status"] == 422  # validation_failed, like every body

    with pytest.raises(Exception, match="append-only"):
        await admin_stack.sql("DELETE FROM audit_log WHERE request_id = 'req-1'")


async def test_admin_routes_have_their_own_rate_limit(admin_stack):
    app = await admin_stack.start(admin_rate_limit_rps=1, admin_rate_limit_burst=3)
    _, admin = await new_admin_token(app)
    statuses = [(await app.request("GET", "/admin/v1/breakers", admin)).status for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    limited = await app.request("GET", "/admin/v1/breakers", admin)
    assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1


async def test_openapi_documents_the_admin_api(admin_stack):
    app = await admin_stack.start()
    spec = (await app.request("GET", "/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    paths = spec["paths"]
    for path in (
        "/admin/v1/flags",
        "/admin/v1/flags/{flag}",
        "/admin/v1/merchants/{merchant_id}/cache",
        "/admin/v1/breakers",
        "/admin/v1/breakers/{name}/reset",
        "/admin/v1/breakers/{name}/open",
        "/admin/v1/diagnostics/tracemalloc/snapshot",
    ):
        for operation in paths[path].values():
            assert operation["tags"] == ["admin"]
            assert operation["security"] == [{"adminToken": []}]
    assert paths["/v1/payments"]["post"].get("security", spec.get("security")) == [{"apiKey": []}]
