"""Runtime metrics (RES-M6): event-loop lag, GC pauses, asyncio task count, process gauges.

* `EventLoopLag.measure()` sleeps 0.5 s and records how late it woke up (`event_loop_lag_seconds`).
  Run it as a supervised periodic task (`TaskSupervisor.periodic`), never a bare task.
* `install_gc_callbacks()` times every collection through `gc.callbacks`
  (`python_gc_pause_seconds{generation}`, observed by the sampler, never inside the callback);
  idempotent.
* `sample_runtime()` sets `asyncio_tasks` and, in multiprocess mode, this process's `process_*`
  gauges; the serving process calls it from a periodic task.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from paycore.platform.observability import metrics as m

if TYPE_CHECKING:
    from paycore.config import Settings

LAG_PROBE_INTERVAL: Final = 0.5
_GENERATIONS: Final = ("0", "1", "2")


class EventLoopLag:
    """Measures how late a `sleep(interval)` resumes: the time callbacks wait for the loop."""

    def __init__(
        self, interval: float = LAG_PROBE_INTERVAL, clock: Callable[[], float] | None = None
    ) -> None:
        self.interval = interval
        self._clock = clock
        self.last = 0.0

    async def measure(self) -> float:
        clock = self._clock or asyncio.get_running_loop().time
        started = clock()
        await asyncio.sleep(self.interval)
        lag = max(0.0, clock() - started - self.interval)
        self.last = lag
        m.EVENT_LOOP_LAG.set(lag)
        return lag


class _GcTimer:
    """Times each collection, but never touches a metric inside the GC callback: a collection can
    start while prometheus_client holds its (non-reentrant) value lock — in multiprocess mode one
    lock for every metric — and observing from the callback would then deadlock the process. The
    pauses are queued here (a bounded deque: no lock) and observed by `flush`, from the sampler."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.children = {g: m.GC_PAUSE.labels(g) for g in _GENERATIONS}
        self.pending: deque[tuple[str, float]] = deque(maxlen=10_000)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        started, self.started = self.started, None
        if started is None:
            return
        self.pending.append((str(info.get("generation", 0)), time.perf_counter() - started))

    def flush(self) -> int:
        """Observe the queued pauses (outside any collection); returns how many."""
        count = 0
        while True:
            try:
                generation, pause = self.pending.popleft()
            except IndexError:
                return count
            child = self.children.get(generation)
            if child is not None:
                child.observe(pause)
                count += 1


_gc_timer: _GcTimer | None = None


def install_gc_callbacks() -> None:
    """Time every garbage collection (once per process)."""
    global _gc_timer
    if _gc_timer is not None and _gc_timer in gc.callbacks:
        return
    _gc_timer = _GcTimer()
    gc.callbacks.append(_gc_timer)


def uninstall_gc_callbacks() -> None:
    global _gc_timer
    if _gc_timer is not None and _gc_timer in gc.callbacks:
        gc.callbacks.remove(_gc_timer)
    _gc_timer = None


def flush_gc_pauses() -> int:
    """Observe the garbage-collection pauses timed since the last flush (`sample_runtime` does)."""
    return _gc_timer.flush() if _gc_timer is not None else 0


def sample_runtime() -> int:
    """`asyncio_tasks` (and the multiprocess process gauges), and the queued GC pauses. Returns the
    task count."""
    flush_gc_pauses()
    count = len(asyncio.all_tasks())
    m.ASYNCIO_TASKS.set(count)
    m.sample_process()
    return count


class _Supervisor(Protocol):
    def periodic(
        self, kind: str, interval: float, fn: Callable[[], Awaitable[Any]], *, initial_delay: float = 0.0
    ) -> asyncio.Task[Any]: ...


def start_runtime_monitors(tasks: _Supervisor, *, sample_interval: float = 5.0) -> EventLoopLag:
    """Supervised periodic tasks of a serving process (API worker or job worker): the event-loop
    lag probe (continuous) and the runtime sampler; GC timing is installed too."""
    install_gc_callbacks()
    lag = EventLoopLag()
    tasks.periodic("event_loop_lag", 0.0, lag.measure)

    async def sample() -> None:
        sample_runtime()

    tasks.periodic("runtime_metrics", sample_interval, sample)
    return lag


def feature_flags(settings: Settings) -> dict[str, bool]:
    """The kill switches as configured, without run-time overrides (`PAYCORE_DEGRADED` turns three
    of them off). The serving processes use `platform.flags.FeatureFlags`, which adds overrides."""
    from paycore.platform.flags import configured_flags, effective_flags

    return effective_flags(configured_flags(settings), {})


def export_feature_flags(settings: Settings) -> dict[str, bool]:
    """`feature_flag_enabled{flag}` (RES-11) for the configured values: 1 on, 0 off."""
    flags = feature_flags(settings)
    for flag, enabled in flags.items():
        m.FEATURE_FLAG.labels(flag).set(1 if enabled else 0)
    return flags
