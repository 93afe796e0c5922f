"""Fault injection over real sockets: what the client sees, and what the ledger says happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from defusedxml import ElementTree as SafeET
from defusedxml import EntitiesForbidden

from tests.integration.epx_sim.client import VISA, form, next_tran_nbr, post
from tests.support.sim import SimControl, SimProcess

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def test_process_then_fail_commits_and_consumes_the_tran_nbr(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {
            "name": "ptf",
            "match": {"tran_nbr": tn},
            "action": {"type": "process_then_fail", "fail": 503},
            "frequency": {"first": 1},
        }
    )
    status, _ = await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    assert status == 503
    [entry] = await sim_control.ledger(tran_nbr=tn)
    assert entry["processed"] is True and entry["fault"] == "ptf" and entry["http_status"] == 503
    assert entry["auth_resp"] == "00" and entry["auth_guid"]
    _, retry = await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    assert retry["AUTH_RESP"] == "94" and "Duplicate TRAN_NBR" in retry["AUTH_RESP_TEXT"]
    processed = [e for e in await sim_control.ledger(tran_nbr=tn) if e["processed"]]
    assert len(processed) == 1


@pytest.mark.parametrize("fail", ["reset", "hang"])
async def test_process_then_fail_without_an_answer(
    epx_sim: SimProcess, sim_control: SimControl, fail: str
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "process_then_fail", "fail": fail}}
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http:
        with pytest.raises((aiohttp.ClientError, TimeoutError)):
            await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    await asyncio.sleep(0.1)
    [entry] = await sim_control.ledger(tran_nbr=tn)
    assert entry["processed"] is True and entry["fault_action"] == "process_then_fail"


async def test_fail_before_process_then_the_retry_succeeds(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "fail_before_process", "fail": "reset"}, "first": 1}
    )
    with pytest.raises(aiohttp.ClientError):
        await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    _, retry = await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    assert retry["AUTH_RESP"] == "00"
    entries = await sim_control.ledger(tran_nbr=tn)
    assert [(e["processed"], e["fault_action"]) for e in entries] == [
        (False, "fail_before_process"),
        (True, None),
    ]


async def test_fail_before_process_with_5xx(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "fail_before_process", "fail": 502}}
    )
    status, body = await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    assert status == 502 and "<html" in body["_body"].lower()
    [entry] = await sim_control.ledger(tran_nbr=tn)
    assert entry["processed"] is False


async def test_timeout_hang_and_late_answer(epx_sim: SimProcess, sim_control: SimControl) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault({"match": {"tran_nbr": tn}, "action": {"type": "timeout"}, "first": 1})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        with pytest.raises(TimeoutError):
            await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn, **VISA))
    tn2 = next_tran_nbr()
    await sim_control.add_fault({"match": {"tran_nbr": tn2}, "action": {"type": "timeout", "after_s": 0.4}})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        started = time.monotonic()
        _, late = await post(http, epx_sim.server_post_url, form("CCE1", "10.00", tn2, **VISA))
        assert late["AUTH_RESP"] == "00" and time.monotonic() - started >= 0.4
    await asyncio.sleep(0.1)
    [hung] = await sim_control.ledger(tran_nbr=tn)
    assert hung["processed"] is False and hung["http_status"] is None
    [answered] = await sim_control.ledger(tran_nbr=tn2)
    assert answered["processed"] is True


async def test_burst_of_5xx_then_recovery(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    await sim_control.add_fault(
        {
            "match": {"merchant": "900300", "amount": "7.77"},
            "action": {"type": "http_error", "status": 503},
            "first": 3,
        }
    )
    statuses = []
    for _ in range(5):
        status, _ = await post(http, epx_sim.server_post_url, form("CCE1", "7.77", **VISA))
        statuses.append(status)
    assert statuses == [503, 503, 503, 200, 200]


async def test_http_errors_and_html_with_200(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {
            "match": {"tran_nbr": tn},
            "action": {"type": "http_error", "status": 429, "retry_after": 2},
            "first": 1,
        }
    )
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "1.00", tn, **VISA)) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "2"
    tn = next_tran_nbr()
    await sim_control.add_fault({"match": {"tran_nbr": tn}, "action": {"type": "html_error"}})
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "1.00", tn, **VISA)) as r:
        assert r.status == 200 and (await r.text()).startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "kind",
    ["empty", "no_auth_resp", "approval_without_guid", "wrong_tran_nbr", "amount_mismatch", "invalid_xml"],
)
async def test_bad_bodies_are_processed(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession, kind: str
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault({"match": {"tran_nbr": tn}, "action": {"type": "bad_body", "kind": kind}})
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "10.00", tn, **VISA)) as r:
        assert r.status == 200
        text = await r.text()
    if kind == "empty":
        assert text == ""
    elif kind == "wrong_tran_nbr":
        assert f">{tn + 1}<" in text
    elif kind == "amount_mismatch":
        assert '"AUTH_AMOUNT">9.99<' in text
    [entry] = await sim_control.ledger(tran_nbr=tn)
    assert entry["processed"] is True


async def test_billion_laughs_and_oversized(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "bad_body", "kind": "billion_laughs"}}
    )
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "10.00", tn, **VISA)) as r:
        with pytest.raises(EntitiesForbidden):
            SafeET.fromstring(await r.text())
    tn = next_tran_nbr()
    await sim_control.settings(oversize_bytes=300_000)
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "bad_body", "kind": "oversized"}}
    )
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "10.00", tn, **VISA)) as r:
        assert len(await r.read()) > 300_000


async def test_slow_body_trips_a_read_timeout(epx_sim: SimProcess, sim_control: SimControl) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "slow_body", "bytes_per_s": 20}}
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http:
        with pytest.raises(TimeoutError):
            async with http.post(epx_sim.server_post_url, data=form("CCE1", "10.00", tn, **VISA)) as r:
                assert r.status == 200  # headers arrive at once
                await r.read()
    [entry] = await sim_control.ledger(tran_nbr=tn)
    assert entry["processed"] is True


async def test_latency_rules_and_format_modifier(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    await sim_control.add_fault({"match": {"amount": "6.66"}, "action": {"type": "latency", "ms": 200}})
    await sim_control.add_fault({"match": {"amount": "6.66"}, "action": {"type": "format", "format": "kv"}})
    started = time.monotonic()
    async with http.post(epx_sim.server_post_url, data=form("CCE1", "6.66", **VISA)) as r:
        text = await r.text()
    assert time.monotonic() - started >= 0.2 and "AUTH_RESP=00" in text


async def test_connection_refused_while_the_listener_is_down(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    await sim_control.listener(False)
    try:
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as fresh:
                await post(fresh, epx_sim.server_post_url, form("CCE1", "1.00", **VISA))
    finally:
        await sim_control.listener(True)
    status, out = await post(http, epx_sim.server_post_url, form("CCE1", "1.00", **VISA))
    assert status == 200 and out["AUTH_RESP"] == "00"


async def test_rules_are_listed_and_counted(sim_control: SimControl) -> None:
    rule_id = await sim_control.add_fault(
        {"action": {"type": "http_error", "status": 500}, "match": {"amount": "0.03"}}
    )
    [rule] = await sim_control.faults()
    assert rule["id"] == rule_id and rule["fired"] == 0
    await sim_control.remove_fault(rule_id)
    assert await sim_control.faults() == []
    stats = await sim_control.stats()
    assert stats["endpoints"]["server_post"]["approved"] >= 1


async def test_sandbox_rate_limit(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    await sim_control.settings(rate_limit_rps=2, rate_limit_mode="503")
    statuses = [
        (await post(http, epx_sim.server_post_url, form("CCE1", "1.00", **VISA)))[0] for _ in range(3)
    ]
    assert statuses[0] == 200 and 503 in statuses[1:]
    await sim_control.settings(rate_limit_mode="queue")
    await asyncio.sleep(1.0)
    started = time.monotonic()
    statuses = [
        (await post(http, epx_sim.server_post_url, form("CCE1", "1.00", **VISA)))[0] for _ in range(3)
    ]
    assert statuses == [200, 200, 200] and time.monotonic() - started >= 0.9


async def test_hang_ended_by_the_client_is_recorded_once(
    epx_sim: SimProcess, sim_control: SimControl
) -> None:
    tn = next_tran_nbr()
    await sim_control.add_fault(
        {"match": {"tran_nbr": tn}, "action": {"type": "process_then_fail", "fail": "hang"}}
    )
    before = (await sim_control.stats())["total"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        with pytest.raises(TimeoutError):
            await post(http, epx_sim.server_post_url, form("CCE1", "1.00", tn, **VISA))
    await asyncio.sleep(0.2)
    [entry] = await sim_control.ledger(tran_nbr=tn)
    assert entry["client_gone"] is True and entry["http_status"] is None and entry["processed"] is True
    assert (await sim_control.stats())["total"] - before == 1
