"""P2-7/MON-4: sampler, propagation, linked job roots, masking span processor, cheap DB spans."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paycore.platform.context import traceparent_var
from paycore.platform.observability import tracing
from paycore.platform.observability.logging import configure_logging, flush_logs

pytestmark = pytest.mark.unit

PAN = "4111111111111111"
BRIC = "0A1B2C3D4E5F6G7H8J9K"
SAMPLED_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(1.0, exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def test_about_one_root_in_ten_is_sampled() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(0.1, exporter=exporter)
    try:
        for _ in range(1000):
            with tracing.span("root"):
                pass
        kept = len(exporter.get_finished_spans())
    finally:
        tracing.shutdown_tracing()
    # binomial(1000, 0.1): mean 100, sd ≈ 9.5; ±5 sd
    assert 52 <= kept <= 148, kept


def test_the_callers_sampling_decision_is_followed() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(0.0, exporter=exporter)  # no root of our own would be sampled
    try:
        with tracing.server_span("GET /x", SAMPLED_PARENT) as sampled, tracing.span("child"):
            pass
        with tracing.server_span("GET /x", UNSAMPLED_PARENT) as unsampled:
            assert not unsampled.is_recording()
            # still a valid context to propagate, with the caller's trace id
            assert tracing.current_traceparent().startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        names = [s.name for s in exporter.get_finished_spans()]
    finally:
        tracing.shutdown_tracing()
    assert names == ["child", "GET /x"]
    assert sampled.get_span_context().trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736


def test_malformed_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    for bad in ("garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""):
        with tracing.server_span("GET /x", bad):
            pass
    assert all(s.parent is None for s in spans.get_finished_spans())


def test_traceparent_headers_name_the_active_span(spans: InMemorySpanExporter) -> None:
    assert tracing.traceparent_headers() == {}
    with tracing.span("gateway.sale") as current:
        ctx = current.get_span_context()
        header = tracing.traceparent_headers()["traceparent"]
    assert header.startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    token = traceparent_var.set(SAMPLED_PARENT)
    try:  # outside any span the context variable (e.g. a job's) is used
        assert tracing.traceparent_headers() == {"traceparent": SAMPLED_PARENT}
    finally:
        traceparent_var.reset(token)


def test_server_span_sets_traceparent_var_for_the_block(spans: InMemorySpanExporter) -> None:
    with tracing.server_span("POST /v1/payments", None) as current:
        ctx = current.get_span_context()
        assert traceparent_var.get() == tracing.format_traceparent(ctx)
    assert traceparent_var.get() is None


def test_job_span_is_a_new_root_linked_to_its_cause(spans: InMemorySpanExporter) -> None:
    with tracing.job_span("webhook.deliver", SAMPLED_PARENT, {"paycore.webhook.event_type": "x"}) as job:
        assert traceparent_var.get() == tracing.format_traceparent(job.get_span_context())
    [span] = spans.get_finished_spans()
    assert span.parent is None
    assert span.context.trace_id != 0x4BF92F3577B34DA6A3CE929D0E0E4736
    [link] = span.links
    assert (link.context.trace_id, link.context.span_id) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
    )
    assert span.attributes["paycore.origin_trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_job_span_can_continue_the_causing_trace(spans: InMemorySpanExporter) -> None:
    with tracing.job_span("job.payments.reconcile", SAMPLED_PARENT, link=False):
        pass
    with tracing.job_span("job.jobs.purge", None, link=False):
        pass
    child, root = spans.get_finished_spans()
    assert child.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert child.parent is not None and child.parent.span_id == 0x00F067AA0BA902B7
    assert root.parent is None and not root.links


def test_db_spans_only_under_a_recording_parent(spans: InMemorySpanExporter) -> None:
    orphan = tracing.db_span("payments.get", "simple")
    assert not orphan.is_recording()
    tracing.end_db_span(orphan, "success")
    with tracing.span("payment.sale") as parent:
        db = tracing.db_span("payments.insert", "simple")
        tracing.end_db_span(db, "timeout")
    [db_span, payment] = spans.get_finished_spans()
    assert db_span.name == "db.payments.insert" and payment.name == "payment.sale"
    assert db_span.parent.span_id == parent.get_span_context().span_id
    assert db_span.attributes["paycore.db.tier"] == "simple"
    assert db_span.status.description == "timeout"


def test_exported_spans_are_masked(spans: InMemorySpanExporter) -> None:
    with (
        pytest.raises(ValueError),
        tracing.span(
            "gateway.sale",
            {
                "paycore.card_number": PAN,
                "http.request.header.authorization": "Bearer sk_live_abcdefghijklmnop",
                "paycore.note": f"card {PAN} declined",
                "bric": BRIC,
                "CVV2": "123",
                "paycore.amount": 100,
            },
        ),
    ):
        raise ValueError(f"bad card {PAN}")
    [span] = spans.get_finished_spans()
    text = json.dumps(
        {"attributes": dict(span.attributes), "events": [dict(e.attributes) for e in span.events]}
    )
    assert PAN not in text and BRIC not in text and "sk_live_abcdefghijklmnop" not in text
    assert span.attributes["paycore.card_number"] == "[REDACTED]"
    assert span.attributes["CVV2"] == "[REDACTED]"
    assert span.attributes["paycore.amount"] == 100  # harmless values stay


def test_no_exporter_by_default_and_otlp_when_configured() -> None:
    provider = tracing.configure_tracing(0.1)
    assert provider._active_span_processor._span_processors == ()  # nothing leaves the process
    provider = tracing.configure_tracing(0.1, "http://127.0.0.1:4318")
    try:
        [masking] = provider._active_span_processor._span_processors
        assert isinstance(masking, tracing.MaskingSpanProcessor)
        exporter = masking.delegate.span_exporter  # BatchSpanProcessor → OTLP/HTTP
        assert type(exporter).__name__ == "OTLPSpanExporter"
        assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    finally:
        tracing.shutdown_tracing(timeout=0.1)


def test_shutdown_flushes_batched_spans() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(1.0, exporter=exporter, batch=True)
    with tracing.span("payment.sale"):
        pass
    tracing.shutdown_tracing()
    assert [s.name for s in exporter.get_finished_spans()] == ["payment.sale"]
    with tracing.span("after.shutdown") as span:  # a no-op tracer afterwards
        assert not span.is_recording()


def test_a_log_line_inside_a_span_carries_its_trace_id(spans: InMemorySpanExporter) -> None:
    import structlog

    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    try:
        log = structlog.get_logger("test")
        log.info("outside")
        with tracing.span("payment.sale") as current:
            log.warning("inside")
        ctx = current.get_span_context()
    finally:
        flush_logs()
    outside, inside = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert "trace_id" not in outside
    assert inside["trace_id"] == f"{ctx.trace_id:032x}" and inside["span_id"] == f"{ctx.span_id:016x}"


def test_job_span_without_a_provider_keeps_the_causing_traceparent() -> None:
    tracing.shutdown_tracing()  # e.g. a process that never configured tracing
    with tracing.job_span("job.x", SAMPLED_PARENT, link=False):
        assert traceparent_var.get() == SAMPLED_PARENT
    with tracing.job_span("webhook.deliver", SAMPLED_PARENT):
        assert traceparent_var.get() == SAMPLED_PARENT


def test_client_errors_are_not_span_errors(spans: InMemorySpanExporter) -> None:
    from paycore.kernel import errors
    from paycore.kernel.errors import PaycoreError

    with pytest.raises(PaycoreError), tracing.span("payment.capture"):
        raise PaycoreError(errors.VALIDATION_FAILED, "amount too large")
    with pytest.raises(RuntimeError), tracing.span("payment.sale"):
        raise RuntimeError("boom")
    client, server = spans.get_finished_spans()
    assert (
        client.status.status_code.name == "UNSET"
        and client.attributes["paycore.error"] == "validation_failed"
    )
    assert not client.events
    assert server.status.status_code.name == "ERROR" and server.events[0].name == "exception"
