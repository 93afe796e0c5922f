"""Graceful shutdown (RES-M2): readiness off → drain in-flight requests → stop tasks → close pools.

Inside a granian worker the server installs its own SIGTERM/SIGINT handlers on the event loop.
paycore puts a drain phase in front of them: on the first signal the process turns *draining*
(`/readyz` answers 503, new requests get 503), waits for in-flight requests to finish (up to the
drain deadline), and only then lets the server stop listening and run the ASGI lifespan shutdown
(background tasks, HTTP sessions, the DB pool, logs). See ADR 0008.

* `install_granian_drain_hook` (preferred, any event loop incl. uvloop) wraps granian's
  `set_loop_signals` before the worker calls it, so the worker's stop event is set only after the
  drain.
* `install_drain_handlers` (fallback, asyncio loop only) wraps already-installed loop handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from paycore.platform.observability import metrics as m

log = structlog.get_logger("paycore.shutdown")

# How long requests cancelled at the drain deadline get to unwind (mark their transactions).
CANCEL_GRACE = 2.0


class Lifecycle:
    """Process-wide serving state shared by the middleware and the health routes."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.drain_started: float | None = None
        self.drain_hooked = False
        self._handlers: set[asyncio.Task[Any]] = set()  # the tasks serving in-flight requests
        self._cancelled: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()  # by cancel_in_flight

    def request_started(self) -> None:
        """Called by the request envelope from the task serving the request."""
        self.in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)

    def request_finished(self) -> None:
        self._handlers.discard(asyncio.current_task())
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    def cancel_in_flight(self) -> int:
        """Cancel the requests still running at the drain deadline (RES-M2, CRITICAL-1): a request
        sleeping in a retry backoff must not hold the shutdown. Their transactions are left
        `unknown`/`failed` for reconciliation. Returns how many were cancelled."""
        handlers = [t for t in self._handlers if not t.done()]
        for task in handlers:
            self._cancelled.add(task)
            task.cancel("shutdown: drain deadline")
        return len(handlers)

    def cancelled_at_drain_deadline(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` (a request's) was cancelled by `cancel_in_flight`."""
        return task in self._cancelled and task.cancelling() > 0

    def start_draining(self) -> None:
        if not self.draining:
            self.draining = True
            self.drain_started = time.monotonic()
            log.info("shutdown_draining", in_flight=self.in_flight)

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


def install_drain_handlers(lifecycle: Lifecycle, *, prestop_delay: float, drain_timeout: float) -> bool:
    """Wrap the loop's SIGTERM/SIGINT handlers with a drain phase. False if none was installed."""
    loop = asyncio.get_running_loop()
    handlers: dict[int, Any] = getattr(loop, "_signal_handlers", {})
    originals = [h for h in (handlers.get(signal.SIGTERM), handlers.get(signal.SIGINT)) if h is not None]
    if not originals:
        return False
    callback = _drain_then(lifecycle, prestop_delay, drain_timeout, originals[0]._run)
    for sig in (signal.SIGTERM, signal.SIGINT):
        if handlers.get(sig) is not None:
            loop.add_signal_handler(sig, callback)
    return True


_keep: set[asyncio.Task[Any]] = set()


def _drain_then(
    lifecycle: Lifecycle, prestop_delay: float, drain_timeout: float, stop: Callable[[], None]
) -> Callable[[], None]:
    """A signal callback: the first call drains then calls `stop`; a second call stops at once."""
    fired = False

    async def drain() -> None:
        lifecycle.start_draining()
        if prestop_delay > 0:
            await asyncio.sleep(prestop_delay)
        if not await lifecycle.wait_idle(drain_timeout):
            log.warning("shutdown_drain_deadline", in_flight=lifecycle.in_flight)
            lifecycle.cancel_in_flight()
            if not await lifecycle.wait_idle(CANCEL_GRACE):
                log.error("shutdown_requests_not_cancelled", in_flight=lifecycle.in_flight)
        stop()

    def on_signal() -> None:
        nonlocal fired
        if fired:
            stop()
            return
        fired = True
        task = asyncio.get_running_loop().create_task(drain(), name="paycore:shutdown-drain")
        _keep.add(task)
        task.add_done_callback(_keep.discard)

    return on_signal


def install_granian_drain_hook(lifecycle: Lifecycle, *, prestop_delay: float, drain_timeout: float) -> bool:
    """Call in the app factory (granian loads the app before it installs its signal handlers)."""
    try:
        import granian._signals as granian_signals
    except ImportError:  # not running under granian
        return False
    original = granian_signals.set_loop_signals

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        stop_event = original(loop)  # type: ignore[no-untyped-call]  # granian's stop event
        callback = _drain_then(lifecycle, prestop_delay, drain_timeout, stop_event.set)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, callback)
        lifecycle.drain_hooked = True
        return stop_event

    granian_signals.set_loop_signals = set_loop_signals
    return True


async def run_phase(name: str, fn: Callable[[], Awaitable[Any]], timeout: float) -> None:
    """One timed shutdown phase; a hung phase is abandoned at its deadline and counted."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(fn(), timeout)
    except TimeoutError:
        m.SHUTDOWN_ERRORS.labels(name).inc()
        log.error("shutdown_phase_timeout", component=name, timeout=timeout)
    except Exception as exc:
        m.SHUTDOWN_ERRORS.labels(name).inc()
        log.error("shutdown_phase_failed", component=name, error=type(exc).__name__)
    finally:
        with contextlib.suppress(Exception):
            m.COMPONENT_SHUTDOWN_DURATION.labels(name).observe(time.perf_counter() - started)
