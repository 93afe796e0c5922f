"""RES-11 `detailed_logging` through the real app: toggled with the admin API, read per request by the
request envelope — exactly one INFO line per request while on, none while off."""

from __future__ import annotations

import io
import json

import pytest

from paycore.platform.observability.logging import configure_logging, flush_logs
from tests.integration.admin.conftest import new_admin_token

pytestmark = pytest.mark.integration


async def test_detailed_logging_toggled_at_run_time(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    try:

        async def get(request_id: str) -> None:
            reply = await app.request("GET", "/admin/v1/flags", admin, **{"X-Request-ID": request_id})
            assert reply.status == 200

        await get("off-1")
        on = await app.request(
            "PUT",
            "/admin/v1/flags/detailed_logging",
            admin,
            json_body={"enabled": True},
            **{"X-Request-ID": "put"},
        )
        assert on.json()["effective"] is True
        await get("on-1")
        await get("on-2")
        missing = await app.request("GET", "/v1/payments/nope", "sk_test_wrong", **{"X-Request-ID": "on-401"})
        assert missing.status == 401
        degraded = await app.request(
            "PUT",
            "/admin/v1/flags/degraded",
            admin,
            json_body={"enabled": True},
            **{"X-Request-ID": "degrade"},
        )
        assert degraded.status == 200
        await get("degraded-1")
        await app.request("DELETE", "/admin/v1/flags/degraded", admin, **{"X-Request-ID": "undegrade"})
        await get("on-3")
        await app.request("DELETE", "/admin/v1/flags/detailed_logging", admin, **{"X-Request-ID": "off"})
        await get("off-2")
    finally:
        flush_logs()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    logged = [line["request_id"] for line in lines if line.get("event") == "request"]
    # the switch is read as a request finishes: the request turning it on is logged, the one
    # turning it off (or degrading) is not
    assert logged == ["put", "on-1", "on-2", "on-401", "undegrade", "on-3"]
    by_id = {line["request_id"]: line for line in lines if line.get("event") == "request"}
    assert by_id["on-1"]["route"] == "/admin/v1/flags" and by_id["on-1"]["status"] == 200
    assert by_id["on-1"]["level"] == "info" and by_id["on-1"]["method"] == "GET"
    assert by_id["on-401"]["status"] == 401
    assert "sk_test_wrong" not in buffer.getvalue() and admin not in buffer.getvalue()
