"""MON-4: one webhook delivery is a new trace root `webhook.deliver`, linked to the payment span
that wrote the event; the job that ran it continues no request's trace."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paycore.idempotency.model import request_for
from paycore.payments import schemas as payment_schemas
from paycore.platform.observability import tracing
from paycore.webhooks import schemas
from tests.integration.webhooks.conftest import container, make_container, principal, receiver
from tests.support.tokens import mint_token

__all__ = ["container", "make_container", "principal", "receiver"]

pytestmark = pytest.mark.integration


async def test_webhook_delivery_span_tree(container, principal, receiver, epx_sim) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(1.0, exporter=exporter)
    try:
        await container.webhooks.create_endpoint(
            principal, schemas.CreateEndpoint(url=receiver.url("/hook"), enabled_events=["payment.succeeded"])
        )
        token = await mint_token(epx_sim.server_post_url)
        body = payment_schemas.CreatePayment(amount=1234, currency="USD", token=token)
        with tracing.span("test.request"):  # stands in for the HTTP server span
            response = await container.payments.create(
                principal,
                body,
                request_for(uuid.uuid4().hex, "POST", "/v1/payments", msgspec.to_builtins(body)),
            )
        assert response.status == 201
        payment_trace = {s.context.trace_id for s in exporter.get_finished_spans()}
        [payment] = [s for s in exporter.get_finished_spans() if s.name == "payment.sale"]
        exporter.clear()

        await container.webhooks.dispatch()
        await container.webhooks.deliver_due()
        assert len(receiver.at("/hook")) == 1

        spans = list(exporter.get_finished_spans())
        [deliver] = [s for s in spans if s.name == "webhook.deliver"]
        assert deliver.parent is None  # a new root ...
        assert deliver.context.trace_id not in payment_trace
        [link] = deliver.links  # ... linked to the span that wrote the outbox event
        assert link.context.trace_id == payment.context.trace_id
        assert link.context.span_id == payment.context.span_id
        assert deliver.attributes["paycore.webhook.event_type"] == "payment.succeeded"
        assert deliver.attributes["paycore.origin_trace_id"] == f"{payment.context.trace_id:032x}"
        # the delivery's own DB statements are its children, in its trace
        children = [s for s in spans if s.parent is not None and s.parent.span_id == deliver.context.span_id]
        assert children and all(s.name.startswith("db.") for s in children)
        assert {s.context.trace_id for s in children} == {deliver.context.trace_id}
    finally:
        tracing.shutdown_tracing()
