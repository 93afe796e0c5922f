"""CRITICAL-3: circuit-breaker transitions with a fake monotonic clock."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from paycore.config import load_settings
from paycore.gateway.port import CircuitOpenError
from paycore.platform.resilience.breaker import (
    GATEWAY_SERVER_POST,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
)

pytestmark = pytest.mark.unit

_names = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(rate: float = 0.6, **kw: object) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    name = str(kw.pop("name", f"test_breaker_{next(_names)}"))
    breaker = CircuitBreaker(name, failure_rate=rate, clock=clock, **kw)  # type: ignore[arg-type]
    return breaker, clock


def succeed(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        breaker.acquire().success()


def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        breaker.acquire().failure()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.failure_threshold)
    assert breaker.state is BreakerState.OPEN


# --- closed ----------------------------------------------------------------------------------------
def test_initial_state_is_closed() -> None:
    breaker, _ = make()
    assert breaker.state is BreakerState.CLOSED
    assert sample("circuit_breaker_state", {"name": breaker.name}) == 0


def test_successes_keep_it_closed() -> None:
    breaker, _ = make()
    succeed(breaker, 1000)
    assert breaker.state is BreakerState.CLOSED


def test_five_consecutive_failures_open() -> None:
    breaker, _ = make()
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN


def test_success_resets_the_consecutive_count() -> None:
    breaker, _ = make()
    for _ in range(10):
        fail(breaker, 4)
        succeed(breaker, 6)  # keeps the rate at or below 40 %, under the 60 % rule
    assert breaker.state is BreakerState.CLOSED


def test_twelve_failures_in_twenty_without_a_run_of_five_open() -> None:
    breaker, _ = make(rate=0.6)
    pattern = "SSFFF" * 4  # 12 failures in 20, longest run 3
    for i, step in enumerate(pattern, start=1):
        (breaker.acquire().failure if step == "F" else breaker.acquire().success)()
        expected = BreakerState.OPEN if i == 20 else BreakerState.CLOSED
        assert breaker.state is expected, i


def test_rate_rule_evaluated_when_window_fills_on_a_success() -> None:
    breaker, _ = make(rate=0.6)
    for step in "FFFSFFFSFFFSFFFSFFSS":  # 14 F / 20, the 20th call is a success
        (breaker.acquire().failure if step == "F" else breaker.acquire().success)()
    assert breaker.state is BreakerState.OPEN


def test_eleven_failures_in_twenty_stay_closed_on_the_gateway_rate() -> None:
    breaker, _ = make(rate=0.6)
    for step in "FFFSS" * 3 + "FFSSS":  # 11 failures
        (breaker.acquire().failure if step == "F" else breaker.acquire().success)()
    assert breaker.state is BreakerState.CLOSED


def test_non_gateway_rate_is_fifty_percent() -> None:
    breaker, _ = make(rate=0.5)
    for step in "FFSS" * 5:  # 10 failures in 20
        (breaker.acquire().failure if step == "F" else breaker.acquire().success)()
    assert breaker.state is BreakerState.OPEN


def test_rate_rule_needs_a_full_window() -> None:
    breaker, _ = make(rate=0.6)
    for step in "FFFFSFFFFSFFFFSFFFF":  # 16 of 19 failed, no run of 5: window not full yet
        (breaker.acquire().failure if step == "F" else breaker.acquire().success)()
    assert breaker.state is BreakerState.CLOSED
    succeed(breaker)  # 20th call fills the window at 80 %
    assert breaker.state is BreakerState.OPEN


def test_window_slides() -> None:
    breaker, _ = make(rate=0.6)
    succeed(breaker, 20)
    for step in "FFFFS" * 2 + "FFFSS":  # 8 + 3 = 11 failures in the last 20
        (breaker.acquire().failure if step == "F" else breaker.acquire().success)()
    assert breaker.state is BreakerState.CLOSED
    snap = breaker.snapshot()
    assert snap.window_calls == 20 and snap.window_failures == 11


# --- open -------------------------------------------------------------------------------------------
def test_open_rejects_fast_and_counts_rejected() -> None:
    breaker, _ = make()
    trip(breaker)
    before = sample(
        "circuit_breaker_requests_total", {"name": breaker.name, "state": "open", "result": "rejected"}
    )
    started = time.perf_counter()
    for _ in range(1000):
        with pytest.raises(CircuitOpenError) as info:
            breaker.acquire()
    per_call = (time.perf_counter() - started) / 1000
    assert per_call < 0.001
    assert info.value.name == breaker.name
    after = sample(
        "circuit_breaker_requests_total", {"name": breaker.name, "state": "open", "result": "rejected"}
    )
    assert after - before == 1000


def test_open_until_timeout_then_half_open() -> None:
    breaker, clock = make(open_timeout=30.0)
    trip(breaker)
    clock.advance(29.9)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert sample("circuit_breaker_state", {"name": breaker.name}) == 2


# --- half-open --------------------------------------------------------------------------------------
def test_half_open_admits_three_probes_and_rejects_the_fourth() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    probes = [breaker.acquire() for _ in range(3)]
    assert all(p.is_probe for p in probes)
    before = sample(
        "circuit_breaker_requests_total", {"name": breaker.name, "state": "half_open", "result": "rejected"}
    )
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    after = sample(
        "circuit_breaker_requests_total", {"name": breaker.name, "state": "half_open", "result": "rejected"}
    )
    assert after - before == 1
    for p in probes[:2]:
        p.success()
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpenError):  # completed probes do not free slots
        breaker.acquire()
    probes[2].success()
    assert breaker.state is BreakerState.CLOSED


def test_three_probe_successes_close_it() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    succeed(breaker, 3)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 4)  # counters were cleared on closing
    assert breaker.state is BreakerState.CLOSED


def test_probe_failure_reopens_and_restarts_the_timer() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    first = breaker.acquire()
    second = breaker.acquire()
    first.success()
    second.failure()
    assert breaker.state is BreakerState.OPEN
    clock.advance(29)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_neutral_probe_frees_its_slot() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    probes = [breaker.acquire() for _ in range(3)]
    probes[0].release()
    extra = breaker.acquire()  # the released slot is reusable
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    for p in (*probes[1:], extra):
        p.success()
    assert breaker.state is BreakerState.CLOSED


def test_stale_permits_do_not_move_the_state_machine() -> None:
    breaker, clock = make()
    slow = [breaker.acquire() for _ in range(3)]  # admitted while closed
    trip(breaker)
    for p in slow:
        p.failure()  # late: ignored (already open)
    clock.advance(30)
    probe = breaker.acquire()
    late_closed = breaker.acquire()  # a second probe
    probe.success()
    late_closed.success()
    assert breaker.state is BreakerState.HALF_OPEN
    succeed(breaker)
    assert breaker.state is BreakerState.CLOSED


def test_permit_records_only_once() -> None:
    breaker, _ = make()
    permit = breaker.acquire()
    permit.failure()
    permit.success()
    permit.failure()
    assert permit.done
    assert breaker.snapshot().consecutive_failures == 1


# --- manual overrides, kill switch ----------------------------------------------------------------
def test_reset_returns_to_clean_closed() -> None:
    breaker, _ = make()
    trip(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().consecutive_failures == 0
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_force_open_pins_until_reset() -> None:
    breaker, clock = make()
    breaker.force_open()
    clock.advance(3600)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert breaker.snapshot().forced == "open"
    breaker.reset()
    succeed(breaker)
    assert breaker.state is BreakerState.CLOSED and breaker.forced is None


def test_force_closed_never_trips_until_reset() -> None:
    breaker, _ = make()
    trip(breaker)
    breaker.force_closed()
    fail(breaker, 50)
    assert breaker.state is BreakerState.CLOSED
    breaker.reset()
    fail(breaker, 5)
    assert breaker.state is BreakerState.OPEN


def test_disabled_breaker_is_a_pass_through() -> None:
    breaker, _ = make(enabled=False)
    fail(breaker, 100)
    assert breaker.state is BreakerState.CLOSED
    breaker.enabled = True
    breaker.force_open()
    breaker.enabled = False
    permit = breaker.acquire()  # kill switch wins even over a forced open
    permit.failure()


# --- context managers -------------------------------------------------------------------------------
def test_context_manager_records_failure_on_exception() -> None:
    breaker, _ = make()
    for _ in range(5):
        with pytest.raises(RuntimeError), breaker.call():
            raise RuntimeError("boom")
    assert breaker.state is BreakerState.OPEN


async def test_async_context_manager_success_and_cancellation() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)

    async def cancelled_probe() -> None:
        async with breaker.call():
            await asyncio.sleep(10)

    task = asyncio.create_task(cancelled_probe())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the cancelled probe released its slot: three fresh probes fit
    for _ in range(3):
        async with breaker.call() as permit:
            assert permit.is_probe
    assert breaker.state is BreakerState.CLOSED


async def test_explicit_record_inside_block_wins() -> None:
    breaker, _ = make()
    for _ in range(5):
        async with breaker.call() as permit:
            permit.failure()  # e.g. an HTTP 503 that raised nothing
    assert breaker.state is BreakerState.OPEN


# --- concurrency ----------------------------------------------------------------------------------
async def test_one_hundred_concurrent_callers_half_open() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    admitted = 0
    rejected = 0

    async def caller() -> None:
        nonlocal admitted, rejected
        try:
            permit = breaker.acquire()
        except CircuitOpenError:
            rejected += 1
            return
        admitted += 1
        await asyncio.sleep(0.001)
        permit.success()

    await asyncio.gather(*(caller() for _ in range(100)))
    assert (admitted, rejected) == (3, 97)
    assert breaker.state is BreakerState.CLOSED


async def test_one_hundred_concurrent_failing_callers_open_once() -> None:
    breaker, _ = make()
    opens = "circuit_breaker_opens_total"
    before = sample(opens, {"name": breaker.name})

    async def caller(i: int) -> None:
        try:
            permit = breaker.acquire()
        except CircuitOpenError:
            return
        await asyncio.sleep(0.001 * (i % 7))
        permit.failure()

    await asyncio.gather(*(caller(i) for i in range(100)))
    assert breaker.state is BreakerState.OPEN
    assert sample(opens, {"name": breaker.name}) - before == 1
    error_total = sample(
        "circuit_breaker_requests_total", {"name": breaker.name, "state": "closed", "result": "error"}
    )
    assert error_total == 100  # late results are still counted in the metrics


# --- observability --------------------------------------------------------------------------------
def test_transitions_logged_at_warn_and_exported() -> None:
    breaker, clock = make()
    with capture_logs() as logs:
        trip(breaker)
        clock.advance(30)
        succeed(breaker, 3)
    events = [e for e in logs if e["event"] == "circuit_breaker_transition"]
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert all(e["log_level"] == "warning" and e["breaker"] == breaker.name for e in events)
    for src, dst in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        labels = {"name": breaker.name, "from_state": src, "to_state": dst}
        assert sample("circuit_breaker_transitions_total", labels) == 1
    assert sample("circuit_breaker_opens_total", {"name": breaker.name}) == 1


def test_server_post_breaker_exports_the_epx_alias() -> None:
    breaker = CircuitBreaker(GATEWAY_SERVER_POST, clock=FakeClock())
    breaker.force_open()
    assert sample("epx_circuit_breaker_state", {}) == 1
    breaker.reset()
    assert sample("epx_circuit_breaker_state", {}) == 0


# --- registry -------------------------------------------------------------------------------------
def test_registry_from_settings() -> None:
    settings = load_settings({"PAYCORE_ENV": "test"})
    registry = BreakerRegistry.from_settings(settings, clock=FakeClock())
    assert registry.names() == sorted(
        ["gateway_server_post", "gateway_bric_storage", "gateway_key_exchange", "reporting_api"]
    )
    assert registry["gateway_server_post"].failure_rate == 0.6
    assert registry["gateway_key_exchange"].failure_rate == 0.6
    assert registry["reporting_api"].failure_rate == 0.5
    assert all(b.failure_threshold == 5 and b.window == 20 and b.half_open_probes == 3 for b in registry)
    assert all(b.open_timeout == 30.0 for b in registry)
    registry.get("reporting_api").force_open()
    snapshot = {s.name: s for s in registry.snapshot()}
    assert snapshot["reporting_api"].state == "open" and snapshot["reporting_api"].forced == "open"
    assert snapshot["gateway_server_post"].state == "closed"
    registry.set_enabled(False)
    assert not any(b.enabled for b in registry)
    registry["reporting_api"].acquire()  # pass-through while disabled
    with pytest.raises(ValueError):
        registry.add(CircuitBreaker("reporting_api"))
    assert "reporting_api" in registry and len(registry) == 4
    registry["reporting_api"].reset()


def test_invalid_configuration_refused() -> None:
    for kwargs in ({"failure_threshold": 0}, {"window": 0}, {"half_open_probes": 0}, {"failure_rate": 1.5}):
        with pytest.raises(ValueError):
            CircuitBreaker("bad", **kwargs)  # type: ignore[arg-type]
