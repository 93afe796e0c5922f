"""The EPX transaction-report client (reconciliation) against a loopback server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from paycore.gateway.epx.reporting import EpxReportingClient
from paycore.gateway.port import Category, MerchantKey, ReportUnavailable
from paycore.platform.http import ClientProfile, create_session
from paycore.platform.resilience.breaker import BreakerState, CircuitBreaker
from tests.integration.gateway.loopback import ScriptedServer, closed_port, hang, respond, status

pytestmark = pytest.mark.integration

MERCHANT = MerchantKey(cust_nbr="9001", merch_nbr="900300", dba_nbr="2", terminal_nbr="77")
TRAN = 1_987_654_321


def report(*transactions: dict[str, Any], state: str = "success") -> bytes:
    return json.dumps({"status": state, "data": {"transactions": list(transactions)}}).encode()


def txn(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "tranNbr": TRAN,
        "tranType": "CCE1",
        "authResp": "00",
        "authGuid": "09REPORTEDBRIC000001",
        "authCode": "052585",
        "amount": "10.50",
        "batchId": "20250304",
        "processedAt": "2025-03-04T05:06:07Z",
    }
    entry.update(overrides)
    return entry


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    s = await ScriptedServer().start()
    yield s
    await s.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    profile = ClientProfile(
        name="test_reporting",
        limit=10,
        limit_per_host=10,
        keepalive_timeout=90.0,
        connect_timeout=1.0,
        read_timeout=5.0,
        total_timeout=None,
    )
    s = create_session(profile)
    yield s
    await s.close()


def breaker() -> CircuitBreaker:
    return CircuitBreaker(f"test_reporting_{uuid.uuid4().hex[:8]}", failure_rate=0.5)


def json_response(body: bytes) -> Any:
    return respond(body, content_type="application/json")


async def test_found_transaction_is_parsed(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = json_response(report(txn()))
    client = EpxReportingClient(session, server.url.rstrip("/"), breaker=breaker(), timeout=2.0)
    found = await client.lookup(MERCHANT, TRAN)
    assert found is not None
    assert (found.tran_nbr, found.tran_type, found.auth_resp, found.category) == (
        TRAN,
        "CCE1",
        "00",
        Category.APPROVED,
    )
    assert (found.auth_guid, found.auth_code, found.amount_cents, found.batch_id) == (
        "09REPORTEDBRIC000001",
        "052585",
        1050,
        "20250304",
    )
    [received] = server.received
    assert received.method == "GET" and received.headers["Accept"] == "application/json"
    assert received.path_qs == f"/reporting/transactions?merchant=900300&tranNbr={TRAN}"


async def test_amounts_never_go_through_float(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    # 0.29 * 100 == 28.999999999999996 as a float: the decoder must keep the exact decimal.
    server.then(json_response(b'{"status":"success","data":{"transactions":[{"tranNbr":"1987654321",'
                              b'"tranType":"CCE9","authResp":"00","amount":0.29}]}}'))  # fmt: skip
    client = EpxReportingClient(session, server.url)
    found = await client.lookup(MERCHANT, TRAN)
    assert found is not None and found.amount_cents == 29 and found.tran_type == "CCE9"


async def test_empty_list_is_none(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    server.default = json_response(report())
    assert await EpxReportingClient(session, server.url).lookup(MERCHANT, TRAN) is None


async def test_other_tran_nbrs_are_ignored_and_an_approval_wins(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = json_response(
        report(txn(tranNbr=TRAN + 1), txn(authResp="94", authGuid=None), txn(authResp="00"))
    )
    found = await EpxReportingClient(session, server.url).lookup(MERCHANT, TRAN)
    assert found is not None and found.auth_resp == "00" and found.category is Category.APPROVED
    server.default = json_response(report(txn(tranNbr=TRAN + 1)))
    assert await EpxReportingClient(session, server.url).lookup(MERCHANT, TRAN) is None


async def test_decline_and_zero_dollar_categories(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.then(json_response(report(txn(authResp="51", authCode="", amount="1.20"))))
    server.then(json_response(report(txn(tranType="CCE8", authResp="85", amount="0.00"))))
    client = EpxReportingClient(session, server.url)
    declined = await client.lookup(MERCHANT, TRAN)
    assert declined is not None and declined.category is Category.SOFT_DECLINE and declined.auth_code is None
    stored = await client.lookup(MERCHANT, TRAN)
    assert stored is not None and stored.category is Category.APPROVED and stored.amount_cents == 0


@pytest.mark.parametrize(
    "action",
    [
        json_response(report(txn(), state="error")),
        json_response(b'{"status":"success"'),
        json_response(b'{"status":"success","data":{"transactions":[{"tranNbr":1}]}}'),
        json_response(report(txn(amount="10.505"))),
        json_response(report(txn(amount="-1.00"))),
        status(500),
        status(503),
        status(404),
        status(401),
    ],
)
async def test_unusable_answers_raise_report_unavailable(
    server: ScriptedServer, session: aiohttp.ClientSession, action: Any
) -> None:
    server.default = action
    with pytest.raises(ReportUnavailable):
        await EpxReportingClient(session, server.url).lookup(MERCHANT, TRAN)


async def test_timeout_raises_report_unavailable(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = hang()
    started = time.monotonic()
    with pytest.raises(ReportUnavailable, match="timed out"):
        await EpxReportingClient(session, server.url, timeout=0.2).lookup(MERCHANT, TRAN)
    assert time.monotonic() - started < 1.0


async def test_unreachable_raises_report_unavailable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ReportUnavailable, match="unreachable"):
        await EpxReportingClient(session, f"http://127.0.0.1:{closed_port()}").lookup(MERCHANT, TRAN)


async def test_breaker_accounting(server: ScriptedServer, session: aiohttp.ClientSession) -> None:
    cb = breaker()
    client = EpxReportingClient(session, server.url, breaker=cb)
    server.default = status(404)
    for _ in range(6):  # 4xx: not a health failure
        with pytest.raises(ReportUnavailable):
            await client.lookup(MERCHANT, TRAN)
    assert cb.state is BreakerState.CLOSED
    server.default = status(502)
    for _ in range(5):
        with pytest.raises(ReportUnavailable):
            await client.lookup(MERCHANT, TRAN)
    assert cb.state is BreakerState.OPEN
    received = len(server.received)
    with pytest.raises(ReportUnavailable, match="circuit"):
        await client.lookup(MERCHANT, TRAN)
    assert len(server.received) == received


async def test_cancellation_propagates_and_releases_the_permit(
    server: ScriptedServer, session: aiohttp.ClientSession
) -> None:
    server.default = hang()
    cb = breaker()
    task = asyncio.create_task(EpxReportingClient(session, server.url, breaker=cb).lookup(MERCHANT, TRAN))
    await server.request_seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.snapshot().window_calls == 0
