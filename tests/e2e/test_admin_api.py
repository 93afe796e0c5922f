"""End to end, against real `paycore serve` processes (2 server workers) and a real `paycore
worker`: a kill switch or a breaker command sent to whichever worker answers reaches every process
(NOTIFY), as their own answers, their `feature_flag_enabled` gauge files and their behaviour show."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from paycore.admin.repository import AdminRepository
from paycore.admin.service import AdminTokens
from paycore.config import load_settings
from paycore.platform.db.pool import create_database
from tests.e2e.conftest import _seed_merchant, serve_api
from tests.integration.webhooks.receiver import Receiver
from tests.integration.worker.process import WorkerProcess
from tests.support.stack import ServerProcess, stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("worker_process")]
# the tests poll both server workers on fresh connections: lift the admin limit per IP
NO_ADMIN_LIMIT = {"PAYCORE_ADMIN_RATE_LIMIT_RPS": "1000", "PAYCORE_ADMIN_RATE_LIMIT_BURST": "1000"}


async def _admin_token(env: dict[str, str]) -> str:
    settings = load_settings(env)
    db = await create_database(settings, env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        created = await AdminTokens(
            db, AdminRepository(db), token_secret=settings.api_key_secret
        ).create_token("e2e")
        return created.secret
    finally:
        await db.pool.close()


def _flag_per_process(directory: Path, flag: str) -> dict[int, float]:
    """Each process's own `feature_flag_enabled{flag}` file, read on its own."""
    values: dict[int, float] = {}
    for path in directory.glob("gauge_max_*.db"):
        pid = int(path.stem.split("_")[-1])
        alone = Path(tempfile.mkdtemp(prefix="paycore-one-process-"))
        try:
            shutil.copy(path, alone / path.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, str(alone))
            for line in generate_latest(registry).decode().splitlines():
                if line.startswith(f'feature_flag_enabled{{flag="{flag}"}}'):
                    values[pid] = float(line.rsplit(" ", 1)[1])
        finally:
            shutil.rmtree(alone)
    return values


async def _per_worker(
    url: str, path: str, admin: str, done: Callable[[dict[int, dict]], bool]
) -> dict[int, dict]:
    """GET `path` on fresh connections until both server workers answered and `done` holds."""
    answers: dict[int, dict] = {}
    for _ in range(100):
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=15)  # a stuck worker fails the test, not the suite's timer
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def one(session: aiohttp.ClientSession = http) -> dict:
                async with session.get(url + path, headers={"Authorization": f"Bearer {admin}"}) as r:
                    assert r.status == 200, await r.text()
                    return await r.json()

            for body in await asyncio.gather(*(one() for _ in range(8))):
                answers[body["pid"]] = body
        if len(answers) >= 2 and done(answers):
            return answers
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached on both workers: {answers}")


def _flag(body: dict, name: str) -> dict:
    return next(f for f in body["data"] if f["name"] == name)


async def test_a_flag_toggle_reaches_both_server_workers(clean_db, epx_sim, tmp_path: Path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = stack_env(
        clean_db,
        epx_sim,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        PAYCORE_DB_MAX_CONNS="5",
        **NO_ADMIN_LIMIT,
    )
    admin = await _admin_token(env)
    server = ServerProcess(env, workers=2)
    await asyncio.to_thread(server.start)
    try:
        before = await _per_worker(server.url, "/admin/v1/flags", admin, lambda a: True)
        workers = set(before)
        assert all(_flag(b, "webhooks")["effective"] for b in before.values())
        assert {
            pid: v for pid, v in _flag_per_process(metrics_dir, "webhooks").items() if pid in workers
        } == {pid: 1.0 for pid in workers}

        async with (
            aiohttp.ClientSession() as http,
            http.put(
                server.url + "/admin/v1/flags/webhooks",
                json={"enabled": False},
                headers={"Authorization": f"Bearer {admin}"},
            ) as r,
        ):
            assert r.status == 200 and (await r.json())["effective"] is False

        after = await _per_worker(
            server.url,
            "/admin/v1/flags",
            admin,
            lambda a: all(_flag(b, "webhooks")["effective"] is False for b in a.values()),
        )
        assert set(after) == workers  # the same two processes, each with the override applied
        for _ in range(100):
            per_process = _flag_per_process(metrics_dir, "webhooks")
            if all(per_process.get(pid) == 0.0 for pid in workers):
                break
            await asyncio.sleep(0.05)
        assert all(per_process[pid] == 0.0 for pid in workers), per_process
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
            assert 'feature_flag_enabled{flag="webhooks"} 0.0' in await r.text()
    finally:
        server.kill()


async def test_breaker_force_open_and_reset_reach_both_server_workers(clean_db, epx_sim, token):
    env = stack_env(clean_db, epx_sim, PAYCORE_DB_MAX_CONNS="5", **NO_ADMIN_LIMIT)
    _, api_key = await _seed_merchant(env)
    admin = await _admin_token(env)
    server = ServerProcess(env, workers=2)
    await asyncio.to_thread(server.start)
    try:
        auth = {"Authorization": f"Bearer {admin}"}
        await _per_worker(server.url, "/admin/v1/breakers", admin, lambda a: True)  # both workers serve
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.url + "/admin/v1/breakers/gateway_server_post/open", headers=auth) as r,
        ):
            assert r.status == 200 and (await r.json())["breaker"]["forced"] == "open"

        def server_post(body: dict) -> dict:
            return next(b for b in body["data"] if b["name"] == "gateway_server_post")

        await _per_worker(
            server.url,
            "/admin/v1/breakers",
            admin,
            lambda a: all(server_post(b)["state"] == "open" for b in a.values()),
        )
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(6):  # whichever worker answers: 424 at once, nothing sent to EPX
                async with http.post(
                    server.url + "/v1/payments",
                    json={"amount": 777, "currency": "USD", "token": token},
                    headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": uuid.uuid4().hex},
                ) as r:
                    assert r.status == 424 and (await r.json())["code"] == "gateway_unavailable"
            async with http.post(
                server.url + "/admin/v1/breakers/gateway_server_post/reset", headers=auth
            ) as r:
                assert r.status == 200
        await _per_worker(
            server.url,
            "/admin/v1/breakers",
            admin,
            lambda a: all(
                server_post(b)["state"] == "closed" and server_post(b)["forced"] is None for b in a.values()
            ),
        )
    finally:
        server.kill()


