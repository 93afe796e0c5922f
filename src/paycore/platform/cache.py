"""`AsyncTTLCache`: TTL + LRU bound, single-flight loading, explicit invalidation (roadmap §2.4).

* `get_or_load(key, loader)`: one in-flight load per key; concurrent callers await the same
  future; a cancelled first caller does not poison the others; loader errors are not cached.
* `invalidate(key)`, `invalidate_where(pred)`, `clear()`; writes invalidate after commit.
* Metrics `cache_hits_total`, `cache_misses_total{reason}`, `cache_size`, `cache_evictions_total`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache
from prometheus_client import Counter, Gauge

from paycore.platform.flags import Switch, constant

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CACHE_HITS = Counter("cache_hits_total", "Cache hits", ["cache"])
CACHE_MISSES = Counter("cache_misses_total", "Cache misses", ["cache", "reason"])
CACHE_SIZE = Gauge("cache_size", "Cache entries", ["cache"], multiprocess_mode="livesum")
CACHE_EVICTIONS = Counter("cache_evictions_total", "Cache evictions", ["cache", "reason"])

_MISSING = object()


class AsyncTTLCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        *,
        ttl: float,
        max_size: int,
        enabled: bool | Switch = True,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        # the kill switch: a constant or a switch read at use time (platform.flags)
        self._enabled: Switch = enabled if callable(enabled) else constant(enabled)
        self._data: TTLCache[K, V] = TTLCache(maxsize=max_size, ttl=ttl, timer=timer)
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._generation: dict[K, int] = {}
        self._hits = CACHE_HITS.labels(name)

    @property
    def enabled(self) -> bool:
        return self._enabled()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = constant(value)

    def follow(self, switch: Switch) -> None:
        """Read the kill switch from `switch` at every use from now on (a hot-toggleable flag)."""
        self._enabled = switch

    def __len__(self) -> int:
        return len(self._data)

    def _disabled(self) -> bool:
        """Off: entries kept from before are dropped, so switching back on starts cold (the data
        may have changed in the meantime)."""
        if self._enabled():
            return False
        if self._data:
            self.clear()
        return True

    def get(self, key: K) -> V | None:
        if self._disabled():
            return None
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            return None
        self._hits.inc()
        return value  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        if self._enabled():
            self._data[key] = value
            CACHE_SIZE.labels(self.name).set(len(self._data))

    async def get_or_load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        if self._disabled():
            CACHE_MISSES.labels(self.name, "disabled").inc()
            return await loader()
        value = self._data.get(key, _MISSING)
        if value is not _MISSING:
            self._hits.inc()
            return value  # type: ignore[return-value]
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    # The first caller was cancelled, not us: load on our own.
                    return await self.get_or_load(key, loader)
                raise
        CACHE_MISSES.labels(self.name, "not_found").inc()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._inflight[key] = future
        generation = self._generation.get(key, 0)
        try:
            value = await loader()
        except BaseException as exc:
            self._inflight.pop(key, None)
            if isinstance(exc, asyncio.CancelledError):
                # Let waiters retry on their own instead of inheriting our cancellation.
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters may be none
            raise
        self._inflight.pop(key, None)
        # An invalidation during the load means the value may predate the write: don't keep it.
        if self._generation.get(key, 0) == generation:
            self.put(key, value)
        future.set_result(value)
        return value

    def invalidate(self, key: K) -> None:
        self._generation[key] = self._generation.get(key, 0) + 1
        if len(self._generation) > 4 * self._data.maxsize:
            self._generation.clear()
        if self._data.pop(key, _MISSING) is not _MISSING:
            CACHE_EVICTIONS.labels(self.name, "manual").inc()
            CACHE_SIZE.labels(self.name).set(len(self._data))

    def invalidate_where(self, predicate: Callable[[K, V], bool]) -> int:
        doomed = [k for k, v in list(self._data.items()) if predicate(k, v)]
        for key in doomed:
            self.invalidate(key)
        return len(doomed)

    def clear(self) -> None:
        for key in list(self._data.keys()):
            self.invalidate(key)
