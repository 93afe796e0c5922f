"""The Server Post client against a real loopback server (CRITICAL-1, CRITICAL-3, RES-3, §3.6)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from paycore.gateway.epx import wire
from paycore.gateway.epx.client import CallTrace, EpxServerPostClient
from paycore.gateway.port import Category, GatewayRequest, MerchantKey
from paycore.platform.http import ClientProfile, create_session
from paycore.platform.resilience import deadline
from paycore.platform.resilience.breaker import BreakerState, CircuitBreaker
from tests.integration.gateway.loopback import (
    ScriptedServer,
    closed_port,
    echo_xml,
    hang,
    reset,
    respond,
    status,
)

pytestmark = pytest.mark.integration

MERCHANT = MerchantKey(cust_nbr="9001", merch_nbr="900300", dba_nbr="2", terminal_nbr="77")
BRIC = "09LMNOPQRSTUVWXYZ012"


def sale(amount_cents: int = 1050) -> GatewayRequest:
    return wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=wire.tran_nbr_for(uuid.uuid4()),
        amount_cents=amount_cents,
        storage_bric=BRIC,
        at=datetime.now(UTC),
    )


def breaker(**kw: Any) -> CircuitBreaker:
    return CircuitBreaker(f"test_client_{uuid.uuid4().hex[:8]}", failure_rate=0.6, **kw)


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    s = await ScriptedServer().start()
    yield s
    await s.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    profile = ClientProfile(
        name="test_gateway",
        limit=50,
        limit_per_host=50,
        keepalive_timeout=90.0,
        connect_timeout=1.0,
        read_timeout=5.0,
        total_timeout=None,
    )
    s = create_session(profile)
    yield s
    await s.close()


def make_client(session: aiohttp.ClientSession, url: str, **kw: Any) -> EpxServerPostClient:
    options: dict[str, Any] = {
        "attempt_timeout": 2.0,
        "call_timeout": 5.0,
        "backoff_base": 0.01,
        "rand": lambda: 0.5,  # no jitter
    }
    options.update(kw)
    cb = options.pop("breaker", None) or breaker()
    return EpxServerPostClient(session, url, cb, **options)


# --- definitive answers -------------------------------------------------------------------------
async def test_approved_sale(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = echo_xml("00")
    client = make_client(session, server.url)
    request = sale()
    labels = {"payment_type": "card", "code": "00", "category": "approved"}
    before = metric("payment_gateway_responses_total", labels)
    trace = CallTrace()
    result = await client.process(request, trace=trace)
    assert result.outcome == "approved" and result.attempts == 1 and result.error_code is None
    assert (
        result.response is not None
        and result.response.auth_guid
        and result.response.tran_nbr == request.tran_nbr
    )
    assert result.response.auth_amount_cents == 1050 and result.response.card_brand == "visa"
    assert trace.completed and trace.may_have_reached_gateway and trace.attempts == 1
    assert metric("payment_gateway_responses_total", labels) - before == 1
    [received] = server.received
    assert received.method == "POST" and received.path_qs == "/"
    assert received.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert received.body == wire.encode(request)


async def test_decline_not_retried(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = echo_xml("51", "INSUFF FUNDS")
    cb = breaker()
    result = await make_client(session, server.url, breaker=cb).process(sale())
    assert result.outcome == "declined" and result.attempts == 1
    assert result.response is not None and result.response.category is Category.SOFT_DECLINE
    assert len(server.received) == 1
    assert cb.snapshot().window_failures == 0  # a decline is not a breaker failure


@pytest.mark.parametrize(("code", "outcome", "error_code", "breaker_failures"), [
    ("91", "declined", None, 0),
    ("96", "failed", "gateway_error", 1),
    ("05", "declined", None, 0),
    ("14", "declined", None, 0),
    ("77", "declined", None, 0),  # unknown code: a decline, no automatic retry
])  # fmt: skip
async def test_codes_never_retried(
    server: ScriptedServer,
    session: aiohttp.ClientSession,
    code: str,
    outcome: str,
    error_code: str | None,
    breaker_failures: int,
) -> None:
    server.default = echo_xml(code, "WHATEVER")
    cb = breaker()
    result = await make_client(session, server.url, breaker=cb).process(sale())
    assert (result.outcome, result.error_code) == (outcome, error_code)
    assert len(server.received) == 1
    assert cb.snapshot().window_failures == breaker_failures


async def test_validation_text_fails_without_retry(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = echo_xml("12", "Invalid BATCH_ID[LEN]", AUTH_GUID="")
    with capture_logs() as logs:
        result = await make_client(session, server.url).process(sale())
    assert result.outcome == "failed" and result.error_code == "gateway_validation"
    assert result.detail == "invalid field BATCH_ID"
    assert len(server.received) == 1
    assert any(e["event"] == "gateway_validation_error" and e["log_level"] == "error" for e in logs)


@pytest.mark.parametrize("code", [400, 401, 403, 429])
async def test_http_4xx_fails_without_retry_or_breaker_failure(
    server: ScriptedServer, session: aiohttp.ClientSession, code: int
) -> None:
    server.default = status(code)
    cb = breaker()
    client = make_client(session, server.url, breaker=cb)
    for _ in range(6):
        result = await client.process(sale())
        assert (result.outcome, result.error_code, result.attempts) == ("failed", f"http_{code}", 1)
    assert len(server.received) == 6
    assert cb.state is BreakerState.CLOSED


async def test_redirect_not_followed(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    async def redirect(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    server.default = redirect
    result = await make_client(session, server.url).process(sale())
    assert (result.outcome, result.error_code) == ("failed", "http_302")
    assert [r.path_qs for r in server.received] == ["/"]


async def test_amount_mismatch_is_unknown(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = echo_xml("00", AUTH_AMOUNT="5.00")
    with capture_logs() as logs:
        result = await make_client(session, server.url).process(sale(1050))
    assert result.outcome == "unknown" and result.error_code == "amount_mismatch"
    assert result.response is not None and result.response.auth_amount_cents == 500
    assert len(server.received) == 1
    assert any(e["event"] == "gateway_amount_mismatch" for e in logs)


async def test_zero_dollar_storage_85_is_approved_key_value(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = respond(
        "AUTH_RESP=85&AUTH_GUID=09STORAGE0000000001&AUTH_RESP_TEXT=NO+REASON+TO+DECLINE&NTID=123456789012345",
        content_type="text/plain",
    )
    request = wire.for_card_storage(
        merchant=MERCHANT, tran_nbr=wire.tran_nbr_for(uuid.uuid4()), source_bric=BRIC, at=datetime.now(UTC)
    )
    result = await make_client(session, server.url).process(request)
    assert result.outcome == "approved" and result.response is not None
    assert result.response.ntid == "123456789012345"


async def test_85_on_a_sale_is_unknown(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = echo_xml("85", "NO REASON TO DECLINE")
    result = await make_client(session, server.url).process(sale())
    assert (result.outcome, result.error_code) == ("unknown", "unexpected_code_85")


# --- retries -------------------------------------------------------------------------------------
async def test_retry_reuses_tran_nbr_and_body(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.then(status(503), reset()).default = echo_xml("00")
    request = sale()
    labels = {"operation": "sale", "reason": "http_5xx"}
    before = metric("gateway_retries_total", labels)
    with capture_logs() as logs:
        result = await make_client(session, server.url).process(request)
    assert result.outcome == "approved" and result.attempts == 3
    bodies = [r.body for r in server.received]
    assert len(bodies) == 3 and len(set(bodies)) == 1 and bodies[0] == wire.encode(request)
    assert {r.form["TRAN_NBR"] for r in server.received} == {str(request.tran_nbr)}
    assert metric("gateway_retries_total", labels) - before == 1
    retries = [e for e in logs if e["event"] == "gateway_retry"]
    assert [e["reason"] for e in retries] == ["http_503", "connection_reset"]
    assert all(e["log_level"] == "warning" for e in retries)


async def test_duplicate_on_retry_marks_unknown(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.then(status(502)).default = echo_xml("94", "Duplicate TRAN_NBR", AUTH_GUID="")
    result = await make_client(session, server.url).process(sale())
    assert (result.outcome, result.error_code, result.attempts) == ("unknown", "duplicate_tran_nbr", 2)
    assert len(server.received) == 2


async def test_duplicate_on_first_attempt_is_a_failed_bug(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = echo_xml("94", "Duplicate TRAN_NBR", AUTH_GUID="")
    with capture_logs() as logs:
        result = await make_client(session, server.url).process(sale())
    assert (result.outcome, result.error_code) == ("failed", "duplicate_tran_nbr")
    assert any(
        e["event"] == "gateway_duplicate_tran_nbr_first_attempt" and e["log_level"] == "error" for e in logs
    )
    # A re-drive of a stored request treats the same answer as unknown.
    redriven = await make_client(session, server.url).process(sale(), previously_sent=True)
    assert (redriven.outcome, redriven.error_code) == ("unknown", "duplicate_tran_nbr")


async def test_5xx_thrice_is_unknown(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = status(503)
    trace = CallTrace()
    with capture_logs() as logs:
        result = await make_client(session, server.url).process(sale(), trace=trace)
    assert (result.outcome, result.error_code, result.attempts) == ("unknown", "http_503", 3)
    assert len(server.received) == 3 and trace.may_have_reached_gateway
    assert any(e["event"] == "gateway_outcome_unknown" and e["log_level"] == "error" for e in logs)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"<html><body>Service Unavailable</body></html>", "missing_auth_resp"),
        (b"", "empty_body"),
        (b'<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">00', "malformed_xml"),
        (b"AUTH_RESP=00&AUTH_GUID=G&TRAN_NBR=1000000001", "tran_nbr_mismatch"),
        (b"AUTH_RESP=00&AUTH_AMOUNT=10.50", "approval_without_auth_guid"),
        (b"AUTH_RESP=00&AUTH_GUID=G&" + b"X" * 70_000, "oversized_body"),
    ],
)
async def test_protocol_errors_are_retried_then_unknown(
    server: ScriptedServer, session: aiohttp.ClientSession, body: bytes, detail: str
) -> None:
    server.default = respond(body, content_type="text/html")
    cb = breaker()
    result = await make_client(session, server.url, breaker=cb).process(sale())
    assert (result.outcome, result.error_code, result.detail) == ("unknown", "protocol_error", detail)
    assert len(server.received) == 3
    assert cb.snapshot().consecutive_failures == 3


async def test_attempt_timeouts_then_unknown(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = hang()
    started = time.monotonic()
    result = await make_client(session, server.url, attempt_timeout=0.1).process(sale())
    assert (result.outcome, result.error_code, result.attempts) == ("unknown", "timeout", 3)
    assert time.monotonic() - started < 1.0
    assert len(server.received) == 3


async def test_call_budget_bounds_every_attempt(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = hang()
    started = time.monotonic()
    result = await make_client(session, server.url, attempt_timeout=10.0, call_timeout=0.3).process(sale())
    elapsed = time.monotonic() - started
    assert result.outcome == "unknown" and result.error_code == "timeout"
    assert 0.25 < elapsed < 0.6
    assert len(server.received) == 1  # no retry fits in what is left


async def test_request_deadline_is_respected(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = status(503)
    client = make_client(session, server.url, backoff_base=0.2)
    started = time.monotonic()
    async with deadline.budget(0.15):
        result = await client.process(sale())
    assert time.monotonic() - started < 0.15
    assert result.outcome == "unknown" and result.attempts == 1
    assert result.detail == "no time left for a retry"


async def test_spent_deadline_sends_nothing(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = echo_xml("00")
    token = deadline.set_deadline(asyncio.get_running_loop().time() - 1)
    try:
        result = await make_client(session, server.url).process(sale())
    finally:
        deadline.reset_deadline(token)
    assert (result.outcome, result.error_code, result.attempts) == ("failed", "deadline_exceeded", 0)
    assert server.received == [] and server.accepted == 0


# --- connection errors ------------------------------------------------------------------------------
async def test_connection_refused_fails_after_max_attempts(session: aiohttp.ClientSession) -> None:
    trace = CallTrace()
    result = await make_client(session, f"http://127.0.0.1:{closed_port()}/").process(sale(), trace=trace)
    assert (result.outcome, result.error_code, result.attempts) == ("failed", "gateway_unreachable", 3)
    assert not trace.may_have_reached_gateway and trace.last_error == "connect_error"


async def test_connection_refused_untracked_session_is_still_provably_not_sent() -> None:
    async with aiohttp.ClientSession() as plain:  # no paycore trace config
        result = await make_client(plain, f"http://127.0.0.1:{closed_port()}/").process(sale())
    assert (result.outcome, result.error_code) == ("failed", "gateway_unreachable")


async def test_retry_stops_at_deadline(session: aiohttp.ClientSession) -> None:
    client = make_client(session, f"http://127.0.0.1:{closed_port()}/", backoff_base=0.1, rand=lambda: 0.5)
    trace = CallTrace()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.process(sale(), trace=trace)
    assert time.monotonic() - started < 0.2
    assert 1 <= trace.attempts <= 2
    assert not trace.may_have_reached_gateway and not trace.completed


async def test_retry_cancel_during_backoff(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = status(503)
    cb = breaker()
    client = make_client(session, server.url, backoff_base=0.5, breaker=cb)
    trace = CallTrace()
    task = asyncio.create_task(client.process(sale(), trace=trace))
    await server.request_seen.wait()
    await asyncio.sleep(0.05)  # the client is now sleeping before its retry
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.05
    await asyncio.sleep(0.6)
    assert len(server.received) == 1  # no further attempt after the cancellation
    assert trace.may_have_reached_gateway and trace.attempts == 1 and not trace.completed


async def test_cancel_during_attempt_reports_maybe_sent(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = hang()
    cb = breaker()
    trace = CallTrace()
    task = asyncio.create_task(make_client(session, server.url, breaker=cb).process(sale(), trace=trace))
    await server.request_seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trace.may_have_reached_gateway  # -> the service leaves the transaction `unknown`
    assert cb.snapshot().window_calls == 0  # released: no verdict on the upstream


# --- circuit breaker -------------------------------------------------------------------------------
async def test_breaker_opens_after_five_failing_calls(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = status(503)
    cb = breaker()
    client = make_client(session, server.url, breaker=cb, max_attempts=1)
    for _ in range(5):
        assert (await client.process(sale())).outcome == "unknown"
    assert cb.state is BreakerState.OPEN
    accepted, received = server.accepted, len(server.received)
    trace = CallTrace()
    started = time.perf_counter()
    result = await client.process(sale(), trace=trace)
    # fast: no socket, no timeout waited (the < 1 ms itself is measured by the benchmarks; a loaded
    # CI machine must not turn a scheduling hiccup into a failure)
    assert time.perf_counter() - started < 0.25
    assert (result.outcome, result.error_code, result.attempts) == ("failed", "circuit_open", 0)
    assert not trace.may_have_reached_gateway
    assert (server.accepted, len(server.received)) == (accepted, received)


async def test_breaker_opening_mid_call_keeps_the_unknown(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = status(500)
    cb = breaker(failure_threshold=2)
    result = await make_client(session, server.url, breaker=cb).process(sale())
    assert (result.outcome, result.error_code, result.detail) == ("unknown", "http_500", "circuit_open")
    assert len(server.received) == 2


async def test_breaker_counts_refused_connections(session: aiohttp.ClientSession) -> None:
    cb = breaker()
    client = make_client(session, f"http://127.0.0.1:{closed_port()}/", breaker=cb)
    first = await client.process(sale())  # 3 attempts
    with capture_logs() as logs:
        second = await client.process(sale())  # 2 attempts, then the circuit is open: no more waits
    third = await client.process(sale())
    assert first.error_code == "gateway_unreachable" and first.attempts == 3
    assert (second.outcome, second.error_code, second.detail) == (
        "failed",
        "gateway_unreachable",
        "circuit_open",
    )
    assert second.attempts == 2 and len([e for e in logs if e["event"] == "gateway_retry"]) == 1
    assert (third.outcome, third.error_code, third.attempts) == ("failed", "circuit_open", 0)
    assert cb.state is BreakerState.OPEN


# --- hooks, pooling ----------------------------------------------------------------------------------
async def test_headers_factory_adds_traceparent(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = echo_xml("00")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def factory() -> dict[str, str]:
        return {"traceparent": traceparent, "Content-Type": "text/evil"}

    await make_client(session, server.url, headers_factory=factory).process(sale())
    [received] = server.received
    assert received.headers["traceparent"] == traceparent
    assert received.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_failing_headers_factory_does_not_fail_the_payment(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = echo_xml("00")

    def factory() -> dict[str, str]:
        raise RuntimeError("tracer broken")

    assert (
        await make_client(session, server.url, headers_factory=factory).process(sale())
    ).outcome == "approved"


async def test_sequential_calls_reuse_one_connection(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = echo_xml("00")
    client = make_client(session, server.url)
    new_before = metric("outbound_connections_total", {"client": "test_gateway", "kind": "new"})
    reused_before = metric("outbound_connections_total", {"client": "test_gateway", "kind": "reused"})
    for _ in range(100):
        assert (await client.process(sale())).outcome == "approved"
    assert server.accepted == 1 and len(server.received) == 100
    assert metric("outbound_connections_total", {"client": "test_gateway", "kind": "new"}) - new_before == 1
    assert (
        metric("outbound_connections_total", {"client": "test_gateway", "kind": "reused"}) - reused_before
        == 99
    )


async def test_logs_never_contain_bodies_or_brics(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.then(status(503)).default = echo_xml("00", AUTH_AMOUNT="1.00")
    with capture_logs() as logs:
        await make_client(session, server.url).process(sale(1050))
    text = repr(logs)
    assert logs and BRIC not in text and "09TESTBRIC" not in text and "CUST_NBR" not in text
