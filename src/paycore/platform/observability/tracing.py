"""OpenTelemetry tracing (P2-7, MON-4, LOG-3): provider, W3C propagation, span helpers.

* One `TracerProvider` per process with `ParentBased(TraceIdRatioBased(PAYCORE_TRACE_SAMPLE_RATIO))`.
  No exporter by default; `PAYCORE_OTLP_ENDPOINT` adds a batching OTLP/HTTP exporter. Every
  exporting processor sits behind `MaskingSpanProcessor`, which masks sensitive attribute values
  (SEC-1) before a span leaves the process.
* Unsampled requests still get a valid trace context, so `trace_id` on log lines and the
  `traceparent` sent to the gateway and stored on outbox rows always exist.
* Span names: `<METHOD> <route template>` (HTTP server), `payment.<operation>`, `db.<query name>`,
  `gateway.<operation>`, `job.<name>` and `webhook.deliver` (new roots linked to their cause).
* DB spans are created only under a recording parent: a query outside a sampled trace costs one
  `is_recording()` check.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from paycore.platform.context import traceparent_var
from paycore.platform.observability import metrics as m
from paycore.platform.observability.logging import mask_value

if TYPE_CHECKING:
    from paycore.gateway.port import CallTrace, GatewayRequest, GatewayResult, TransactionProcessor

__all__ = [
    "MaskingSpanProcessor",
    "TracedTransactionProcessor",
    "configure_tracing",
    "current_span",
    "current_trace_ids",
    "current_traceparent",
    "db_span",
    "end_db_span",
    "extract_context",
    "finish_server_span",
    "format_traceparent",
    "job_span",
    "mask_span",
    "parse_traceparent",
    "server_span",
    "set_error",
    "shutdown_tracing",
    "span",
    "start_linked_root",
    "start_server_span",
    "traceparent_headers",
    "tracer",
]

TRACER_NAME: Final = "paycore"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_INVALID: Final = trace.INVALID_SPAN


class MaskingSpanProcessor(SpanProcessor):
    """Masks sensitive attribute and event values (SEC-1), then hands the span to `delegate`."""

    def __init__(self, delegate: SpanProcessor) -> None:
        self.delegate = delegate

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        self.delegate.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.delegate.on_end(mask_span(span))

    def shutdown(self) -> None:
        self.delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.delegate.force_flush(timeout_millis)


def _mask_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        # the key's last dotted part decides: `http.request.header.authorization` → authorization
        masked = mask_value(key.rsplit(".", 1)[-1], value)
        if isinstance(masked, list):
            masked = tuple(masked)
        out[key] = masked
    return out


def mask_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` whose attribute values (and those of its events) are masked."""
    events: Sequence[Event] = tuple(
        Event(e.name, _mask_attributes(e.attributes), e.timestamp) for e in span.events
    )
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_mask_attributes(span.attributes),
        events=events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _State:
    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()


_state = _State()


def configure_tracing(
    sample_ratio: float = 0.1,
    otlp_endpoint: str | None = None,
    *,
    exporter: SpanExporter | None = None,
    service_name: str = "paycore",
    batch: bool | None = None,
) -> TracerProvider:
    """Install this process's provider (replacing an earlier one, which is shut down).

    `exporter` (tests: `InMemorySpanExporter`) is used as is, synchronously unless `batch`;
    otherwise an OTLP/HTTP exporter is added when `otlp_endpoint` is set, and none at all when not.
    """
    shutdown_tracing()
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        resource=Resource.create({"service.name": service_name}),
    )
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint)
        batch = True if batch is None else batch
    if exporter is not None:
        inner: SpanProcessor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(MaskingSpanProcessor(inner))
    _state.provider = provider
    _state.tracer = provider.get_tracer(TRACER_NAME)
    return provider


