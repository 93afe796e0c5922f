"""`TaskSupervisor` (RES-M1): every background task is tracked, named by type, and stoppable.

* `spawn(type, coro)` keeps a strong reference, logs the task's exception, forgets it when done.
* `spawn_once(key, type, coro)` skips the work when the same key is already running.
* `periodic(type, interval, fn)` loops with a cancellable sleep.
* `drain(timeout)` waits for one-shot tasks (shutdown phase 3); `cancel_all()` stops the rest.
Bare `asyncio.create_task` elsewhere in `src/` is refused by a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

import structlog

from paycore.platform.observability import metrics as m
from paycore.platform.resilience import deadline

log = structlog.get_logger("paycore.tasks")


class TaskSupervisor:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._tasks: dict[asyncio.Task[Any], tuple[str, float, bool]] = {}
        self._keys: dict[Hashable, asyncio.Task[Any]] = {}
        self.closed = False
        self.baseline: int | None = None
        self._clock = clock
        self._long_kinds: set[str] = set()

    def spawn(
        self, kind: str, coro: Coroutine[Any, Any, Any], *, periodic: bool = False
    ) -> asyncio.Task[Any]:
        if self.closed:
            coro.close()
            raise RuntimeError("the task supervisor is closed")
        # Never the spawning request's deadline: the task has its own lifetime (RES-7).
        task = asyncio.get_running_loop().create_task(
            coro, name=f"paycore:{kind}", context=deadline.detached_context()
        )
        self._tasks[task] = (kind, self._clock(), periodic)
        m.TRACKED_TASKS.labels(kind).inc()
        task.add_done_callback(self._done)
        return task

    def spawn_once(
        self, key: Hashable, kind: str, coro: Coroutine[Any, Any, Any]
    ) -> asyncio.Task[Any] | None:
        running = self._keys.get(key)
        if running is not None and not running.done():
            coro.close()
            return None
        if self.closed:
            coro.close()
            return None
        task = self.spawn(kind, coro)
        self._keys[key] = task

        def forget(_: asyncio.Task[Any]) -> None:
            self._keys.pop(key, None)

        task.add_done_callback(forget)
        return task

    def periodic(
        self, kind: str, interval: float, fn: Callable[[], Awaitable[Any]], *, initial_delay: float = 0.0
    ) -> asyncio.Task[Any]:
        async def loop() -> None:
            if initial_delay:
                await asyncio.sleep(initial_delay)
            while True:
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("periodic_task_failed", type=kind)
                await asyncio.sleep(interval)

        return self.spawn(kind, loop(), periodic=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        kind, _, _ = self._tasks.pop(task, ("unknown", 0.0, False))
        m.TRACKED_TASKS.labels(kind).dec()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background_task_failed", type=kind, error=type(exc).__name__, detail=str(exc))

    def count(self, kind: str | None = None) -> int:
        return sum(1 for k, _, _ in self._tasks.values() if kind is None or k == kind)

    def long_running(self, older_than: float) -> dict[str, int]:
        now = self._clock()
        out: dict[str, int] = {}
        for kind, started, periodic in self._tasks.values():
            if not periodic and now - started > older_than:
                out[kind] = out.get(kind, 0) + 1
        return out

    async def drain(self, timeout: float) -> bool:
        """Wait for one-shot tasks to finish; True when all did within the timeout."""
        pending = [t for t, (_, _, periodic) in self._tasks.items() if not periodic]
        if not pending:
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
        return not still

    async def cancel_all(self, timeout: float = 5.0) -> None:
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=timeout)

    def check_leaks(self, threshold: int, *, long_after: float = 600.0) -> int:
        """Compare all asyncio tasks with the baseline taken after start-up; export one-shot tasks
        older than `long_after` seconds as `long_running_tasks{type}`."""
        total = len(asyncio.all_tasks())
        m.ASYNCIO_TASKS.set(total)
        long = self.long_running(long_after)
        for kind in self._long_kinds - long.keys():
            m.LONG_RUNNING_TASKS.labels(kind).set(0)
        for kind, count in long.items():
            m.LONG_RUNNING_TASKS.labels(kind).set(count)
        self._long_kinds = set(long)
        if self.baseline is None:
            self.baseline = total
            return 0
        excess = total - self.baseline
        if excess > threshold:
            m.TASK_LEAKS.inc()
            log.warning("task_leak_suspected", tasks=total, baseline=self.baseline)
        return excess
