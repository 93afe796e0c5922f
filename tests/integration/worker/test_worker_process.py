"""`paycore worker` processes: killed with SIGKILL mid-job (the lease lapses, another worker runs the
job again and it completes exactly once) and stopped with SIGTERM (held jobs released)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.integration.worker.conftest import WORKER_ENV, runs
from tests.integration.worker.process import WorkerProcess
from tests.support.stack import stack_env

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("worker_process")]

MODULE = "tests.integration.worker.jobs_for_tests"


@pytest.fixture
def env(clean_db, epx_sim):
    return stack_env(
        clean_db,
        epx_sim,
        **WORKER_ENV,
        PAYCORE_SHUTDOWN_TIMEOUT="6s",
        PAYCORE_RECONCILE_INTERVAL="1h",
        PAYCORE_WEBHOOK_POLL_INTERVAL="1h",
        PAYCORE_DISPUTE_SYNC_INTERVAL="1h",
    )


async def until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_worker_killed_mid_job_the_job_reruns_and_completes_once(make_container, env):
    container = await make_container()
    async with container.db.transaction() as con:
        job_id = await container.jobs.enqueue(con, "test.slow", {"key": "k9", "sleep": 2})
    first = WorkerProcess(env, module=MODULE, args=()).start()
    try:

        async def started():
            return [r for r in await runs(container) if r["key"] == "k9" and r["phase"] == "started"]

        [_started_run] = await until(started)
        first.kill()  # SIGKILL: no release, no settle
    finally:
        first.kill()
    row = await container.jobs.get(job_id)
    assert row["status"] == "running" and row["attempts"] == 1
    second = WorkerProcess(env, module=MODULE, args=()).start()
    try:

        async def succeeded():
            row = await container.jobs.get(job_id)
            return row if row["status"] == "succeeded" else None

        row = await until(succeeded)
    finally:
        second.terminate()
    phases = [(r["phase"], r["attempt"], r["worker"]) for r in await runs(container) if r["key"] == "k9"]
    assert [p for p, _, _ in phases] == ["started", "started", "finished"]
    assert phases[0][2] != phases[1][2]  # two different processes
    assert row["attempts"] == 2 and row["finished_at"] is not None


async def test_sigterm_releases_held_jobs_and_exits_cleanly(make_container, env):
    container = await make_container()
    async with container.db.transaction() as con:
        job_id = await container.jobs.enqueue(con, "test.slow", {"key": "term", "sleep": 60})
    worker = WorkerProcess(env, module=MODULE, args=()).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(worker.metrics_url + "/readyz") as resp:
                assert resp.status == 200

            async def started():
                return [r for r in await runs(container) if r["key"] == "term"]

            await until(started)
            async with http.get(worker.metrics_url + "/metrics") as resp:
                text = await resp.text()
            assert "job_queue_depth" in text or "job_duration_seconds" in text
        began = time.monotonic()
        code = await asyncio.to_thread(worker.terminate, 20)
        assert code == 0, worker.stderr_text()[-2000:]
        assert time.monotonic() - began < 6
    finally:
        worker.kill()
    row = await container.jobs.get(job_id)
    assert row["status"] == "queued" and row["attempts"] == 0 and row["locked_by"] is None
