from __future__ import annotations

import asyncio

import pytest

from paycore.platform.cache import AsyncTTLCache

pytestmark = pytest.mark.unit


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_hit_miss_and_expiry():
    timer = FakeTimer()
    cache: AsyncTTLCache[str, int] = AsyncTTLCache("t", ttl=0.1, max_size=10, timer=timer)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return 42

    assert await cache.get_or_load("a", load) == 42
    assert await cache.get_or_load("a", load) == 42
    assert calls == 1
    timer.now = 0.2
    assert await cache.get_or_load("a", load) == 42
    assert calls == 2


async def test_single_flight_for_concurrent_callers():
    cache: AsyncTTLCache[str, int] = AsyncTTLCache("t", ttl=10, max_size=10)
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 7

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(100)))
    assert results == [7] * 100 and calls == 1


async def test_errors_are_not_cached():
    cache: AsyncTTLCache[str, int] = AsyncTTLCache("t", ttl=10, max_size=10)
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("db down")
        return 1

    with pytest.raises(RuntimeError):
        await cache.get_or_load("k", flaky)
    assert await cache.get_or_load("k", flaky) == 1


async def test_cancelled_first_caller_does_not_poison_waiters():
    cache: AsyncTTLCache[str, int] = AsyncTTLCache("t", ttl=10, max_size=10)
    started = asyncio.Event()

    async def slow() -> int:
        started.set()
        await asyncio.sleep(0.05)
        return 5

    first = asyncio.create_task(cache.get_or_load("k", slow))
    await started.wait()
    second = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 5
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_invalidation_and_lru_bound():
    cache: AsyncTTLCache[int, int] = AsyncTTLCache("t", ttl=10, max_size=3)
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3
    cache.invalidate(4)
    assert cache.get(4) is None
    assert cache.invalidate_where(lambda k, v: v >= 2) == 2
    assert len(cache) == 0


async def test_invalidation_during_load_discards_the_stale_value():
    cache: AsyncTTLCache[str, int] = AsyncTTLCache("t", ttl=10, max_size=10)

    async def load() -> int:
        cache.invalidate("k")  # a write committed while we were loading
        return 1

    assert await cache.get_or_load("k", load) == 1
    assert cache.get("k") is None
