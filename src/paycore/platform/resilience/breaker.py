"""Circuit breakers per upstream (CRITICAL-3, RES-1, ARCH-3.2).

States: **closed** (calls pass; results are counted) → **open** after `failure_threshold`
consecutive failures *or* a failure rate ≥ `failure_rate` over the last `window` calls (the rate rule
needs a full window) → after `open_timeout` seconds **half-open**, which admits `half_open_probes`
probe calls: all succeed → closed, any failure → open again, extra calls are rejected.

A breaker wraps **one attempt**, not a whole retry sequence. Usage::

    permit = breaker.acquire()          # raises CircuitOpenError in O(1), no socket touched
    ... one attempt ...
    permit.success() / permit.failure() / permit.release()   # release = neutral (e.g. cancelled)

or ``with breaker.call() as permit:`` / ``async with breaker.call():`` — leaving the block records
success, an ``Exception`` records failure, cancellation (``BaseException``) releases the permit, and
an explicit record inside the block wins.

What counts is the caller's decision. For the gateway: connect/read timeouts, resets, HTTP 5xx,
unparseable answers and code `96` are failures; declines, `91`, HTTP 4xx and validation errors are
successes (the upstream answered).

Probe accounting is exact across awaits: every decision is taken synchronously on the event loop,
and each permit carries the breaker *generation* it was issued in. A result that arrives after the
state changed (a slow call admitted while closed that finishes after the breaker opened) is counted
in the metrics but cannot move the state machine.

Manual overrides for the admin API and the runbook: `force_open()` and `force_closed()` pin the
state until `reset()`, which returns to a clean, automatic closed state. `enabled = False` (the
`PAYCORE_CB_ENABLED` kill switch, hot-toggled through `platform.flags`) makes the breaker a
pass-through.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Final

import msgspec
import structlog

from paycore.gateway.port import CircuitOpenError
from paycore.platform.flags import Switch, constant
from paycore.platform.observability import metrics

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = [
    "GATEWAY_BRIC_STORAGE",
    "GATEWAY_KEY_EXCHANGE",
    "GATEWAY_SERVER_POST",
    "REPORTING_API",
    "BreakerRegistry",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "Permit",
    "Verdict",
    "record_health",
]

GATEWAY_SERVER_POST: Final = "gateway_server_post"
GATEWAY_BRIC_STORAGE: Final = "gateway_bric_storage"
GATEWAY_KEY_EXCHANGE: Final = "gateway_key_exchange"
REPORTING_API: Final = "reporting_api"
UPSTREAMS: Final = (GATEWAY_SERVER_POST, GATEWAY_BRIC_STORAGE, GATEWAY_KEY_EXCHANGE, REPORTING_API)

_log = structlog.get_logger("paycore.resilience.breaker")


class BreakerState(enum.IntEnum):
    """Values are those of the `circuit_breaker_state` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Verdict(enum.Enum):
    SUCCESS = "success"
    FAILURE = "error"
    NEUTRAL = "neutral"


class BreakerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A read-only view for the admin API and `/health`."""

    name: str
    state: str
    enabled: bool
    forced: str | None
    consecutive_failures: int
    window_calls: int
    window_failures: int
    open_seconds_left: float | None
    probes_admitted: int


class Permit:
    """The right to make one call. Record exactly one verdict; later records are ignored."""

    __slots__ = ("_breaker", "_done", "_generation", "_probe", "_state")

    def __init__(
        self, breaker: CircuitBreaker | None, generation: int, state: BreakerState, probe: bool
    ) -> None:
        self._breaker = breaker
        self._generation = generation
        self._state = state
        self._probe = probe
        self._done = breaker is None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def is_probe(self) -> bool:
        return self._probe

    def record(self, verdict: Verdict) -> None:
        if self._done:
            return
        self._done = True
        assert self._breaker is not None
        self._breaker._on_result(self._generation, self._state, self._probe, verdict)

    def success(self) -> None:
        self.record(Verdict.SUCCESS)

    def failure(self) -> None:
        self.record(Verdict.FAILURE)

    def release(self) -> None:
        """Neutral: the call says nothing about the upstream's health (cancelled, not sent)."""
        self.record(Verdict.NEUTRAL)

    def _exit(self, exc: BaseException | None) -> None:
        if self._done:
            return
        if exc is None:
            self.success()
        elif isinstance(exc, Exception):
            self.failure()
        else:  # CancelledError, KeyboardInterrupt, ...: never a verdict on the upstream
            self.release()

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit(exc)


