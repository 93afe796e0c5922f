"""Graceful shutdown (RES-M2): readiness off → drain in-flight requests → stop tasks → close pools.

Inside a granian worker the server installs its own SIGTERM/SIGINT handlers on the event loop.
`install_drain_handlers` wraps them: on the first signal the process turns *draining* (`/readyz`
answers 503, new requests get 503), waits for in-flight requests to finish (up to the drain
deadline), and only then passes the signal on to the server, which stops listening and runs the
ASGI lifespan shutdown (background tasks, HTTP sessions, the DB pool, logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from paycore.platform.observability import metrics as m

log = structlog.get_logger("paycore.shutdown")


class Lifecycle:
    """Process-wide serving state shared by the middleware and the health routes."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.drain_started: float | None = None

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

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
    originals: dict[int, Any] = {int(sig): handlers.get(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    if not any(originals.values()):
        return False
    fired = False

    async def drain_then_forward(sig: int) -> None:
        lifecycle.start_draining()
        if prestop_delay > 0:
            await asyncio.sleep(prestop_delay)
        idle = await lifecycle.wait_idle(drain_timeout)
        if not idle:
            log.warning("shutdown_drain_deadline", in_flight=lifecycle.in_flight)
        original = originals.get(sig) or originals.get(signal.SIGTERM) or originals.get(signal.SIGINT)
        if original is not None:
            original._run()

    def on_signal(sig: int) -> None:
        nonlocal fired
        if fired:
            # A second signal: stop at once.
            original = originals.get(sig)
            if original is not None:
                original._run()
            return
        fired = True
        drainer = loop.create_task(drain_then_forward(sig), name="paycore:shutdown-drain")
        _keep.add(drainer)
        drainer.add_done_callback(_keep.discard)

    for sig, original in originals.items():
        if original is not None:
            loop.add_signal_handler(sig, on_signal, sig)
    return True


_keep: set[asyncio.Task[Any]] = set()


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
