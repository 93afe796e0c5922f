"""RES-M1: `TaskSupervisor` tracks every background task, exports it and finds leaks."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from paycore.platform.tasks import TaskSupervisor

pytestmark = pytest.mark.unit


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_spawned_task_is_tracked_in_the_gauge_until_done() -> None:
    tasks = TaskSupervisor()
    before = sample("tracked_tasks", type="unit.gauge")
    release = asyncio.Event()
    task = tasks.spawn("unit.gauge", release.wait())
    assert tasks.count("unit.gauge") == 1
    assert sample("tracked_tasks", type="unit.gauge") == before + 1
    release.set()
    await task
    await asyncio.sleep(0)
    assert tasks.count("unit.gauge") == 0
    assert sample("tracked_tasks", type="unit.gauge") == before


async def test_a_leaked_sleeper_appears_in_long_running_tasks() -> None:
    now = [1000.0]
    tasks = TaskSupervisor(clock=lambda: now[0])
    sleeper = tasks.spawn("unit.sleeper", asyncio.sleep(3600))
    tasks.periodic("unit.periodic", 3600, asyncio.sleep, initial_delay=3600)  # periodic: never counted
    tasks.check_leaks(100)
    assert sample("long_running_tasks", type="unit.sleeper") == 0
    now[0] += 601
    tasks.check_leaks(100)
    assert tasks.long_running(600) == {"unit.sleeper": 1}
    assert sample("long_running_tasks", type="unit.sleeper") == 1
    assert sample("long_running_tasks", type="unit.periodic") == 0
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)
    await asyncio.sleep(0)  # the supervisor's done-callback
    tasks.check_leaks(100)
    assert sample("long_running_tasks", type="unit.sleeper") == 0
    await tasks.cancel_all()


async def test_task_count_above_the_baseline_is_a_suspected_leak() -> None:
    tasks = TaskSupervisor()
    assert tasks.check_leaks(3) == 0  # the first call takes the baseline
    leaks_before = sample("asyncio_task_leaks_detected_total")
    strays = [asyncio.get_running_loop().create_task(asyncio.sleep(3600)) for _ in range(5)]
    with capture_logs() as logs:
        assert tasks.check_leaks(3) == 5
    assert sample("asyncio_task_leaks_detected_total") == leaks_before + 1
    assert any(entry["event"] == "task_leak_suspected" for entry in logs)
    assert sample("asyncio_tasks") >= 5
    for stray in strays:
        stray.cancel()
    await asyncio.gather(*strays, return_exceptions=True)


async def test_a_failing_spawned_coroutine_is_logged() -> None:
    tasks = TaskSupervisor()

    async def boom() -> None:
        raise ValueError("broken")

    with capture_logs() as logs:
        task = tasks.spawn("unit.boom", boom())
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    [entry] = [e for e in logs if e["event"] == "background_task_failed"]
    assert entry["type"] == "unit.boom" and entry["error"] == "ValueError"


async def test_cancel_all_ends_every_periodic_task_within_a_second() -> None:
    tasks = TaskSupervisor()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    for i in range(10):
        tasks.periodic(f"unit.periodic{i}", 0.01, tick)
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    await tasks.cancel_all(timeout=1.0)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert tasks.count() == 0 and ticks > 0
    with pytest.raises(RuntimeError):
        tasks.spawn("unit.late", asyncio.sleep(0))