@pytest.fixture
async def api(clean_db, epx_sim):
    async with serve_api(clean_db, epx_sim, PAYCORE_WEBHOOK_ALLOW_PRIVATE="true") as served:
        yield served


async def test_webhook_kill_switch_holds_deliveries_in_the_worker_and_releases_the_backlog(api, http, token):
    """RES-11: webhooks off → payments succeed, outbox rows are written, the worker makes no
    delivery attempt; back on → the backlog is delivered. The switch is flipped on the API server;
    the separate `paycore worker` process follows through NOTIFY."""
    admin = await _admin_token(api.env)
    auth = {"Authorization": f"Bearer {admin}"}
    receiver = await Receiver().start()
    worker = None
    try:
        async with http.post(
            api.url + "/v1/webhook_endpoints",
            json={"url": receiver.url("/hook"), "enabled_events": ["payment.succeeded"]},
            headers=api.headers(),
        ) as r:
            assert r.status == 201
        worker = WorkerProcess(
            {
                **api.env,
                "PAYCORE_WEBHOOK_POLL_INTERVAL": "100ms",
                "PAYCORE_JOB_POLL_INTERVAL": "50ms",
            }
        )
        await asyncio.to_thread(worker.start)
        async with http.put(api.url + "/admin/v1/flags/webhooks", json={"enabled": False}, headers=auth) as r:
            assert r.status == 200
        for _ in range(100):  # the worker process heard it
            async with http.get(worker.metrics_url + "/metrics") as r:
                if 'feature_flag_enabled{flag="webhooks"} 0.0' in await r.text():
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the worker never applied the override")

        payment_ids = []
        for amount in (1001, 1002):
            async with http.post(
                api.url + "/v1/payments",
                json={"amount": amount, "currency": "USD", "token": token},
                headers=api.headers(uuid.uuid4().hex),
            ) as r:
                assert r.status == 201
                payment_ids.append((await r.json())["id"])
        con = await asyncpg.connect(api.env["DATABASE_URL"])
        try:
            for _ in range(60):  # the worker keeps dispatching the outbox into pending deliveries
                pending = await con.fetchval(
                    "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
                )
                if pending == 2:
                    break
                await asyncio.sleep(0.05)
            assert (
                await con.fetchval(
                    "SELECT count(*) FROM outbox_events WHERE event_type = 'payment.succeeded'"
                )
                == 2
            )
            await asyncio.sleep(1.0)  # ten delivery polls
            assert await con.fetchval("SELECT count(*) FROM webhook_delivery_attempts") == 0
            assert await con.fetchval("SELECT sum(attempts) FROM webhook_deliveries") == 0
            assert receiver.received == []

            async with http.delete(api.url + "/admin/v1/flags/webhooks", headers=auth) as r:
                assert r.status == 200 and (await r.json())["effective"] is True
            await receiver.wait_for(lambda: len(receiver.received) >= 2, timeout=20)
            delivered = {json.loads(got.body)["data"]["object"]["id"] for got in receiver.received}
            assert delivered == set(payment_ids)
        finally:
            await con.close()
        assert await asyncio.to_thread(worker.terminate, 30) == 0
    finally:
        if worker is not None:
            worker.kill()
        await receiver.stop()
