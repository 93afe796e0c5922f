"""The Key Exchange client against the simulator: TAC formats, retry at most once, no retry on 4xx,
the gateway_key_exchange breaker, and no MAC or TAC in the logs."""

from __future__ import annotations

import secrets

import aiohttp
import pytest
from structlog.testing import capture_logs

from paycore.gateway.epx.key_exchange import KeyExchangeClient, KeyExchangeError, parse_tac
from paycore.platform.crypto import SecretStr
from paycore.platform.resilience.breaker import BreakerState, CircuitBreaker
from tests.integration.epx_sim.client import next_tran_nbr

pytestmark = pytest.mark.integration

REDIRECT = "https://pay.example/v1/epx/browser-post/callback?txn=t&m=m"


@pytest.fixture
async def merchant_mac(sim_control) -> SecretStr:
    mac = "kx-" + secrets.token_hex(12)
    merch = str(secrets.randbelow(9_000_000) + 1_000_000)
    await sim_control.add_merchant("9301", merch, "5", "55", mac)
    return SecretStr(mac)


@pytest.fixture
async def client(epx_sim):
    async with aiohttp.ClientSession() as session:
        breaker = CircuitBreaker("gateway_key_exchange", failure_threshold=5, window=20, failure_rate=0.6)
        yield KeyExchangeClient(session, epx_sim.key_exchange_url, breaker, attempt_timeout=2, call_timeout=5)


async def tac(client: KeyExchangeClient, mac: SecretStr, tran_nbr: int | None = None) -> SecretStr:
    return await client.request_tac(
        mac=mac,
        tran_nbr=tran_nbr or next_tran_nbr(),
        amount_cents=1050,
        tran_group="SALE",
        redirect_url=REDIRECT,
    )


def test_parse_tac_formats():
    assert parse_tac(b'<RESPONSE><FIELDS><FIELD KEY="TAC">AbC+/=</FIELD></FIELDS></RESPONSE>') == "AbC+/="
    assert parse_tac(b'<?xml version="1.0"?><RESPONSE><TAC>xyz</TAC></RESPONSE>') == "xyz"
    assert parse_tac(b"TAC=AbC%2B%2F%3D") == "AbC+/="
    assert parse_tac(b"  AbCdEf==\n") == "AbCdEf=="
    for bad, reason in (
        (b"", "empty_body"),
        (b'<RESPONSE><FIELDS><FIELD KEY="TAC"></FIELD></FIELDS></RESPONSE>', "empty_tac"),
        (b"<html><body>oops", "malformed_xml"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><RESPONSE><TAC>&a;</TAC></RESPONSE>', "forbidden_xml"),
        (b"two words", "malformed_tac"),
    ):
        with pytest.raises(KeyExchangeError) as exc:
            parse_tac(bad)
        assert exc.value.reason == reason


async def test_a_tac_is_issued_and_nothing_secret_is_logged(client, merchant_mac, sim_control):
    tran_nbr = next_tran_nbr()
    with capture_logs() as logs:
        value = await tac(client, merchant_mac, tran_nbr)
    assert value.reveal() and "***" in repr(value)
    [entry] = await sim_control.ledger(tran_nbr=tran_nbr, endpoint="key_exchange")
    assert entry["outcome"] == "tac_issued" and entry["tran_type"] == "SALE"
    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "http_error", "status": 503}, "first": 2}
    )
    with capture_logs() as logs, pytest.raises(KeyExchangeError):
        await tac(client, merchant_mac)
    text = repr(logs)
    assert merchant_mac.reveal() not in text and value.reveal() not in text
    assert any(e["event"] == "key_exchange_failed" for e in logs)


@pytest.mark.parametrize("kind", ["bare_tac", "kv_tac"])
async def test_bare_and_key_value_answers_are_accepted(client, merchant_mac, sim_control, kind):
    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "bad_body", "kind": kind}, "first": 1}
    )
    assert (await tac(client, merchant_mac)).reveal()


async def test_one_retry_then_failure(client, merchant_mac, sim_control):
    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "http_error", "status": 503}, "first": 1}
    )
    tran_nbr = next_tran_nbr()
    assert (await tac(client, merchant_mac, tran_nbr)).reveal()  # the single retry succeeded
    assert len(await sim_control.ledger(tran_nbr=tran_nbr, endpoint="key_exchange")) == 2

    await sim_control.add_fault(
        {"target": "key_exchange", "action": {"type": "bad_body", "kind": "empty_tac"}, "first": 5}
    )
    tran_nbr = next_tran_nbr()
    with pytest.raises(KeyExchangeError) as exc:
        await tac(client, merchant_mac, tran_nbr)
    assert exc.value.reason == "empty_tac"
    assert len(await sim_control.ledger(tran_nbr=tran_nbr, endpoint="key_exchange")) == 2  # never a third


async def test_a_wrong_mac_is_not_retried(client, sim_control):
    tran_nbr = next_tran_nbr()
    with pytest.raises(KeyExchangeError) as exc:
        await tac(client, SecretStr("not-a-registered-mac"), tran_nbr)
    assert exc.value.reason == "http_401" and not exc.value.retryable
    assert len(await sim_control.ledger(tran_nbr=tran_nbr, endpoint="key_exchange")) == 1
    assert client.breaker.state is BreakerState.CLOSED  # an answer, not an outage


async def test_breaker_opens_and_then_fails_fast_without_a_request(client, merchant_mac, sim_control):
    await sim_control.add_fault({"target": "key_exchange", "action": {"type": "http_error", "status": 503}})
    for _ in range(3):  # 2 attempts each: 6 failures ≥ 5
        with pytest.raises(KeyExchangeError):
            await tac(client, merchant_mac)
    assert client.breaker.state is BreakerState.OPEN
    tran_nbr = next_tran_nbr()
    with pytest.raises(KeyExchangeError) as exc:
        await tac(client, merchant_mac, tran_nbr)
    assert exc.value.reason == "circuit_open"
    assert await sim_control.ledger(tran_nbr=tran_nbr, endpoint="key_exchange") == []