def shutdown_tracing(timeout: float = 5.0) -> None:
    """Flush and stop the provider (shutdown phase 6). Safe to call twice."""
    provider, _state.provider = _state.provider, None
    _state.tracer = trace.NoOpTracer()
    if provider is not None:
        with contextlib.suppress(Exception):
            provider.force_flush(int(timeout * 1000))
        with contextlib.suppress(Exception):
            provider.shutdown()


def tracer() -> trace.Tracer:
    return _state.tracer


# --- propagation ---------------------------------------------------------------------------------
def format_traceparent(ctx: trace.SpanContext) -> str | None:
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the active span, else the one in `traceparent_var`."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return format_traceparent(ctx)
    return traceparent_var.get()


def traceparent_headers() -> Mapping[str, str]:
    """`headers_factory` of the gateway client: the W3C `traceparent` of the active span."""
    value = current_traceparent()
    return {"traceparent": value} if value else {}


def current_span() -> trace.Span:
    return trace.get_current_span()


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, for log lines."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def extract_context(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context | None:
    """A parent context from W3C headers; None when absent or malformed."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def parse_traceparent(traceparent: str | None) -> trace.SpanContext | None:
    ctx = extract_context(traceparent)
    if ctx is None:
        return None
    return trace.get_current_span(ctx).get_span_context()


# --- spans ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[trace.Span]:
    """A child span of the active one, made current for the block. An exception that answers the
    client with a 4xx (a `status` below 500: validation, decline, idempotent replay) is noted as
    `paycore.error`; anything else is recorded as an exception with ERROR status."""
    with _state.tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=dict(attributes) if attributes else None,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            if current.is_recording():
                status = getattr(exc, "status", None)
                if isinstance(status, int) and status < 500:
                    current.set_attribute("paycore.error", str(getattr(exc, "code", type(exc).__name__)))
                else:
                    current.record_exception(exc)
                    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextlib.contextmanager
def server_span(
    name: str,
    traceparent: str | None,
    attributes: Mapping[str, Any] | None = None,
    tracestate: str | None = None,
) -> Iterator[trace.Span]:
    """The HTTP server span: a child of the caller's `traceparent` when valid, else a new root.
    `traceparent_var` holds its traceparent for the block."""
    parent = extract_context(traceparent, tracestate)
    with _state.tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=dict(attributes) if attributes else None,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        token = traceparent_var.set(format_traceparent(current.get_span_context()))
        try:
            yield current
        finally:
            traceparent_var.reset(token)


def start_server_span(
    name: str,
    traceparent: str | None,
    attributes: Mapping[str, Any] | None = None,
    tracestate: str | None = None,
) -> tuple[trace.Span, tuple[Any, Any]]:
    """`server_span` without a `with` block (the HTTP envelope's shape): returns the span and the
    tokens `finish_server_span` needs. The span is current until then."""
    current = _state.tracer.start_span(
        name,
        context=extract_context(traceparent, tracestate),
        kind=SpanKind.SERVER,
        attributes=dict(attributes) if attributes else None,
    )
    ctx_token = otel_context.attach(trace.set_span_in_context(current))
    var_token = traceparent_var.set(format_traceparent(current.get_span_context()))
    return current, (ctx_token, var_token)


def finish_server_span(current: trace.Span, tokens: tuple[Any, Any], status: int, route: str) -> None:
    ctx_token, var_token = tokens
    traceparent_var.reset(var_token)
    otel_context.detach(ctx_token)
    if current.is_recording():
        current.set_attribute("http.route", route)
        if status:
            current.set_attribute("http.response.status_code", status)
        if status >= 500 or status == 0:
            current.set_status(Status(StatusCode.ERROR, "cancelled" if status == 0 else str(status)))
    current.end()


def db_span(query_name: str, tier: str) -> trace.Span:
    """A started leaf span `db.<query_name>` for one statement, or the invalid span when the
    active span does not record (then this costs one `is_recording()` call)."""
    if not trace.get_current_span().is_recording():
        return _INVALID
    return _state.tracer.start_span(
        "db." + query_name,
        kind=SpanKind.CLIENT,
        attributes={"db.system": "postgresql", "db.operation.name": query_name, "paycore.db.tier": tier},
    )


def end_db_span(current: trace.Span, status: str) -> None:
    if current.is_recording():
        if status != "success":
            current.set_status(Status(StatusCode.ERROR, status))
        current.end()


def start_linked_root(
    name: str,
    traceparent: str | None,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
) -> trace.Span:
    """A started new root span linked to the span `traceparent` names (not made current)."""
    origin = parse_traceparent(traceparent)
    attrs = dict(attributes) if attributes else {}
    links = []
    if origin is not None:
        links.append(Link(origin))
        attrs["paycore.origin_trace_id"] = f"{origin.trace_id:032x}"
    return _state.tracer.start_span(
        name, context=otel_context.Context(), kind=kind, attributes=attrs, links=links
    )


@contextlib.contextmanager
def job_span(
    name: str,
    traceparent: str | None,
    attributes: Mapping[str, Any] | None = None,
    *,
    link: bool = True,
) -> Iterator[trace.Span]:
    """The span of one job run, current for the block.

    `link=True` (default, e.g. `webhook.deliver`): a new root **linked** to the span that caused
    the job. `link=False`: a child in the cause's own trace. `traceparent_var` holds the job span's
    traceparent, so anything the job enqueues carries it on."""
    if link:
        current = start_linked_root(name, traceparent, attributes)
        cm = trace.use_span(current, end_on_exit=True)
    else:
        cm = _state.tracer.start_as_current_span(
            name,
            context=extract_context(traceparent) or otel_context.Context(),
            kind=SpanKind.CONSUMER,
            attributes=dict(attributes) if attributes else None,
        )
    with cm as active:
        # tracing off (no provider): keep propagating the cause's traceparent unchanged
        own = format_traceparent(active.get_span_context())
        token = traceparent_var.set(own or traceparent or traceparent_var.get())
        try:
            yield active
        finally:
            traceparent_var.reset(token)


def set_error(current: trace.Span, description: str) -> None:
    if current.is_recording():
        current.set_status(Status(StatusCode.ERROR, description))


# --- the gateway port, traced ---------------------------------------------------------------------
class TracedTransactionProcessor:
    """Wraps a `TransactionProcessor`: one `gateway.<operation>` span per call, and the call's
    duration in `gateway_call_duration_seconds{operation,outcome,category}`. The wrapped client's
    `headers_factory` (`traceparent_headers`) sends this span as the W3C parent."""

    def __init__(self, inner: TransactionProcessor) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def process(
        self,
        request: GatewayRequest,
        *,
        trace: CallTrace | None = None,
        **extra: Any,
    ) -> GatewayResult:
        operation = request.operation.value
        with _state.tracer.start_as_current_span(
            f"gateway.{operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "paycore.gateway.operation": operation,
                "paycore.gateway.tran_type": request.tran_type,
                "paycore.gateway.tran_nbr": request.tran_nbr,
            },
        ) as current:
            started = time.perf_counter()
            result = await self.inner.process(request, trace=trace, **extra)
            category = result.response.category.value if result.response is not None else "none"
            m.GATEWAY_CALLS.labels(operation, result.outcome, category).observe(time.perf_counter() - started)
            if current.is_recording():
                current.set_attribute("paycore.gateway.outcome", result.outcome)
                current.set_attribute("paycore.gateway.attempts", result.attempts)
                if result.response is not None:
                    current.set_attribute("paycore.gateway.auth_resp", result.response.auth_resp)
                    current.set_attribute("paycore.gateway.category", result.response.category.value)
                if result.error_code:
                    current.set_attribute("paycore.gateway.error_code", result.error_code)
                if result.outcome in ("failed", "unknown"):
                    current.set_status(Status(StatusCode.ERROR, result.error_code or result.outcome))
            return result
