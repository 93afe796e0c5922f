"""North disputes, the process lifecycle (restart, kill), HTTPS with a test CA, and safety checks."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.epx_sim.client import VISA, form, get_json, next_tran_nbr, post
from tests.support.sim import SimControl, SimProcess, start_simulator

pytestmark = pytest.mark.integration


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_disputes_paging_statuses_and_errors(
    epx_sim: SimProcess, sim_control: SimControl, http: aiohttp.ClientSession
) -> None:
    merchant = str(700000 + next_tran_nbr() % 99999)
    await sim_control.add_merchant("9001", merchant, "2", "77", "dispute-merchant-mac")
    _, sale = await post(http, epx_sim.server_post_url, form("CCE1", "42.10", **VISA, MERCH_NBR=merchant))
    tn = int(sale["TRAN_NBR"])
    cases = [
        (await sim_control.create_dispute(tn, merchant=merchant, dispute_date=f"2026-01-0{d}"))["caseNumber"]
        for d in (1, 2, 3)
    ]
    await sim_control.update_dispute(cases[0], status="WON")
    url = epx_sim.north_url + "/merchant/disputes/mid/search"
    find_by = f"byMerchant:{merchant},fromDate:2026-01-01,toDate:2026-01-31"
    async with http.get(url, params={"findBy": find_by}, headers={"Accept": "application/json"}) as r:
        raw = await r.text()
        body = json.loads(raw)
    assert body["status"] == "success" and body["data"]["meta"] == {
        "totalDisputes": 3,
        "currentResultCount": 3,
    }
    first = body["data"]["disputes"][0]
    assert first["caseNumber"] == cases[0] and first["status"] == "WON"
    assert first["transactionNumber"] == str(tn) and first["cardNumberLastFour"] == "1111"
    assert '"transactionAmount":42.10' in raw and '"chargebackAmount":42.10' in raw  # JSON numbers, 2 dp
    assert isinstance(body["link"], str)

    narrow = await get_json(http, url, findBy=f"byMerchant:{merchant},fromDate:2026-01-02,toDate:2026-01-02")
    assert [d["caseNumber"] for d in narrow["data"]["disputes"]] == [cases[1]]

    await sim_control.settings(north_page_cap=2)
    capped = await get_json(http, url, findBy=find_by)
    assert capped["data"]["meta"] == {"totalDisputes": 3, "currentResultCount": 2}

    await sim_control.settings(north_status="error")
    assert (await get_json(http, url, findBy=find_by))["status"] == "error"
    await sim_control.reset_test_state()

    await sim_control.add_fault(
        {"target": "north", "action": {"type": "bad_body", "kind": "malformed_json"}, "first": 1}
    )
    async with http.get(url, params={"findBy": find_by}) as r:
        with pytest.raises(ValueError):
            json.loads(await r.text())
    await sim_control.add_fault(
        {"target": "north", "action": {"type": "http_error", "status": 503}, "first": 1}
    )
    async with http.get(url, params={"findBy": find_by}) as r:
        assert r.status == 503
    await sim_control.update_dispute(cases[1], status="ARBITRATION")  # an unknown status value
    statuses = {d["status"] for d in (await get_json(http, url, findBy=find_by))["data"]["disputes"]}
    assert "ARBITRATION" in statuses


async def test_dispute_needs_a_real_transaction(sim_control: SimControl) -> None:
    from tests.support.sim import SimControlError

    with pytest.raises(SimControlError) as err:
        await sim_control.create_dispute(next_tran_nbr())
    assert err.value.status == 404


def test_restart_keeps_ports_and_loses_state() -> None:
    with start_simulator(seed=5) as sim:
        url = sim.server_post_url
        ctl = sim.control_url
        sim.control("POST", "/_sim/faults", {"action": {"type": "http_error"}})
        assert len(sim.control("GET", "/_sim/faults")["faults"]) == 1
        old_pid = sim.pid
        sim.kill()
        assert not sim.alive()
        sim.restart()
        assert sim.alive() and sim.pid != old_pid
        assert (sim.server_post_url, sim.control_url) == (url, ctl)
        assert sim.control("GET", "/_sim/faults")["faults"] == []
        assert sim.control("GET", "/_sim/health")["seed"] == 5
    assert not sim.alive()


def test_https_with_a_test_ca_and_a_ledger_file(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    args = ["--tls-self-signed", str(tmp_path / "pki"), "--ledger-file", str(ledger)]
    with start_simulator(extra_args=args) as sim:
        assert sim.server_post_url.startswith("https://") and sim.ca_file
        assert sim.env()["PAYCORE_EPX_CA_FILE"] == sim.ca_file

        async def go() -> dict[str, str]:
            ctx = ssl.create_default_context(cafile=sim.ca_file)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
                _, out = await post(http, sim.server_post_url, form("CCE1", "3.00", **VISA))
                return out

        import asyncio

        assert asyncio.run(go())["AUTH_RESP"] == "00"
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert lines and lines[-1]["auth_resp"] == "00"
    assert "4111111111111111" not in ledger.read_text()


@pytest.mark.parametrize("host", ["secure.epxnow.com", "api.north.com"])
def test_refuses_production_hosts(host: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "paycore.epx_sim", "--public-host", host, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "production" in proc.stderr


def test_refuses_paycore_env_production() -> None:
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "paycore.epx_sim", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PAYCORE_ENV": "production"},
    )
    assert proc.returncode == 2
