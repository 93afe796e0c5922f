"""The Server Post and reporting clients against the real EPX simulator process (§10).

Uses the simulator's 4111… and 4000000000000002 test cards, its §9 amount triggers and its fault
rules; the simulator's ledger shows what the "gateway" actually processed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from paycore.gateway.epx import wire
from paycore.gateway.epx.client import CallTrace, EpxServerPostClient
from paycore.gateway.epx.reporting import EpxReportingClient
from paycore.gateway.port import Category, GatewayRequest, MerchantKey
from paycore.platform.http import ClientProfile, create_session
from paycore.platform.resilience.breaker import BreakerState, CircuitBreaker

sim_support = pytest.importorskip("tests.support.sim_fixtures", reason="EPX simulator support not available")
epx_sim = sim_support.epx_sim
sim_control = sim_support.sim_control
SimControl = pytest.importorskip("tests.support.sim").SimControl
SimProcess = pytest.importorskip("tests.support.sim").SimProcess

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("epx_sim")]

MERCHANT = MerchantKey(cust_nbr="9001", merch_nbr="900300", dba_nbr="2", terminal_nbr="77")
APPROVE_CARD = wire.KeyedCard(pan="4111111111111111", exp_yymm="3012", cvv2="123")
DECLINE_CARD = wire.KeyedCard(pan="4000000000000002", exp_yymm="3012", cvv2="123")
BILLING = wire.Billing(address="123 N CENTRAL", zip_code="12345")


def tran_nbr() -> int:
    return wire.tran_nbr_for(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def session(epx_sim: SimProcess) -> AsyncIterator[aiohttp.ClientSession]:
    profile = ClientProfile(
        name="test_sim",
        limit=10,
        limit_per_host=10,
        keepalive_timeout=30.0,
        connect_timeout=2.0,
        read_timeout=5.0,
        total_timeout=None,
        ca_file=epx_sim.ca_file,
    )
    s = create_session(profile)
    yield s
    await s.close()


def client(session: aiohttp.ClientSession, sim: SimProcess, **kw: object) -> EpxServerPostClient:
    cb = kw.pop("breaker", None) or CircuitBreaker(f"test_sim_{uuid.uuid4().hex[:8]}", failure_rate=0.6)
    options: dict[str, object] = {"attempt_timeout": 2.0, "call_timeout": 6.0, "backoff_base": 0.02}
    options.update(kw)
    return EpxServerPostClient(session, sim.server_post_url, cb, **options)  # type: ignore[arg-type]


async def storage_bric(session: aiohttp.ClientSession, sim: SimProcess, card: wire.KeyedCard) -> str:
    request = wire.for_card_storage(
        merchant=MERCHANT, tran_nbr=tran_nbr(), card=card, billing=BILLING, at=now()
    )
    result = await client(session, sim).process(request)
    assert result.outcome == "approved", result
    assert result.response is not None and result.response.auth_guid
    return result.response.auth_guid


async def processed(control: SimControl, number: int, tran_type: str = "CCE1") -> list[dict[str, object]]:
    entries = await control.ledger(tran_nbr=number, tran_type=tran_type)
    return [e for e in entries if e.get("processed")]


async def test_approved_keyed_sale(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    request = wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=tran_nbr(),
        amount_cents=1000,
        card=APPROVE_CARD,
        billing=BILLING,
        at=now(),
    )
    result = await client(session, epx_sim).process(request)
    assert result.outcome == "approved" and result.attempts == 1
    assert result.response is not None and result.response.tran_nbr == request.tran_nbr
    assert result.response.card_brand == "visa" and result.response.auth_amount_cents in (None, 1000)
    assert len(await processed(sim_control, request.tran_nbr)) == 1


async def test_decline_trigger_on_a_stored_decline_card(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    bric = await storage_bric(session, epx_sim, DECLINE_CARD)
    request = wire.for_sale(
        merchant=MERCHANT, tran_nbr=tran_nbr(), amount_cents=105, storage_bric=bric, at=now()
    )
    result = await client(session, epx_sim).process(request)
    assert result.outcome == "declined" and result.attempts == 1
    assert result.response is not None and result.response.auth_resp == "05"
    assert result.response.category is Category.SOFT_DECLINE
    assert len(await sim_control.ledger(tran_nbr=request.tran_nbr)) == 1  # never retried


async def test_auth_then_capture_with_the_auth_bric(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    bric = await storage_bric(session, epx_sim, APPROVE_CARD)
    gateway = client(session, epx_sim)
    auth = await gateway.process(
        wire.for_auth(merchant=MERCHANT, tran_nbr=tran_nbr(), amount_cents=2000, storage_bric=bric, at=now())
    )
    assert auth.outcome == "approved" and auth.response is not None and auth.response.auth_guid
    capture = await gateway.process(
        wire.for_capture(
            merchant=MERCHANT,
            tran_nbr=tran_nbr(),
            amount_cents=1500,
            auth_bric=auth.response.auth_guid,
            at=now(),
        )
    )
    assert capture.outcome == "approved"


async def test_process_then_fail_then_duplicate_is_unknown(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    request = wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=tran_nbr(),
        amount_cents=1000,
        card=APPROVE_CARD,
        billing=BILLING,
        at=now(),
    )
    await sim_control.add_fault(
        {
            "target": "server_post",
            "match": {"tran_nbr": request.tran_nbr},
            "action": {"type": "process_then_fail", "fail": 503},
            "frequency": {"first": 1},
        }
    )
    trace = CallTrace()
    result = await client(session, epx_sim).process(request, trace=trace)
    assert (result.outcome, result.error_code, result.attempts) == ("unknown", "duplicate_tran_nbr", 2)
    assert trace.may_have_reached_gateway
    assert len(await processed(sim_control, request.tran_nbr)) == 1  # charged once, never twice


async def test_process_then_fail_with_replay_is_approved(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    await sim_control.settings(duplicate_mode="replay")
    request = wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=tran_nbr(),
        amount_cents=1000,
        card=APPROVE_CARD,
        billing=BILLING,
        at=now(),
    )
    await sim_control.add_fault(
        {
            "target": "server_post",
            "match": {"tran_nbr": request.tran_nbr},
            "action": {"type": "process_then_fail", "fail": 502},
            "frequency": {"first": 1},
        }
    )
    result = await client(session, epx_sim).process(request)
    assert result.outcome == "approved" and result.attempts == 2
    assert len(await processed(sim_control, request.tran_nbr)) == 1


async def test_fail_before_process_is_retried_safely(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    request = wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=tran_nbr(),
        amount_cents=1000,
        card=APPROVE_CARD,
        billing=BILLING,
        at=now(),
    )
    await sim_control.add_fault(
        {
            "target": "server_post",
            "match": {"tran_nbr": request.tran_nbr},
            "action": {"type": "fail_before_process", "fail": 503},
            "frequency": {"first": 2},
        }
    )
    result = await client(session, epx_sim).process(request)
    assert result.outcome == "approved" and result.attempts == 3
    entries = await sim_control.ledger(tran_nbr=request.tran_nbr)
    assert len(entries) == 3 and sum(1 for e in entries if e.get("processed")) == 1


async def test_listener_down_is_provably_not_delivered(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    await sim_control.listener(up=False)
    trace = CallTrace()
    request = wire.for_sale(
        merchant=MERCHANT, tran_nbr=tran_nbr(), amount_cents=1000, card=APPROVE_CARD, at=now()
    )
    result = await client(session, epx_sim).process(request, trace=trace)
    await sim_control.listener(up=True)
    assert (result.outcome, result.error_code) == ("failed", "gateway_unreachable")
    assert not trace.may_have_reached_gateway


async def test_breaker_opens_against_a_failing_simulator(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    await sim_control.add_fault(
        {
            "target": "server_post",
            "action": {"type": "http_error", "status": 503},
            "frequency": {"probability": 1.0},
        }
    )
    cb = CircuitBreaker(f"test_sim_{uuid.uuid4().hex[:8]}", failure_rate=0.6)
    gateway = client(session, epx_sim, breaker=cb, max_attempts=1)
    for _ in range(5):
        request = wire.for_sale(
            merchant=MERCHANT, tran_nbr=tran_nbr(), amount_cents=1000, card=APPROVE_CARD, at=now()
        )
        assert (await gateway.process(request)).outcome == "unknown"
    assert cb.state is BreakerState.OPEN
    sixth = wire.for_sale(
        merchant=MERCHANT, tran_nbr=tran_nbr(), amount_cents=1000, card=APPROVE_CARD, at=now()
    )
    result = await gateway.process(sixth)
    assert (result.outcome, result.error_code) == ("failed", "circuit_open")
    assert await sim_control.ledger(tran_nbr=sixth.tran_nbr) == []


async def test_reporting_finds_the_processed_sale(
    epx_sim: SimProcess, sim_control: SimControl, session: aiohttp.ClientSession
) -> None:
    request: GatewayRequest = wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=tran_nbr(),
        amount_cents=1234,
        card=APPROVE_CARD,
        billing=BILLING,
        at=now(),
    )
    sold = await client(session, epx_sim).process(request)
    assert sold.outcome == "approved" and sold.response is not None
    report = EpxReportingClient(session, epx_sim.reporting_url, timeout=2.0)
    found = await report.lookup(MERCHANT, request.tran_nbr)
    assert found is not None and found.tran_type == "CCE1" and found.category is Category.APPROVED
    assert found.amount_cents == 1234 and found.auth_guid == sold.response.auth_guid
    assert await report.lookup(MERCHANT, tran_nbr()) is None
