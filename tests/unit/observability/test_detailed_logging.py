"""RES-11 `detailed_logging`: one INFO line per request while the switch is on, none while off; the
switch is read per request, so a toggle applies to the next request."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from paycore.middleware import RequestEnvelope
from paycore.platform.flags import FLAGS, FeatureFlags
from paycore.platform.observability.logging import configure_logging, flush_logs
from paycore.platform.shutdown import Lifecycle
from tests.integration.resilience.asgi import call

pytestmark = pytest.mark.unit


def _app(flags: FeatureFlags, status: int = 200) -> Any:
    lifecycle = Lifecycle()
    lifecycle.ready = True

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b'{"secret": "never-logged"}'})

    envelope = RequestEnvelope(
        inner,
        lifecycle=lifecycle,
        request_timeout=5.0,
        max_body_bytes=1024,
        slow_request=10.0,
        max_queries=10,
        detailed_logging=flags.switch("detailed_logging"),
    )

    async def with_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["path_template"] = "/v1/things/{thing_id}"  # what Litestar's router sets
        await envelope(scope, receive, send)

    return with_route


def _flags(**configured: bool) -> FeatureFlags:
    defaults = {name: name not in {"detailed_logging", "degraded"} for name in FLAGS}  # as configured
    return FeatureFlags({**defaults, **configured})


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_one_info_line_per_request_when_on_none_when_off_toggled_at_run_time() -> None:
    flags = _flags()
    assert not flags.is_on("detailed_logging")  # off by default
    app = _app(flags)
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    try:
        await call(app, "GET", "/v1/things/1?api_key=sk_test_abcdefghijkl", headers={"X-Request-ID": "off-1"})
        flags.apply({"detailed_logging": True})  # what the admin API's override does
        await call(app, "GET", "/v1/things/2?token=abc", headers={"X-Request-ID": "on-1"})
        await call(
            app,
            "POST",
            "/v1/things/3",
            headers={"X-Request-ID": "on-2", "Authorization": "Bearer sk_test_abcdefghijkl"},
            json_body={"card_number": "4111111111111111"},
        )
        flags.apply({})  # override cleared: back to the configured value (off)
        await call(app, "GET", "/v1/things/4", headers={"X-Request-ID": "off-2"})
    finally:
        flush_logs()
    lines = _lines(buffer)
    assert [(line["event"], line["request_id"]) for line in lines] == [
        ("request", "on-1"),
        ("request", "on-2"),
    ]
    first, second = lines
    assert first["level"] == "info"
    assert {k: first[k] for k in ("method", "route", "status")} == {
        "method": "GET",
        "route": "/v1/things/{thing_id}",
        "status": 200,
    }
    assert second["method"] == "POST" and isinstance(second["duration_ms"], float)
    text = buffer.getvalue()
    for leaked in ("token=abc", "api_key", "sk_test_", "4111", "never-logged", "Bearer", "/v1/things/3"):
        assert leaked not in text


async def test_degraded_turns_detailed_logging_off() -> None:
    flags = _flags(detailed_logging=True)
    app = _app(flags)
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    try:
        await call(app, "GET", "/v1/things/1", headers={"X-Request-ID": "on"})
        flags.apply({"degraded": True})
        await call(app, "GET", "/v1/things/2", headers={"X-Request-ID": "degraded"})
    finally:
        flush_logs()
    assert [line["request_id"] for line in _lines(buffer) if line["event"] == "request"] == ["on"]


async def test_probes_and_metrics_are_not_logged() -> None:
    flags = _flags(detailed_logging=True)
    app = _app(flags)
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            await call(app, "GET", path)
    finally:
        flush_logs()
    assert [line for line in _lines(buffer) if line["event"] == "request"] == []


async def test_off_when_no_switch_is_given() -> None:
    lifecycle = Lifecycle()
    envelope = RequestEnvelope(
        None, lifecycle=lifecycle, request_timeout=1.0, max_body_bytes=1, slow_request=1.0, max_queries=1
    )
    assert envelope.detailed_logging() is False
