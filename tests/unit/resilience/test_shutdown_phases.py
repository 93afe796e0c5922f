"""RES-M2: the shutdown phase runner and the drain deadline.

* `run_phase` abandons a hung phase at its deadline, counts it in
  `shutdown_errors_total{component=…}` and returns, so the phases after it still run (the lifespan
  runs them one after another: drain_requests → background_tasks → rate_limits).
* At the drain deadline the requests still running are cancelled (a request sleeping in a retry
  backoff must not hold the shutdown), then the server is told to stop.

No timing assertions: deadlines are short so the tests are quick, but only outcomes are checked."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from paycore.platform.shutdown import Lifecycle, _drain_then, run_phase

pytestmark = pytest.mark.unit


def errors(component: str) -> float:
    return REGISTRY.get_sample_value("shutdown_errors_total", {"component": component}) or 0.0


def durations(component: str) -> float:
    return (
        REGISTRY.get_sample_value("component_shutdown_duration_seconds_count", {"component": component})
        or 0.0
    )


async def test_hung_component_abandoned() -> None:
    ran: list[str] = []
    hung_cancelled = asyncio.Event()
    before = {c: errors(c) for c in ("unit.first", "unit.hung", "unit.after")}
    hung_durations = durations("unit.hung")

    async def first() -> None:
        ran.append("first")

    async def hung() -> None:
        ran.append("hung")
        try:
            await asyncio.Event().wait()  # never set: a component that does not stop
        finally:
            hung_cancelled.set()

    async def after() -> None:
        ran.append("after")

    with capture_logs() as logs:
        await run_phase("unit.first", first, 5.0)
        await run_phase("unit.hung", hung, 0.05)
        await run_phase("unit.after", after, 5.0)

    assert ran == ["first", "hung", "after"], "a phase after the hung one did not run"
    assert hung_cancelled.is_set(), "the hung phase was not cut at its deadline"
    assert errors("unit.hung") == before["unit.hung"] + 1
    assert errors("unit.first") == before["unit.first"]
    assert errors("unit.after") == before["unit.after"]
    assert durations("unit.hung") == hung_durations + 1  # component_shutdown_duration_seconds
    timeouts = [e for e in logs if e["event"] == "shutdown_phase_timeout"]
    assert [(e["component"], e["log_level"]) for e in timeouts] == [("unit.hung", "error")]


async def test_failing_component_is_counted_and_the_next_phase_runs() -> None:
    before = errors("unit.failing")
    ran: list[str] = []

    async def failing() -> None:
        raise ConnectionResetError("pool already gone")

    async def after() -> None:
        ran.append("after")

    with capture_logs() as logs:
        await run_phase("unit.failing", failing, 5.0)
        await run_phase("unit.after_failing", after, 5.0)

    assert ran == ["after"]
    assert errors("unit.failing") == before + 1
    assert any(e["event"] == "shutdown_phase_failed" and e["error"] == "ConnectionResetError" for e in logs)


async def test_cancelling_the_shutdown_itself_is_not_swallowed() -> None:
    """A phase runner that ate `CancelledError` would make a second SIGTERM powerless."""
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    shutdown = asyncio.create_task(run_phase("unit.cancelled", slow, 60.0))
    await started.wait()
    shutdown.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shutdown


async def _request(lifecycle: Lifecycle, work: asyncio.Event, seen: list[str]) -> str:
    """What the request envelope does around a handler: started → the handler → finished."""
    lifecycle.request_started()
    try:
        await work.wait()  # e.g. a retry backoff, or a gateway call
        return "answered"
    except asyncio.CancelledError as exc:
        seen.append(str(exc.args[0]) if exc.args else "")
        raise
    finally:
        lifecycle.request_finished()


async def test_requests_still_running_at_the_drain_deadline_are_cancelled() -> None:
    lifecycle = Lifecycle()
    stopped = asyncio.Event()
    seen: list[str] = []
    never = asyncio.Event()
    requests = [asyncio.create_task(_request(lifecycle, never, seen)) for _ in range(3)]
    await asyncio.sleep(0)  # the requests have started
    assert lifecycle.in_flight == 3

    with capture_logs() as logs:
        on_signal = _drain_then(lifecycle, 0.0, 0.05, stopped.set)
        on_signal()  # SIGTERM
        await stopped.wait()

    assert lifecycle.draining
    assert all(r.cancelled() for r in requests), "a request outlived the drain deadline"
    assert seen == ["shutdown: drain deadline"] * 3
    assert lifecycle.in_flight == 0
    assert any(e["event"] == "shutdown_drain_deadline" and e["in_flight"] == 3 for e in logs)


async def test_requests_finishing_within_the_drain_are_not_cancelled() -> None:
    lifecycle = Lifecycle()
    stopped = asyncio.Event()
    seen: list[str] = []
    done = asyncio.Event()
    request = asyncio.create_task(_request(lifecycle, done, seen))
    await asyncio.sleep(0)

    on_signal = _drain_then(lifecycle, 0.0, 30.0, stopped.set)
    on_signal()
    await asyncio.sleep(0)
    assert lifecycle.draining and not stopped.is_set()  # waiting for the request
    done.set()
    await stopped.wait()

    assert await request == "answered" and seen == []