_PASS_THROUGH_STATE: Final = BreakerState.CLOSED


def record_health(permit: Permit | None, healthy: bool | None) -> None:
    """Close a permit with what the call showed of the upstream: healthy (it answered, even
    unusably), unhealthy, or unknown (None: cancelled — no verdict)."""
    if permit is None:
        return
    if healthy is None:
        permit.release()
    elif healthy:
        permit.success()
    else:
        permit.failure()


class CircuitBreaker:
    """One upstream's breaker. Process-local; all methods are synchronous and O(1)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        failure_rate: float = 0.5,
        window: int = 20,
        open_timeout: float = 30.0,
        half_open_probes: int = 3,
        enabled: bool | Switch = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or window < 1 or half_open_probes < 1:
            raise ValueError("threshold, window and probes must be at least 1")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        if open_timeout < 0:
            raise ValueError("open_timeout must not be negative")
        self.name = name
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.window = window
        self.open_timeout = open_timeout
        self.half_open_probes = half_open_probes
        # the kill switch: a constant or a switch read at every call (platform.flags)
        self._enabled: Switch = enabled if callable(enabled) else constant(enabled)
        self._clock = clock
        # Failures in a full window that trip the breaker (0 disables the rate rule).
        self._rate_trip = math.ceil(failure_rate * window - 1e-9) if failure_rate > 0 else 0
        self._state = BreakerState.CLOSED
        self._forced: BreakerState | None = None
        self._generation = 0
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = failure
        self._window_failures = 0
        self._opened_at = 0.0
        self._probes_admitted = 0
        self._probe_successes = 0
        self._state_gauge = metrics.CIRCUIT_STATE.labels(name)
        self._alias_gauge = metrics.EPX_CIRCUIT_STATE if name == GATEWAY_SERVER_POST else None
        self._requests = {
            (state, result): metrics.CIRCUIT_REQUESTS.labels(name, state.label, result)
            for state in BreakerState
            for result in ("success", "error", "rejected")
        }
        self._export_state()

    # --- reading ---------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._enabled()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = constant(value)

    @property
    def state(self) -> BreakerState:
        self._maybe_half_open()
        return self._state

    @property
    def forced(self) -> BreakerState | None:
        return self._forced

    def snapshot(self) -> BreakerSnapshot:
        state = self.state
        left = None
        if state is BreakerState.OPEN and self._forced is None:
            left = max(self.open_timeout - (self._clock() - self._opened_at), 0.0)
        return BreakerSnapshot(
            name=self.name,
            state=state.label,
            enabled=self.enabled,
            forced=self._forced.label if self._forced is not None else None,
            consecutive_failures=self._consecutive,
            window_calls=len(self._outcomes),
            window_failures=self._window_failures,
            open_seconds_left=left,
            probes_admitted=self._probes_admitted,
        )

    # --- calls -----------------------------------------------------------------------------------
    def acquire(self) -> Permit:
        """A permit for one call, or `CircuitOpenError` (counted as `rejected`) without any I/O."""
        if not self._enabled():
            return Permit(None, -1, _PASS_THROUGH_STATE, False)
        self._maybe_half_open()
        state = self._state
        if state is BreakerState.CLOSED:
            return Permit(self, self._generation, state, False)
        if state is BreakerState.HALF_OPEN and self._probes_admitted < self.half_open_probes:
            self._probes_admitted += 1
            return Permit(self, self._generation, state, True)
        self._requests[(state, "rejected")].inc()
        raise CircuitOpenError(self.name)

    def call(self) -> Permit:
        """`acquire()` for use as a (sync or async) context manager."""
        return self.acquire()

    # --- manual overrides ------------------------------------------------------------------------
    def force_open(self) -> None:
        """Pin the breaker open (every call rejected) until `force_closed()` or `reset()`."""
        self._forced = BreakerState.OPEN
        self._transition(BreakerState.OPEN, "forced_open")

    def force_closed(self) -> None:
        """Pin the breaker closed (failures are counted but never trip it) until `reset()`."""
        self._forced = BreakerState.CLOSED
        self._transition(BreakerState.CLOSED, "forced_closed")

    def reset(self) -> None:
        """Back to a clean, automatic closed state."""
        self._forced = None
        self._transition(BreakerState.CLOSED, "reset")

    # --- internals -------------------------------------------------------------------------------
    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._forced is None
            and self._clock() - self._opened_at >= self.open_timeout
        ):
            self._transition(BreakerState.HALF_OPEN, "open_timeout_elapsed")

    def _on_result(self, generation: int, state: BreakerState, probe: bool, verdict: Verdict) -> None:
        if verdict is not Verdict.NEUTRAL:
            self._requests[(state, verdict.value)].inc()
        if generation != self._generation:
            return  # issued before the last transition: metrics only
        if probe:
            self._on_probe_result(verdict)
            return
        if verdict is Verdict.NEUTRAL or self._state is not BreakerState.CLOSED:
            return
        failed = verdict is Verdict.FAILURE
        if len(self._outcomes) == self.window and self._outcomes[0]:
            self._window_failures -= 1
        self._outcomes.append(failed)
        if failed:
            self._window_failures += 1
            self._consecutive += 1
        else:
            self._consecutive = 0
        if self._forced is BreakerState.CLOSED:
            return
        if self._consecutive >= self.failure_threshold:
            self._transition(BreakerState.OPEN, "consecutive_failures")
        elif (
            self._rate_trip
            and len(self._outcomes) == self.window
            and self._window_failures >= self._rate_trip
        ):
            # Checked after every call: the window can become full on a success.
            self._transition(BreakerState.OPEN, "failure_rate")

    def _on_probe_result(self, verdict: Verdict) -> None:
        if verdict is Verdict.NEUTRAL:
            self._probes_admitted -= 1  # the slot is free for another probe
        elif verdict is Verdict.FAILURE:
            self._transition(BreakerState.OPEN, "probe_failed")
        else:
            self._probe_successes += 1
            if self._probe_successes >= self.half_open_probes:
                self._transition(BreakerState.CLOSED, "probes_succeeded")

    def _transition(self, to: BreakerState, reason: str) -> None:
        previous = self._state
        self._state = to
        self._generation += 1
        self._consecutive = 0
        self._outcomes.clear()
        self._window_failures = 0
        self._probes_admitted = 0
        self._probe_successes = 0
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()
        self._export_state()
        if previous is not to:
            metrics.CIRCUIT_TRANSITIONS.labels(self.name, previous.label, to.label).inc()
            if to is BreakerState.OPEN:
                metrics.CIRCUIT_OPENS.labels(self.name).inc()
        _log.warning(
            "circuit_breaker_transition",
            breaker=self.name,
            from_state=previous.label,
            to_state=to.label,
            reason=reason,
        )

    def _export_state(self) -> None:
        self._state_gauge.set(int(self._state))
        if self._alias_gauge is not None:
            self._alias_gauge.set(int(self._state))

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.label})"


class BreakerRegistry:
    """Every breaker of the process by name, so the admin API can list, force and reset them."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        if breaker.name in self._breakers:
            raise ValueError(f"breaker {breaker.name!r} already registered")
        self._breakers[breaker.name] = breaker
        return breaker

    def get(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def names(self) -> list[str]:
        return sorted(self._breakers)

    def snapshot(self) -> list[BreakerSnapshot]:
        return [self._breakers[name].snapshot() for name in self.names()]

    def set_enabled(self, enabled: bool) -> None:
        """The `PAYCORE_CB_ENABLED` kill switch, hot-toggled for every breaker."""
        for breaker in self._breakers.values():
            breaker.enabled = enabled

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        enabled: Switch | None = None,
    ) -> BreakerRegistry:
        """The four upstream breakers of CRITICAL-3 with their configured thresholds; `enabled` is
        the `cb` kill switch (default: `PAYCORE_CB_ENABLED`, fixed)."""
        registry = cls()
        for name in UPSTREAMS:
            gateway = name.startswith("gateway_")
            rate = settings.gateway_cb_failure_rate if gateway else settings.cb_failure_rate
            registry.add(
                CircuitBreaker(
                    name,
                    failure_threshold=settings.cb_failure_threshold,
                    failure_rate=rate,
                    window=settings.cb_window,
                    open_timeout=settings.cb_open_timeout,
                    half_open_probes=settings.cb_half_open_probes,
                    enabled=enabled if enabled is not None else settings.cb_enabled,
                    clock=clock,
                )
            )
        return registry
