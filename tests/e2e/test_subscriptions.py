"""End to end: subscriptions over HTTP (`paycore serve`) billed by running `paycore worker`
processes against the simulator — two workers sharing the work, and a worker killed with SIGKILL
in the middle of a charge: every period is charged exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from tests.e2e.conftest import Api, _seed_merchant
from tests.integration.subscriptions.helpers import financial_bric
from tests.integration.worker.process import WorkerProcess
from tests.support.stack import ServerProcess, stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("worker_process")]

WORKER_ENV = {
    "PAYCORE_JOB_POLL_INTERVAL": "50ms",
    "PAYCORE_JOB_LEASE": "1s",
    "PAYCORE_BILLING_INTERVAL": "200ms",
    "PAYCORE_BILLING_LEASE": "2s",
    "PAYCORE_RECONCILE_INTERVAL": "500ms",
    "PAYCORE_RECONCILE_AFTER": "1s",
    "PAYCORE_WEBHOOK_POLL_INTERVAL": "1h",
    "PAYCORE_DISPUTE_SYNC_INTERVAL": "1h",
    "PAYCORE_SHUTDOWN_TIMEOUT": "6s",
}


@pytest.fixture
async def api(clean_db, epx_sim):
    env = stack_env(clean_db, epx_sim, **WORKER_ENV)
    _, api_key = await _seed_merchant(env)
    server = ServerProcess(env)
    await asyncio.to_thread(server.start)
    yield Api(server, api_key, env)
    server.kill()


async def until(predicate, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached in time")


async def save_card(api: Api, http, epx_sim, customer: str) -> str:
    token, _ = await financial_bric(epx_sim.server_post_url)
    async with http.post(
        api.url + f"/v1/customers/{customer}/payment_methods",
        json={"type": "card", "token": token, "billing": {"address": "1 Main St", "zip_code": "12345"}},
        headers=api.headers(uuid.uuid4().hex),
    ) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def create(api: Api, http, pm: str, amount: int, **extra) -> dict:
    body = {"amount": amount, "currency": "USD", "interval": "day", "payment_method_id": pm, **extra}
    async with http.post(
        api.url + "/v1/subscriptions", json=body, headers=api.headers(uuid.uuid4().hex)
    ) as r:
        assert r.status == 201, await r.text()
        created: dict = await r.json()
        return created


async def charges(api: Api, http, sub_id: str) -> list[dict]:
    async with http.get(api.url + f"/v1/subscriptions/{sub_id}/charges", headers=api.headers()) as r:
        assert r.status == 200, await r.text()
        data: list[dict] = (await r.json())["data"]
        return data


async def processed_sales(sim_control, tran_nbrs: set[int]) -> list[dict]:
    entries = await sim_control.ledger(tran_type="CCE1", processed=True)
    return [e for e in entries if e["tran_nbr"] in tran_nbrs]


async def tran_nbrs_of(api: Api, sub_id: str) -> set[int]:
    con = await asyncpg.connect(api.env["DATABASE_URL"])
    try:
        rows = await con.fetch(
            "SELECT tran_nbr FROM transactions WHERE subscription_id = $1", uuid.UUID(sub_id)
        )
        return {r["tran_nbr"] for r in rows}
    finally:
        await con.close()


async def test_subscriptions_api_over_http(api, http, epx_sim):
    pm = await save_card(api, http, epx_sim, "cus_http")
    body = {"amount": 1000, "currency": "USD", "interval": "month", "payment_method_id": pm}
    async with http.post(api.url + "/v1/subscriptions", json=body, headers=api.headers()) as r:
        assert r.status == 400 and (await r.json())["code"] == "idempotency_key_missing"
    async with http.post(
        api.url + "/v1/subscriptions", json={**body, "interval": "fortnight"}, headers=api.headers("k0")
    ) as r:
        assert r.status in (400, 422), await r.text()
    async with http.post(api.url + "/v1/subscriptions", json=body, headers=api.headers("k1")) as r:
        assert r.status == 201
        sub = await r.json()
    async with http.post(api.url + "/v1/subscriptions", json=body, headers=api.headers("k1")) as r:
        assert r.status == 201 and r.headers["Idempotent-Replayed"] == "true"
        assert (await r.json())["id"] == sub["id"]
    sid = sub["id"]
    async with http.patch(
        api.url + f"/v1/subscriptions/{sid}", json={"amount": 1500}, headers=api.headers()
    ) as r:
        assert r.status == 200 and (await r.json())["pending_update"]["amount"] == 1500
    async with http.post(
        api.url + f"/v1/subscriptions/{sid}/update", json={"interval_count": 2}, headers=api.headers()
    ) as r:
        patched = await r.json()
        assert r.status == 200 and patched["pending_update"]["interval_count"] == 2
        assert patched["pending_update"]["amount"] == 1500
    async with http.post(api.url + f"/v1/subscriptions/{sid}/pause", headers=api.headers()) as r:
        assert r.status == 200 and (await r.json())["status"] == "paused"
    async with http.get(api.url + "/v1/subscriptions?status=paused", headers=api.headers()) as r:
        assert [s["id"] for s in (await r.json())["data"]] == [sid]
    async with http.get(api.url + "/v1/subscriptions?status=nope", headers=api.headers()) as r:
        assert r.status == 400
    async with http.post(api.url + f"/v1/subscriptions/{sid}/resume", headers=api.headers()) as r:
        assert r.status == 200 and (await r.json())["status"] == "active"
    async with http.post(
        api.url + f"/v1/subscriptions/{sid}/cancel", json={"at_period_end": False}, headers=api.headers()
    ) as r:
        assert r.status == 200 and (await r.json())["status"] == "canceled"
    async with http.post(api.url + f"/v1/subscriptions/{sid}/pause", headers=api.headers()) as r:
        assert r.status == 409 and (await r.json())["code"] == "subscription_canceled"
    async with http.get(api.url + f"/v1/subscriptions/{uuid.uuid4()}", headers=api.headers()) as r:
        assert r.status == 404 and (await r.json())["code"] == "subscription_not_found"
    async with http.get(api.url + "/openapi.json") as r:
        paths = (await r.json())["paths"]
    create_op = paths["/v1/subscriptions"]["post"]
    assert {"name": "Idempotency-Key", "required": True}.items() <= next(
        p for p in create_op["parameters"] if p["name"] == "Idempotency-Key"
    ).items()
    for path in (
        "/v1/subscriptions/{subscription_id}",
        "/v1/subscriptions/{subscription_id}/charges",
        "/v1/subscriptions/{subscription_id}/update",
        "/v1/subscriptions/{subscription_id}/pause",
        "/v1/subscriptions/{subscription_id}/resume",
        "/v1/subscriptions/{subscription_id}/cancel",
    ):
        for method, operation in paths[path].items():
            assert operation["summary"] and "404" in operation["responses"], (path, method)


async def test_two_workers_bill_each_subscription_once(api, http, epx_sim, sim_control):
    pm = await save_card(api, http, epx_sim, "cus_two_workers")
    subs = [await create(api, http, pm, 3000 + i) for i in range(8)]
    workers = [WorkerProcess(api.env), WorkerProcess(api.env)]
    try:
        await asyncio.gather(*(asyncio.to_thread(w.start) for w in workers))

        async def all_billed():
            got = [await charges(api, http, s["id"]) for s in subs]
            return got if all(c and c[0]["status"] == "approved" for c in got) else None

        billed = await until(all_billed)
        await asyncio.sleep(1.0)  # more billing runs: nothing is due any more
        for sub, attempts in zip(subs, billed, strict=True):
            assert [(c["period_index"], c["attempt"], c["status"]) for c in attempts] == [(0, 1, "approved")]
            assert [(c["period_index"], c["attempt"]) for c in await charges(api, http, sub["id"])] == [
                (0, 1)
            ]
            assert len(await processed_sales(sim_control, await tran_nbrs_of(api, sub["id"]))) == 1
            async with http.get(
                api.url + f"/v1/payments/{attempts[0]['payment_id']}", headers=api.headers()
            ) as r:
                payment = await r.json()
            assert payment["status"] == "approved" and payment["amount"] == sub["amount"]
            assert payment["payment_method_id"] == pm
    finally:
        for w in workers:
            await asyncio.to_thread(w.terminate, 30)


async def test_a_worker_killed_mid_charge_never_charges_twice(api, http, epx_sim, sim_control):
    pm = await save_card(api, http, epx_sim, "cus_killed")
    # the gateway processes this charge and never answers: the worker is stuck mid-charge
    await sim_control.add_fault(
        {"match": {"amount": "44.44"}, "action": {"type": "process_then_fail", "fail": "hang"}, "first": 1}
    )
    sub = await create(api, http, pm, 4444)
    first = WorkerProcess(api.env)
    await asyncio.to_thread(first.start)
    try:

        async def pending_payment():
            return await tran_nbrs_of(api, sub["id"])

        [tran_nbr] = await until(pending_payment, interval=0.02)

        async def at_the_gateway():
            return await processed_sales(sim_control, {tran_nbr})

        await until(at_the_gateway, interval=0.02)
        first.kill()  # SIGKILL between the pending payment and its outcome
    finally:
        first.kill()
    [attempt] = await charges(api, http, sub["id"])
    assert attempt["status"] == "pending"
    second = WorkerProcess(api.env)
    await asyncio.to_thread(second.start)
    try:

        async def settled():
            got = await charges(api, http, sub["id"])
            return got if got and got[0]["status"] != "pending" else None

        [attempt] = await until(settled)
        await asyncio.sleep(1.0)
    finally:
        await asyncio.to_thread(second.terminate, 30)
    assert (attempt["attempt"], attempt["status"]) == (1, "approved")  # reconciled, not charged again
    assert len(await charges(api, http, sub["id"])) == 1
    assert await tran_nbrs_of(api, sub["id"]) == {tran_nbr}
    assert len(await processed_sales(sim_control, {tran_nbr})) == 1
    async with http.get(api.url + f"/v1/subscriptions/{sub['id']}", headers=api.headers()) as r:
        state = await r.json()
    assert state["status"] == "active" and state["current_period_end"] is not None
