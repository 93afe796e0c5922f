"""`AsyncTTLCache`: TTL + LRU bound, single-flight loading, explicit invalidation (roadmap §2.4),
stale-on-error (RES-9).

* `get_or_load(key, loader)`: one in-flight load per key; concurrent callers await the same
  future; a cancelled first caller does not poison the others; loader errors are not cached.
* Stale-on-error (`max_stale` > 0): an entry past its TTL is kept, inside the LRU bound, for up to
  `max_stale` more seconds. It is never served while the loader works; only when the loader
  *raises* (database down, timeout) is the stale value returned instead of the error, counted in
  `cache_stale_served_total{cache}` and logged at WARN (at most once per `STALE_WARN_INTERVAL`).
  Past `max_stale`, the loader's error propagates.
* `invalidate(key)`, `invalidate_where(pred)`, `clear()` remove entries entirely, stale copies
  included: an invalidated entry (revocation, deactivation, key rotation) is never served again,
  whatever happens to the loader. A load running while its key is invalidated is not stored
  (its value may predate the write) and new callers do not join it.
* `refresh(key, loader)`: a read that skips the cache (the admin `X-Bypass-Cache`) and stores the
  fresh value.
* Metrics (`observability.metrics`, no per-key labels): `cache_hits_total`,
  `cache_misses_total{reason}` (`not_found`, `expired`, `disabled`, `bypass`), `cache_size`,
  `cache_evictions_total{reason}` (`ttl`, `lru`, `manual`), `cache_stale_served_total`.
  Every `get_or_load` counts once, as a hit or a miss (callers that join another's load too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import structlog
from cachetools import Cache, TTLCache

from paycore.platform.flags import Switch, constant
from paycore.platform.observability import metrics as m

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = structlog.get_logger("paycore.cache")

STALE_WARN_INTERVAL: Final = 60.0  # seconds between two `cache_stale_served` warnings per cache

# kept importable from here (older call sites and tests); declared once in the metric catalogue
CACHE_HITS = m.CACHE_HITS
CACHE_MISSES = m.CACHE_MISSES
CACHE_SIZE = m.CACHE_SIZE
CACHE_EVICTIONS = m.CACHE_EVICTIONS
CACHE_STALE_SERVED = m.CACHE_STALE_SERVED


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    fresh_until: float  # timer value at which the entry stops being fresh (stale from then on)


class _Store(TTLCache[K, _Entry[V], float]):
    """cachetools' TTL + LRU cache whose TTL covers the stale window, reporting why entries go."""

    def __init__(
        self, maxsize: int, ttl: float, timer: Callable[[], float], on_evict: Callable[[str, int], None]
    ) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self._on_evict = on_evict

    def expire(self, time: float | None = None) -> list[tuple[K, _Entry[V]]]:
        expired = super().expire(time)
        if expired:
            self._on_evict("ttl", len(expired))
        return expired

    def popitem(self) -> tuple[K, _Entry[V]]:
        item = super().popitem()  # expires first (counted above), then the least recently used
        self._on_evict("lru", 1)
        return item

    def peek(self, key: K) -> _Entry[V] | None:
        """The entry physically held for `key`, even past the store's TTL (not yet purged)."""
        if not Cache.__contains__(self, key):
            return None
        return Cache.__getitem__(self, key)


@dataclass(slots=True, eq=False)
class _Load(Generic[V]):
    """One in-flight load: its result is (value, served stale?)."""

    future: asyncio.Future[tuple[V, bool]]
    invalidated: bool = False


@dataclass(slots=True, eq=False)
class _Refresh(Generic[K]):
    """One `refresh` in flight (not offered to other callers)."""

    key: K
    invalidated: bool = False


class AsyncTTLCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        *,
        ttl: float,
        max_size: int,
        enabled: bool | Switch = True,
        timer: Callable[[], float] = time.monotonic,
        max_stale: float = 0.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be greater than zero")
        if max_stale < 0:
            raise ValueError("max_stale must not be negative")
        self.name = name
        self.ttl = ttl
        self.max_stale = max_stale
        # the kill switch: a constant or a switch read at use time (platform.flags)
        self._enabled: Switch = enabled if callable(enabled) else constant(enabled)
        self._timer = timer
        self._data: _Store[K, V] = _Store(max_size, ttl + max_stale, timer, self._evicted)
        self._inflight: dict[K, _Load[V]] = {}
        self._refreshing: set[_Refresh[K]] = set()
        self._hits = m.CACHE_HITS.labels(name)
        self._stale_served = m.CACHE_STALE_SERVED.labels(name)
        self._size = m.CACHE_SIZE.labels(name)
        self._last_stale_warning: float | None = None
        self._stale_unreported = 0

    @property
    def enabled(self) -> bool:
        return self._enabled()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = constant(value)

    def follow(self, switch: Switch) -> None:
        """Read the kill switch from `switch` at every use from now on (a hot-toggleable flag)."""
        self._enabled = switch

    @property
    def max_size(self) -> int:
        return int(self._data.maxsize)

    def __len__(self) -> int:
        """Entries held, stale ones included."""
        return len(self._data)

    def _evicted(self, reason: str, count: int) -> None:
        m.CACHE_EVICTIONS.labels(self.name, reason).inc(count)

    def _update_size(self) -> None:
        self._size.set(len(self._data))

    def _disabled(self) -> bool:
        """Off: entries kept from before are dropped, so switching back on starts cold (the data
        may have changed in the meantime)."""
        if self._enabled():
            return False
        if self._data or self._inflight:
            self.clear()
        return True

    def _fresh(self, key: K) -> tuple[_Entry[V] | None, bool]:
        """The entry (fresh or stale, within the store's TTL) and whether it is fresh."""
        entry = self._data.get(key)
        if entry is None:
            return None, False
        return entry, self._timer() < entry.fresh_until

    def get(self, key: K) -> V | None:
        """The fresh value, or None (stale entries are served only on a loader error)."""
        if self._disabled():
            return None
        entry, fresh = self._fresh(key)
        if entry is None or not fresh:
            return None
        self._hits.inc()
        return entry.value

    def has_fresh(self, key: K) -> bool:
        """A fresh entry is held for `key` (no metrics, no LRU reordering)."""
        entry = self._data.peek(key)
        return self._enabled() and entry is not None and self._timer() < entry.fresh_until

    def put(self, key: K, value: V) -> None:
        if not self._enabled():
            return
        now = self._timer()
        old = self._data.peek(key)
        if old is not None and old.fresh_until <= now and key in self._data:
            self._evicted("ttl", 1)  # a stale entry replaced by a fresh one: it expired
        self._data[key] = _Entry(value, now + self.ttl)
        self._update_size()

    async def get_or_load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        if self._disabled():
            m.CACHE_MISSES.labels(self.name, "disabled").inc()
            return await loader()
        entry, fresh = self._fresh(key)
        if entry is not None and fresh:
            self._hits.inc()
            return entry.value
        expired = entry is not None or self._data.peek(key) is not None
        m.CACHE_MISSES.labels(self.name, "expired" if expired else "not_found").inc()
        return await self._load(key, loader)

    async def _load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                value, stale = await asyncio.shield(pending.future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.future.cancelled() and task is not None and not task.cancelling():
                    # The first caller was cancelled, not us: load on our own.
                    return await self._load(key, loader)
                raise
            if stale:
                self._note_stale(None)
            return value
        load: _Load[V] = _Load(asyncio.get_running_loop().create_future())
        self._inflight[key] = load
        try:
            value = await loader()
        except BaseException as exc:
            self._forget(key, load)
            if isinstance(exc, asyncio.CancelledError):
                # Let waiters retry on their own instead of inheriting our cancellation.
                load.future.cancel()
                raise
            fallback = self._stale_fallback(key, load) if isinstance(exc, Exception) else None
            if fallback is None:
                load.future.set_exception(exc)
                load.future.exception()  # mark retrieved: waiters may be none
                raise
            value, stale = fallback
            if stale:
                self._note_stale(type(exc).__name__)
            load.future.set_result((value, stale))
            return value
        self._forget(key, load)
        # An invalidation during the load means the value may predate the write: don't keep it.
        if not load.invalidated:
            self.put(key, value)
        load.future.set_result((value, False))
        return value

    def _forget(self, key: K, load: _Load[V]) -> None:
        if self._inflight.get(key) is load:
            del self._inflight[key]

    def _stale_fallback(self, key: K, load: _Load[V]) -> tuple[V, bool] | None:
        """What to serve instead of the loader's error: the entry still held for `key` when it
        was not invalidated meanwhile and is at most `max_stale` past its TTL; else nothing."""
        if load.invalidated or not self._enabled():
            return None
        entry, fresh = self._fresh(key)
        if entry is None:
            return None
        if fresh:  # stored meanwhile (a `put`): current, not stale
            return entry.value, False
        if self._timer() >= entry.fresh_until + self.max_stale:
            return None
        return entry.value, True

    def _note_stale(self, error: str | None) -> None:
        self._stale_served.inc()
        self._stale_unreported += 1
        now = self._timer()
        if self._last_stale_warning is not None and now - self._last_stale_warning < STALE_WARN_INTERVAL:
            return
        log.warning(
            "cache_stale_served",
            cache=self.name,
            error=error,
            served=self._stale_unreported,  # since the previous warning
            max_stale_seconds=self.max_stale,
        )
        self._last_stale_warning = now
        self._stale_unreported = 0

    async def refresh(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        """Load `key` without reading the cache (and without joining an in-flight load), then
        store the result: an administrator's `X-Bypass-Cache`. A loader error propagates (never
        stale) and leaves the cache as it was."""
        m.CACHE_MISSES.labels(self.name, "bypass").inc()
        if self._disabled():
            return await loader()
        refresh = _Refresh(key)
        self._refreshing.add(refresh)
        try:
            value = await loader()
        finally:
            self._refreshing.discard(refresh)
        if not refresh.invalidated:
            self.put(key, value)
        return value

    def _mark_invalidated(self, key: K | None) -> None:
        """Loads of `key` (every load when None) must not store their value, and new callers must
        not join them."""
        if key is None:
            for load in self._inflight.values():
                load.invalidated = True
            self._inflight.clear()
            for refresh in self._refreshing:
                refresh.invalidated = True
            return
        pending = self._inflight.pop(key, None)
        if pending is not None:
            pending.invalidated = True
        for refresh in self._refreshing:
            if refresh.key == key:
                refresh.invalidated = True

    def _remove(self, key: K) -> bool:
        if self._data.pop(key, None) is None:
            return False
        self._evicted("manual", 1)
        return True

    def invalidate(self, key: K) -> None:
        self._mark_invalidated(key)
        if self._remove(key):
            self._update_size()

    def invalidate_where(self, predicate: Callable[[K, V], bool]) -> int:
        """Drop every entry (stale ones included) whose key and value match; loads in flight are
        not stored (their value is unknown yet). Returns the number of entries dropped."""
        self._mark_invalidated(None)
        doomed = [k for k, entry in list(self._data.items()) if predicate(k, entry.value)]
        dropped = sum(1 for key in doomed if self._remove(key))
        self._update_size()
        return dropped

    def clear(self) -> None:
        self._mark_invalidated(None)
        for key in list(self._data.keys()):
            self._remove(key)
        self._update_size()
