"""The job queue and the worker against the real PostgreSQL: transactional enqueue, claims,
retries, timeouts, leases, schedules, several workers racing and graceful stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from paycore.platform.context import traceparent_var
from paycore.platform.jobs import JobDefinition
from paycore.worker import Worker
from tests.integration.worker.conftest import runs
from tests.integration.worker.jobs_for_tests import ON_DEMAND, tick

pytestmark = pytest.mark.integration


async def enqueue(container, name, payload, **kw):
    async with container.db.transaction() as con:
        return await container.jobs.enqueue(con, name, payload, **kw)


async def wait_for(predicate, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached in time")


async def job_row(container, job_id):
    return await container.jobs.get(job_id)


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def start(worker: Worker) -> asyncio.Task:
    await worker.start()
    return asyncio.create_task(worker.run())


async def stop(worker: Worker, task: asyncio.Task, grace: float = 5.0) -> dict:
    result = await worker.shutdown(grace)
    await asyncio.wait_for(task, 5)
    return result


async def test_enqueue_commits_with_the_callers_transaction(make_container):
    container = await make_container()
    with pytest.raises(RuntimeError):
        async with container.db.transaction() as con:
            rolled_back = await container.jobs.enqueue(con, "test.record", {"key": "a"})
            raise RuntimeError("the change failed")
    assert await job_row(container, rolled_back) is None
    kept = await enqueue(container, "test.record", {"key": "b"})
    row = await job_row(container, kept)
    assert row["status"] == "queued" and row["payload"] == {"key": "b"}


async def test_dedupe_key_while_pending_then_free_again(make_container):
    container = await make_container()
    first = await enqueue(container, "test.record", {"key": "1"}, dedupe_key="k")
    assert first is not None
    assert await enqueue(container, "test.record", {"key": "2"}, dedupe_key="k") is None
    assert await enqueue(container, "test.other", {}, dedupe_key="k") is not None  # another job name
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)
    await wait_for(lambda: _status_is(container, first, "succeeded"))
    await stop(worker, task)
    assert await enqueue(container, "test.record", {"key": "3"}, dedupe_key="k") is not None


async def _status_is(container, job_id, status):
    row = await job_row(container, job_id)
    return row is not None and row["status"] == status


async def test_job_runs_once_with_context_and_metrics(make_container):
    container = await make_container()
    before = sample("job_runs_total", job_name="test.record", status="success")
    token = traceparent_var.set("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    try:
        job_id = await enqueue(container, "test.record", {"key": "ctx"})
    finally:
        traceparent_var.reset(token)
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)
    await wait_for(lambda: _status_is(container, job_id, "succeeded"))
    await stop(worker, task)
    [run] = [r for r in await runs(container) if r["key"] == "ctx"]
    assert run["attempt"] == 1
    assert run["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert sample("job_runs_total", job_name="test.record", status="success") == before + 1
    assert sample("job_duration_seconds_count", job_name="test.record") >= 1


async def test_failed_job_is_retried_with_backoff_then_dead(make_container):
    container = await make_container()
    job_id = await enqueue(container, "test.failing", {"key": "f"})
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)
    await wait_for(lambda: _status_is(container, job_id, "dead"))
    await stop(worker, task)
    row = await job_row(container, job_id)
    assert row["attempts"] == 2  # the definition's max_attempts
    assert "RuntimeError: boom" in row["last_error"] and row["finished_at"] is not None
    attempts = [r["attempt"] for r in await runs(container) if r["key"] == "f"]
    assert attempts == [1, 2]
    assert sample("job_runs_total", job_name="test.failing", status="dead") >= 1


async def test_job_over_its_timeout_is_cancelled_and_retried(make_container):
    container = await make_container()
    job_id = await enqueue(container, "test.timeout", {"key": "t", "sleep": 5})
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)
    row = await wait_for(lambda: _row_if(container, job_id, lambda r: r["last_error"]))
    await stop(worker, task, grace=0.1)
    assert "timed out" in row["last_error"]
    assert not [r for r in await runs(container) if r["key"] == "t" and r["phase"] == "finished"]


async def _row_if(container, job_id, predicate):
    row = await job_row(container, job_id)
    return row if row is not None and predicate(row) else None


async def test_future_run_at_waits(make_container):
    container = await make_container()
    later = await enqueue(
        container, "test.record", {"key": "later"}, run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    now = await enqueue(container, "test.record", {"key": "now"})
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)
    await wait_for(lambda: _status_is(container, now, "succeeded"))
    await stop(worker, task)
    assert (await job_row(container, later))["status"] == "queued"


async def test_two_workers_racing_run_each_job_exactly_once(make_container):
    a = await make_container("a")
    b = await make_container("b")
    ids = []
    async with a.db.transaction() as con:
        for i in range(60):
            ids.append(await a.jobs.enqueue(con, "test.record", {"key": f"race-{i}"}))
    wa = Worker(a, ON_DEMAND, worker_id="a", concurrency=4)
    wb = Worker(b, ON_DEMAND, worker_id="b", concurrency=4)
    ta, tb = await start(wa), await start(wb)

    async def all_done():
        rows = [await job_row(a, i) for i in ids]
        return all(r["status"] == "succeeded" for r in rows)

    await wait_for(all_done, timeout=20)
    await stop(wa, ta)
    await stop(wb, tb)
    done = [r for r in await runs(a) if (r["key"] or "").startswith("race-")]
    keys = [r["key"] for r in done]
    assert sorted(keys) == sorted(f"race-{i}" for i in range(60))  # each exactly once
    assert {r["worker"] for r in done} == {"a", "b"}  # both took work


async def test_periodic_job_has_one_runner_per_period_across_workers(make_container):
    a = await make_container("a")
    b = await make_container("b")
    definitions = [JobDefinition("test.tick", tick, every=0.3)]
    wa = Worker(a, definitions, worker_id="a")
    wb = Worker(b, definitions, worker_id="b")
    ta, tb = await start(wa), await start(wb)
    await asyncio.sleep(2.0)
    await stop(wa, ta)
    await stop(wb, tb)
    ticks = [r for r in await runs(a) if r["job"] == "test.tick"]
    started = [r for r in ticks if r["phase"] == "started"]
    assert len(started) >= 3
    periods = [r["scheduled_for"] for r in started]
    assert len(periods) == len(set(periods))  # never two runs of the same period
    # runs never overlap: every start is followed by its finish before the next start
    phases = [r["phase"] for r in ticks]
    assert all(phases[i] != phases[i + 1] for i in range(len(phases) - 1)), phases


async def test_graceful_stop_finishes_short_jobs_and_releases_long_ones(make_container):
    container = await make_container()
    short = await enqueue(container, "test.slow", {"key": "short", "sleep": 0.2})
    long = await enqueue(container, "test.slow", {"key": "long", "sleep": 30})
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)

    async def both_started():
        return len([r for r in await runs(container) if r["phase"] == "started"]) == 2

    await wait_for(both_started)
    result = await stop(worker, task, grace=1.0)
    assert result == {"finished": 1, "released": 1}
    assert (await job_row(container, short))["status"] == "succeeded"
    released = await job_row(container, long)
    assert released["status"] == "queued" and released["attempts"] == 0 and released["locked_by"] is None
    assert worker.held == 0
    assert sample("job_runs_total", job_name="test.slow", status="released") >= 1


async def test_stopped_worker_releases_its_periodic_run(make_container):
    container = await make_container()
    definitions = [JobDefinition("test.slowtick", _sleepy, every=3600)]
    worker = Worker(container, definitions, worker_id="w1")
    task = await start(worker)
    await wait_for(lambda: _any_run(container, "test.slowtick"))
    await stop(worker, task, grace=0.1)
    other = Worker(container, definitions, worker_id="w2")
    # the released period is due again at once, not an hour later
    assert await other.tick() == 1
    await other.shutdown(0.1)


async def _sleepy(ctx, payload):
    from tests.integration.worker.jobs_for_tests import _record

    await _record(ctx, "test.slowtick", None, "started")
    await asyncio.sleep(30)


async def _any_run(container, job):
    return [r for r in await runs(container) if r["job"] == job]


async def test_lapsed_lease_is_reclaimed_by_another_worker(make_container):
    container = await make_container()
    job_id = await enqueue(container, "test.record", {"key": "lost"})
    # a worker claims it and dies at once (never renews, never settles)
    [claimed] = await container.jobs.claim(["test.record"], 1, "dead-worker", lease=0.3)
    assert claimed.id == job_id and claimed.attempt == 1
    other = Worker(container, ON_DEMAND, worker_id="w2")
    assert await other.tick() == 0  # still leased
    await asyncio.sleep(0.4)
    task = await start(other)
    await wait_for(lambda: _status_is(container, job_id, "succeeded"))
    await stop(other, task)
    [run] = [r for r in await runs(container) if r["key"] == "lost"]
    assert run["attempt"] == 2 and run["worker"] == "w1"
    assert sample("job_runs_total", job_name="test.record", status="lost") >= 1


async def test_heartbeat_keeps_a_long_job_leased(make_container):
    container = await make_container()
    job_id = await enqueue(container, "test.slow", {"key": "hb", "sleep": 2.5})  # lease is 1 s
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    task = await start(worker)
    await wait_for(lambda: _status_is(container, job_id, "succeeded"), timeout=10)
    await stop(worker, task)
    started = [r for r in await runs(container) if r["key"] == "hb" and r["phase"] == "started"]
    assert len(started) == 1


async def test_queue_depth_and_lag_gauges(make_container):
    container = await make_container()
    async with container.db.transaction() as con:
        for _ in range(3):
            await container.jobs.enqueue(
                con, "test.record", {}, run_at=datetime.now(UTC) - timedelta(seconds=30)
            )
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    await worker.sample()
    assert sample("job_queue_depth", job_name="test.record") == 3
    assert sample("job_lag_seconds", job_name="test.record") >= 29


async def test_unknown_job_names_are_left_for_other_workers(make_container):
    container = await make_container()
    job_id = await enqueue(container, "someone.else", {})
    worker = Worker(container, ON_DEMAND, worker_id="w1")
    assert await worker.tick() == 0
    assert (await job_row(container, job_id))["status"] == "queued"
    assert uuid.UUID(str(job_id))
