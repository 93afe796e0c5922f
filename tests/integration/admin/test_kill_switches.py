"""RES-11: kill switches hot-toggled through the admin API, stored, and propagated by NOTIFY to
every instance; the consumers read the effective value at use time; the gauge follows."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.integration.admin.conftest import eventually, new_admin_token

pytestmark = pytest.mark.integration


def gauge(flag: str) -> float | None:
    return REGISTRY.get_sample_value("feature_flag_enabled", {"flag": flag})


def flag(reply, name: str) -> dict:
    return next(f for f in reply.json()["data"] if f["name"] == name)


async def test_override_and_clear_a_flag(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    before = await app.request("GET", "/admin/v1/flags", admin)
    assert flag(before, "webhooks") == {
        "name": "webhooks",
        "configured": True,
        "override": None,
        "effective": True,
    }
    assert gauge("webhooks") == 1

    off = await app.request("PUT", "/admin/v1/flags/webhooks", admin, json_body={"enabled": False})
    assert off.status == 200
    assert off.json() == {"name": "webhooks", "configured": True, "override": False, "effective": False}
    assert app.container.webhooks.enabled is False  # the consumer reads the switch, not Settings
    assert gauge("webhooks") == 0
    [stored] = await admin_stack.sql("SELECT flag, enabled, updated_by FROM feature_flag_overrides")
    assert tuple(stored) == ("webhooks", False, "admin:ops")

    cleared = await app.request("DELETE", "/admin/v1/flags/webhooks", admin)
    assert (
        cleared.status == 200 and cleared.json()["override"] is None and cleared.json()["effective"] is True
    )
    assert app.container.webhooks.enabled is True and gauge("webhooks") == 1
    assert await admin_stack.sql("SELECT * FROM feature_flag_overrides") == []

    unknown = await app.request("PUT", "/admin/v1/flags/turbo", admin, json_body={"enabled": True})
    assert unknown.status == 404 and unknown.json()["code"] == "feature_flag_not_found"


async def test_a_toggle_reaches_the_other_instance(admin_stack):
    a = await admin_stack.start()
    b = await admin_stack.start()
    _, admin = await new_admin_token(a)
    assert b.container.flags is not None and b.container.flags.is_on("pm_cache")

    assert (
        await a.request("PUT", "/admin/v1/flags/pm_cache", admin, json_body={"enabled": False})
    ).status == 200
    await eventually(lambda: not b.container.payment_methods.methods.enabled, timeout=2.0)
    assert not b.container.payment_methods.lists.enabled
    listed = await b.request("GET", "/admin/v1/flags", admin)
    assert flag(listed, "pm_cache") == {
        "name": "pm_cache",
        "configured": True,
        "override": False,
        "effective": False,
    }

    assert (await b.request("DELETE", "/admin/v1/flags/pm_cache", admin)).status == 200
    await eventually(lambda: a.container.payment_methods.methods.enabled, timeout=2.0)


async def test_the_breaker_kill_switch_turns_every_breaker_into_a_pass_through(admin_stack):
    a = await admin_stack.start()
    b = await admin_stack.start()
    _, admin = await new_admin_token(a)
    await a.request("PUT", "/admin/v1/flags/cb", admin, json_body={"enabled": False})
    await eventually(lambda: not any(br.enabled for br in b.container.breakers), timeout=2.0)
    b.container.breakers["gateway_server_post"].force_open()
    b.container.breakers["gateway_server_post"].acquire().release()  # no CircuitOpenError: pass-through


async def test_degraded_turns_three_switches_off(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    reply = await app.request("PUT", "/admin/v1/flags/degraded", admin, json_body={"enabled": True})
    assert reply.json()["effective"] is True
    listed = await app.request("GET", "/admin/v1/flags", admin)
    for name in ("webhooks", "merchant_reporting", "detailed_logging"):
        assert flag(listed, name)["effective"] is False and flag(listed, name)["override"] is None
        assert gauge(name) == 0
    assert flag(listed, "cb")["effective"] is True and gauge("cb") == 1
    assert app.container.webhooks.enabled is False
    # an explicit override of a degraded switch stays off while degraded
    on = await app.request("PUT", "/admin/v1/flags/webhooks", admin, json_body={"enabled": True})
    assert on.json() == {"name": "webhooks", "configured": True, "override": True, "effective": False}
    await app.request("DELETE", "/admin/v1/flags/degraded", admin)
    assert app.container.webhooks.enabled is True and gauge("webhooks") == 1


async def test_stored_overrides_apply_before_an_instance_serves(admin_stack):
    await admin_stack.start()  # migrations applied, tables exist
    await admin_stack.sql(
        "INSERT INTO feature_flag_overrides (flag, enabled, updated_by) VALUES "
        "('compression', false, 'test'), ('merchant_cache', false, 'test'), "
        "('no_such_flag', true, 'a newer release')"
    )
    late = await admin_stack.start()
    assert late.container.flags is not None
    assert not late.container.flags.is_on("compression")
    directory = late.container.merchants
    assert not directory.principals.enabled and not directory.merchants.enabled
    assert not directory.service_grants.enabled and not directory.service_clients.enabled


async def test_the_rate_limit_switch_is_read_per_request(admin_stack):
    app = await admin_stack.start(admin_rate_limit_rps=1, admin_rate_limit_burst=2)
    _, admin = await new_admin_token(app)
    assert (
        await app.request("PUT", "/admin/v1/flags/rate_limit", admin, json_body={"enabled": False})
    ).status == 200
    statuses = [(await app.request("GET", "/admin/v1/breakers", admin)).status for _ in range(6)]
    assert statuses == [200] * 6  # the limiter is off: burst 2 no longer applies
    assert (await app.request("DELETE", "/admin/v1/flags/rate_limit", admin)).status == 200
    statuses = [(await app.request("GET", "/admin/v1/breakers", admin)).status for _ in range(4)]
    assert 429 in statuses


async def test_the_compression_switch_is_read_per_request(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    big = "/openapi.json"
    assert (await app.request("GET", big, **{"Accept-Encoding": "gzip"})).headers.get(
        "content-encoding"
    ) == "gzip"
    await app.request("PUT", "/admin/v1/flags/compression", admin, json_body={"enabled": False})
    assert "content-encoding" not in (await app.request("GET", big, **{"Accept-Encoding": "gzip"})).headers
    await app.request("DELETE", "/admin/v1/flags/compression", admin)
    assert (await app.request("GET", big, **{"Accept-Encoding": "gzip"})).headers.get(
        "content-encoding"
    ) == "gzip"
