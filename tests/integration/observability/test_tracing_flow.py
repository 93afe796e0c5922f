"""P2-7/MON-4: the span tree of one payment, W3C propagation to the gateway and into the outbox."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from tests.support.sim import SimControl
from tests.support.tokens import VISA, mint_token

pytestmark = pytest.mark.integration


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def _by_name(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def _sale(api: Any, token: str, **headers: str) -> Any:
    response = await api.client.post(
        "/v1/payments",
        json={"amount": 10050, "currency": "USD", "token": token},
        headers=api.headers(uuid.uuid4().hex, **headers),
    )
    assert response.status_code == 201, response.text
    return response


async def test_one_sale_is_one_trace_with_db_and_gateway_children(
    inproc_api: Any, spans: InMemorySpanExporter, epx_sim: Any, sim_control: SimControl
) -> None:
    token = await mint_token(epx_sim.server_post_url)
    spans.clear()
    call_labels = {"operation": "sale", "outcome": "approved", "category": "approved"}
    calls_before = REGISTRY.get_sample_value("gateway_call_duration_seconds_count", call_labels) or 0
    await _sale(inproc_api, token)
    finished = list(spans.get_finished_spans())
    assert REGISTRY.get_sample_value("gateway_call_duration_seconds_count", call_labels) == calls_before + 1

    roots = [s for s in finished if s.parent is None]
    assert [r.name for r in roots] == ["POST /v1/payments"]
    root = roots[0]
    trace_id = root.context.trace_id
    assert {s.context.trace_id for s in finished} == {trace_id}
    assert root.attributes["http.route"] == "/v1/payments"
    assert root.attributes["http.response.status_code"] == 201

    [payment] = _by_name(finished, "payment.")
    assert payment.name == "payment.sale" and payment.parent.span_id == root.context.span_id
    assert payment.attributes["paycore.status"] == "approved"
    assert payment.attributes["paycore.amount"] == 10050
    assert payment.attributes["paycore.merchant_id"] == inproc_api.merchant_id

    under_payment = _children(finished, payment)
    db_children = [s for s in under_payment if s.name.startswith("db.")]
    [gateway] = [s for s in under_payment if s.name.startswith("gateway.")]
    assert gateway.name == "gateway.sale"
    assert gateway.attributes["paycore.gateway.outcome"] == "approved"
    assert len(db_children) >= 2  # the pending row before the call, the outcome after it
    for db in db_children:
        assert db.attributes["db.system"] == "postgresql"
        assert db.attributes["paycore.db.tier"] in {"simple", "standard", "complex", "report", "export"}
    # the API-key lookup runs before the service: a DB child of the server span
    assert any(s.name.startswith("db.") for s in _children(finished, root))
    # gateway time is never inside a DB span: no DB span overlaps the gateway call
    for db in db_children:
        assert db.end_time <= gateway.start_time or db.start_time >= gateway.end_time

    # the simulator recorded the traceparent it received: same trace, the gateway span as parent
    tran_nbr = gateway.attributes["paycore.gateway.tran_nbr"]
    [entry] = await sim_control.ledger(tran_nbr=tran_nbr)
    version, ledger_trace, ledger_parent, flags = entry["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1 == 1  # sampled
    assert ledger_trace == _hex(trace_id, 32)
    assert ledger_parent == _hex(gateway.context.span_id, 16)

    # SEC-1: the card token (BRIC) and the PAN appear in no attribute of any span
    for s in finished:
        text = repr(dict(s.attributes or {})) + repr([dict(e.attributes or {}) for e in s.events])
        assert token not in text and VISA not in text


async def test_outbox_event_carries_the_payment_trace(
    inproc_api: Any, spans: InMemorySpanExporter, epx_sim: Any, clean_db: str
) -> None:
    token = await mint_token(epx_sim.server_post_url)
    spans.clear()
    response = await _sale(inproc_api, token)
    [payment] = _by_name(list(spans.get_finished_spans()), "payment.")
    con = await asyncpg.connect(clean_db)
    try:
        traceparent = await con.fetchval(
            "SELECT traceparent FROM outbox_events WHERE aggregate_id = $1", uuid.UUID(response.json()["id"])
        )
    finally:
        await con.close()
    assert traceparent.startswith(
        f"00-{_hex(payment.context.trace_id, 32)}-{_hex(payment.context.span_id, 16)}-"
    )


async def test_a_callers_traceparent_is_continued(
    inproc_api: Any, spans: InMemorySpanExporter, epx_sim: Any
) -> None:
    token = await mint_token(epx_sim.server_post_url)
    spans.clear()
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await _sale(inproc_api, token, traceparent=f"00-{caller_trace}-{caller_span}-01")
    finished = list(spans.get_finished_spans())
    [server] = [s for s in finished if s.name == "POST /v1/payments"]
    assert server.parent is not None and server.parent.is_remote
    assert _hex(server.parent.span_id, 16) == caller_span
    assert {_hex(s.context.trace_id, 32) for s in finished} == {caller_trace}


async def test_unsampled_caller_is_not_recorded_but_still_propagated(
    inproc_api: Any, spans: InMemorySpanExporter, epx_sim: Any, sim_control: SimControl, clean_db: str
) -> None:
    token = await mint_token(epx_sim.server_post_url)
    spans.clear()
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    response = await _sale(inproc_api, token, traceparent=f"00-{caller_trace}-b7ad6b7169203331-00")
    assert list(spans.get_finished_spans()) == []  # ParentBased: the caller decided not to sample
    con = await asyncpg.connect(clean_db)
    try:
        tran_nbr = await con.fetchval(
            "SELECT tran_nbr FROM transactions WHERE id = $1", uuid.UUID(response.json()["id"])
        )
    finally:
        await con.close()
    [entry] = await sim_control.ledger(tran_nbr=tran_nbr)
    assert entry["traceparent"].startswith(f"00-{caller_trace}-")
    assert int(entry["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # not sampled, still propagated
