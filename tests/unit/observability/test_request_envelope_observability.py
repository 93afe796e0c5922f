"""LOG-1 request logging and the HTTP server span of the request envelope (raw ASGI apps)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from paycore.middleware import RequestEnvelope
from paycore.platform.observability import tracing
from paycore.platform.observability.logging import configure_logging, flush_logs
from paycore.platform.shutdown import Lifecycle
from tests.integration.resilience.asgi import call

pytestmark = pytest.mark.unit


def _app(status: int, *, path_template: str = "/v1/things/{thing_id}") -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def with_route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["path_template"] = path_template  # what Litestar's router sets
        await envelope(app)(scope, receive, send)

    return with_route


def envelope(app: Any, slow: float = 10.0) -> RequestEnvelope:
    lifecycle = Lifecycle()
    lifecycle.ready = True
    return RequestEnvelope(
        app, lifecycle=lifecycle, request_timeout=5.0, max_body_bytes=1024, slow_request=slow, max_queries=10
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(1.0, exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


async def test_request_log_policy(spans: InMemorySpanExporter) -> None:
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    try:
        await call(_app(200), "GET", "/v1/things/123")
        await call(_app(404), "GET", "/v1/things/124")
        await call(_app(503), "POST", "/v1/things/456", headers={"X-Request-ID": "req-fail-1"})
    finally:
        flush_logs()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["request_failed"]
    [failed] = lines
    assert failed["level"] == "error" and failed["status"] == 503
    assert failed["route"] == "/v1/things/{thing_id}" and failed["request_id"] == "req-fail-1"
    assert "duration_ms" in failed and "trace_id" in failed  # logged inside the server span
    # one server span per request, named by the route template, status recorded
    names = [(s.name, s.attributes["http.response.status_code"]) for s in spans.get_finished_spans()]
    assert names == [
        ("GET /v1/things/{thing_id}", 200),
        ("GET /v1/things/{thing_id}", 404),
        ("POST /v1/things/{thing_id}", 503),
    ]
    failed_span = spans.get_finished_spans()[2]
    assert failed_span.status.status_code.name == "ERROR"
    assert failed_span.attributes["paycore.request_id"] == "req-fail-1"
    assert f"{failed_span.context.trace_id:032x}" == failed["trace_id"]


async def test_every_request_counts_in_the_sli_with_its_code(spans: InMemorySpanExporter) -> None:
    labels = {"route": "/v1/things/{thing_id}", "method": "DELETE", "code": "424"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0
    for _ in range(3):
        await call(_app(424), "DELETE", "/v1/things/1")
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 3


async def test_health_endpoints_are_not_traced(spans: InMemorySpanExporter) -> None:
    await call(_app(200, path_template="/healthz"), "GET", "/healthz")
    await call(_app(200, path_template="/metrics"), "GET", "/metrics")
    assert spans.get_finished_spans() == ()
