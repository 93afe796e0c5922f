"""`AsyncTTLCache` (roadmap §2.4 CACHE, RES-9): TTL and LRU bound on an injected timer,
single-flight loading, invalidation, stale-on-error and the `cache_*` metrics."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from paycore.platform import cache as cache_module
from paycore.platform.cache import STALE_WARN_INTERVAL, AsyncTTLCache

pytestmark = pytest.mark.unit

_names = itertools.count()


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DbDown(Exception):
    pass


class Loader:
    """Counts calls; returns `value`, or raises `error` when set."""

    def __init__(self, value: object = 1) -> None:
        self.value = value
        self.error: BaseException | None = None
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value


def make(
    *, ttl: float = 0.1, max_size: int = 10, max_stale: float = 0.0, timer: FakeTimer | None = None
) -> tuple[AsyncTTLCache[str, object], FakeTimer]:
    clock = timer or FakeTimer()
    name = f"test_cache_{next(_names)}"  # a metric series of its own
    return AsyncTTLCache(name, ttl=ttl, max_size=max_size, timer=clock, max_stale=max_stale), clock


def metric(name: str, cache: AsyncTTLCache[str, object], **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"cache": cache.name, **labels}) or 0.0


def misses(cache: AsyncTTLCache[str, object], reason: str) -> float:
    return metric("cache_misses_total", cache, reason=reason)


def evictions(cache: AsyncTTLCache[str, object], reason: str) -> float:
    return metric("cache_evictions_total", cache, reason=reason)


def stale_served(cache: AsyncTTLCache[str, object]) -> float:
    return metric("cache_stale_served_total", cache)


async def populated(
    *, ttl: float = 0.1, max_stale: float = 1.0, value: object = "v1"
) -> tuple[AsyncTTLCache[str, object], FakeTimer, Loader]:
    cache, clock = make(ttl=ttl, max_stale=max_stale)
    loader = Loader(value)
    assert await cache.get_or_load("k", loader) == value
    return cache, clock, loader


# --- hits, misses, expiry ---------------------------------------------------------------------------
async def test_miss_then_hit_loads_once():
    cache, _ = make()
    loader = Loader(42)
    assert await cache.get_or_load("a", loader) == 42
    assert await cache.get_or_load("a", loader) == 42
    assert loader.calls == 1
    assert metric("cache_hits_total", cache) == 1 and misses(cache, "not_found") == 1


async def test_get_and_put():
    cache, _ = make()
    assert cache.get("a") is None
    cache.put("a", 1)
    assert cache.get("a") == 1
    cache.put("a", 2)
    assert cache.get("a") == 2 and len(cache) == 1


async def test_fresh_until_just_before_ttl():
    cache, clock = make(ttl=0.1)
    loader = Loader()
    await cache.get_or_load("a", loader)
    clock.now = 0.0999
    await cache.get_or_load("a", loader)
    assert loader.calls == 1


async def test_expires_at_ttl():
    cache, clock = make(ttl=0.1)
    loader = Loader()
    await cache.get_or_load("a", loader)
    clock.now = 0.1
    await cache.get_or_load("a", loader)
    assert loader.calls == 2


async def test_get_never_returns_an_expired_entry():
    cache, clock = make(ttl=0.1, max_stale=10.0)
    cache.put("a", 1)
    clock.now = 0.1
    assert cache.get("a") is None  # stale entries are only a fallback for loader errors


async def test_reload_restarts_the_ttl():
    cache, clock = make(ttl=0.1)
    loader = Loader()
    await cache.get_or_load("a", loader)
    clock.now = 0.15
    await cache.get_or_load("a", loader)
    clock.now = 0.24
    await cache.get_or_load("a", loader)
    assert loader.calls == 2


async def test_none_is_cached_like_any_value():
    cache, _ = make()
    loader = Loader(None)
    assert await cache.get_or_load("unknown", loader) is None
    assert await cache.get_or_load("unknown", loader) is None
    assert loader.calls == 1


async def test_keys_are_independent():
    cache, _ = make()
    one, two = Loader(1), Loader(2)
    assert await cache.get_or_load("one", one) == 1
    assert await cache.get_or_load("two", two) == 2
    assert await cache.get_or_load("one", one) == 1
    assert (one.calls, two.calls) == (1, 1)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        AsyncTTLCache[str, int]("bad", ttl=0, max_size=1)
    with pytest.raises(ValueError):
        AsyncTTLCache[str, int]("bad", ttl=1, max_size=1, max_stale=-1)


# --- invalidation -------------------------------------------------------------------------------------
async def test_invalidate_forces_a_reload():
    cache, _ = make()
    loader = Loader(1)
    await cache.get_or_load("a", loader)
    loader.value = 2
    cache.invalidate("a")
    assert cache.get("a") is None
    assert await cache.get_or_load("a", loader) == 2 and loader.calls == 2


async def test_invalidate_unknown_key_is_harmless():
    cache, _ = make()
    cache.invalidate("nothing")
    assert evictions(cache, "manual") == 0 and len(cache) == 0


async def test_invalidate_where_matches_key_and_value():
    cache: AsyncTTLCache[int, int] = AsyncTTLCache(f"test_cache_{next(_names)}", ttl=10, max_size=10)
    for i in range(6):
        cache.put(i, i * 10)
    assert cache.invalidate_where(lambda k, v: k % 2 == 0 and v >= 20) == 2
    assert [cache.get(i) for i in range(6)] == [0, 10, None, 30, None, 50]


async def test_clear_drops_everything():
    cache, _ = make()
    for key in "abc":
        cache.put(key, key)
    cache.clear()
    assert len(cache) == 0 and all(cache.get(k) is None for k in "abc")
    assert evictions(cache, "manual") == 3


async def test_invalidation_during_load_discards_the_value():
    cache, _ = make()

    async def load() -> object:
        cache.invalidate("k")  # a write committed while we were loading
        return 1

    assert await cache.get_or_load("k", load) == 1
    assert cache.get("k") is None


async def test_clear_during_load_discards_the_value():
    cache, _ = make()

    async def load() -> object:
        cache.clear()
        return 1

    assert await cache.get_or_load("k", load) == 1
    assert cache.get("k") is None


async def test_invalidate_where_during_load_discards_the_value():
    cache, _ = make()

    async def load() -> object:
        cache.invalidate_where(lambda _k, _v: False)  # the loading value cannot be matched yet
        return 1

    await cache.get_or_load("k", load)
    assert cache.get("k") is None


async def test_callers_after_an_invalidation_do_not_join_the_old_load():
    cache, _ = make()
    release = asyncio.Event()
    values = iter(["old", "new"])

    async def load() -> object:
        value = next(values)
        if value == "old":
            await release.wait()
        return value

    first = asyncio.create_task(cache.get_or_load("k", load))
    await asyncio.sleep(0)
    cache.invalidate("k")
    assert await cache.get_or_load("k", load) == "new"  # its own load, after the write
    release.set()
    assert await first == "old"
    assert cache.get("k") == "new"  # the old load finished last but was not stored


# --- LRU bound -----------------------------------------------------------------------------------------
async def test_lru_evicts_at_max_size():
    cache, _ = make(max_size=3)
    for key in "abcd":
        cache.put(key, key)
    assert len(cache) == 3 and cache.get("a") is None
    assert [cache.get(k) for k in "bcd"] == ["b", "c", "d"]
    assert evictions(cache, "lru") == 1


async def test_lru_keeps_the_recently_used():
    cache, _ = make(max_size=3)
    for key in "abc":
        cache.put(key, key)
    assert cache.get("a") == "a"  # a is now the most recent
    cache.put("d", "d")
    assert cache.get("b") is None and cache.get("a") == "a"


async def test_size_never_exceeds_the_bound():
    cache, _ = make(max_size=5, ttl=10)
    for i in range(1000):
        await cache.get_or_load(str(i), Loader(i))
    assert len(cache) == 5
    assert metric("cache_size", cache) == 5
    assert evictions(cache, "lru") == 995


# --- single flight --------------------------------------------------------------------------------------
async def test_100_concurrent_callers_one_load():
    cache, _ = make(ttl=10)
    calls = 0

    async def load() -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 7

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(100)))
    assert results == [7] * 100 and calls == 1
    assert misses(cache, "not_found") == 100  # every caller missed; one went to the database


async def test_concurrent_callers_for_different_keys_load_each_key_once():
    cache, _ = make(ttl=10)
    calls: dict[str, int] = {}

    async def load_for(key: str) -> object:
        calls[key] = calls.get(key, 0) + 1
        await asyncio.sleep(0.001)
        return key

    def loader(key: str) -> Callable[[], Awaitable[object]]:
        return lambda: load_for(key)

    keys = [f"k{i % 5}" for i in range(50)]
    results = await asyncio.gather(*(cache.get_or_load(k, loader(k)) for k in keys))
    assert results == keys and calls == {f"k{i}": 1 for i in range(5)}


async def test_errors_are_not_cached():
    cache, _ = make(ttl=10)
    loader = Loader(1)
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)
    loader.error = None
    assert await cache.get_or_load("k", loader) == 1
    assert loader.calls == 2


async def test_a_loader_error_reaches_every_waiter():
    cache, _ = make(ttl=10)

    async def failing() -> object:
        await asyncio.sleep(0.01)
        raise DbDown("db down")

    results = await asyncio.gather(
        *(cache.get_or_load("k", failing) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, DbDown) for r in results)
    assert len(cache) == 0


async def test_cancelled_first_caller_does_not_poison_waiters():
    cache, _ = make(ttl=10)
    started = asyncio.Event()

    async def slow() -> object:
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
    assert cache.get("k") == 5


async def test_a_cancelled_waiter_leaves_the_load_running():
    cache, _ = make(ttl=10)
    loader_calls = 0

    async def slow() -> object:
        nonlocal loader_calls
        loader_calls += 1
        await asyncio.sleep(0.02)
        return 9

    first = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0)
    waiter.cancel()
    assert await first == 9
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert loader_calls == 1 and cache.get("k") == 9


# --- stale-on-error (RES-9) ----------------------------------------------------------------------------
async def test_stale_served_when_the_loader_fails_within_max_stale():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    loader.error = DbDown("db down")
    assert await cache.get_or_load("k", loader) == "v1"
    assert stale_served(cache) == 1 and loader.calls == 2


async def test_stale_served_just_before_max_stale():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 1.0999
    loader.error = DbDown("db down")
    assert await cache.get_or_load("k", loader) == "v1"


async def test_error_propagates_past_max_stale():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 1.1
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)
    assert stale_served(cache) == 0


async def test_an_expired_entry_is_reloaded_not_served_while_the_loader_works():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    loader.value = "v2"
    assert await cache.get_or_load("k", loader) == "v2"
    assert stale_served(cache) == 0
    loader.error = DbDown("db down")
    assert await cache.get_or_load("k", loader) == "v2"  # fresh again: a hit, no load
    assert loader.calls == 2


async def test_a_reload_after_stale_serving_replaces_the_stale_value():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    loader.error = DbDown("db down")
    assert await cache.get_or_load("k", loader) == "v1"
    loader.error, loader.value = None, "v2"
    assert await cache.get_or_load("k", loader) == "v2"  # still expired: the next call retries
    assert cache.get("k") == "v2"


async def test_never_stale_after_invalidate():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    cache.invalidate("k")  # e.g. the API key was revoked
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)
    assert stale_served(cache) == 0


async def test_never_stale_after_invalidate_of_a_fresh_entry():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    cache.invalidate("k")  # while fresh; the outage comes later
    clock.now = 0.5
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)


async def test_never_stale_after_invalidate_where():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    assert cache.invalidate_where(lambda _k, v: v == "v1") == 1  # matches stale entries too
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)


async def test_never_stale_after_clear():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    cache.clear()
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)


async def test_never_stale_when_invalidated_during_the_failing_load():
    cache, clock, _ = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5

    async def failing() -> object:
        cache.invalidate("k")  # a revocation arrives (NOTIFY) while the database times out
        raise DbDown("timeout")

    with pytest.raises(DbDown):
        await cache.get_or_load("k", failing)
    assert stale_served(cache) == 0


async def test_no_stale_serving_when_max_stale_is_zero():
    cache, clock, loader = await populated(ttl=0.1, max_stale=0.0)
    clock.now = 0.1
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)


async def test_no_stale_serving_for_an_absent_key():
    cache, _ = make(max_stale=10.0)
    loader = Loader()
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)


async def test_cancellation_is_never_answered_from_stale():
    cache, clock, _ = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5

    async def hanging() -> object:
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(cache.get_or_load("k", hanging))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stale_served(cache) == 0


async def test_waiters_of_a_failing_load_get_the_stale_value_too():
    cache, clock, _ = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5

    async def failing() -> object:
        await asyncio.sleep(0.01)
        raise DbDown("timeout")

    results = await asyncio.gather(*(cache.get_or_load("k", failing) for _ in range(5)))
    assert results == ["v1"] * 5
    assert stale_served(cache) == 5  # per request served


async def test_stale_entries_stay_inside_the_lru_bound():
    cache, clock = make(ttl=0.1, max_size=3, max_stale=100.0)
    for key in "abcdef":
        cache.put(key, key)
    clock.now = 50.0  # all stale
    assert len(cache) == 3
    loader = Loader()
    loader.error = DbDown("db down")
    assert await cache.get_or_load("f", loader) == "f"
    with pytest.raises(DbDown):
        await cache.get_or_load("a", loader)  # evicted by LRU: nothing to fall back on


async def test_an_entry_dropped_past_max_stale_counts_as_a_ttl_eviction():
    cache, clock, _ = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 2.0
    cache.put("other", 1)  # mutations purge what is past TTL + max_stale
    assert evictions(cache, "ttl") == 1 and len(cache) == 1


async def test_stale_warning_is_rate_limited(monkeypatch: pytest.MonkeyPatch):
    cache, clock, loader = await populated(ttl=0.1, max_stale=1000.0)
    loader.error = DbDown("db down")
    with capture_logs() as logs:
        # a fresh logger: one cached under an earlier logging configuration would bypass the capture
        monkeypatch.setattr(cache_module, "log", structlog.get_logger("paycore.cache"))
        for step in range(5):
            clock.now = 1.0 + step  # five within one interval
            await cache.get_or_load("k", loader)
        clock.now = 1.0 + STALE_WARN_INTERVAL
        await cache.get_or_load("k", loader)
    warnings = [e for e in logs if e["event"] == "cache_stale_served"]
    assert len(warnings) == 2
    assert warnings[0]["log_level"] == "warning" and warnings[0]["cache"] == cache.name
    assert warnings[0]["error"] == "DbDown" and warnings[1]["served"] == 5
    assert "k" not in {str(v) for e in warnings for v in e.values()}  # no key in the log
    assert stale_served(cache) == 6


# --- kill switch ------------------------------------------------------------------------------------------
async def test_disabled_cache_always_loads_and_drops_what_it_held():
    cache, _ = make(ttl=10)
    loader = Loader(1)
    await cache.get_or_load("k", loader)
    cache.enabled = False
    await cache.get_or_load("k", loader)
    assert loader.calls == 2 and len(cache) == 0 and misses(cache, "disabled") == 1
    cache.put("k", 2)
    assert cache.get("k") is None


async def test_disabled_cache_never_serves_stale():
    cache, clock, loader = await populated(ttl=0.1, max_stale=10.0)
    clock.now = 1.0
    cache.enabled = False
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.get_or_load("k", loader)


async def test_follows_a_hot_toggled_switch():
    switch = {"on": True}  # what `FeatureFlags.switch` hands out: read at every use
    cache, _ = make(ttl=10)
    cache.follow(lambda: switch["on"])
    loader = Loader()
    await cache.get_or_load("k", loader)
    switch["on"] = False
    await cache.get_or_load("k", loader)
    switch["on"] = True
    await cache.get_or_load("k", loader)
    await cache.get_or_load("k", loader)
    assert loader.calls == 3


# --- metrics ---------------------------------------------------------------------------------------------
async def test_miss_reasons_not_found_and_expired():
    cache, clock = make(ttl=0.1)
    loader = Loader()
    await cache.get_or_load("k", loader)
    clock.now = 0.2
    await cache.get_or_load("k", loader)
    assert misses(cache, "not_found") == 1 and misses(cache, "expired") == 1


async def test_miss_reason_expired_inside_the_stale_window():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    await cache.get_or_load("k", loader)
    assert misses(cache, "expired") == 1


async def test_eviction_reasons():
    cache, clock = make(ttl=0.1, max_size=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # lru: a
    cache.invalidate("b")  # manual
    clock.now = 1.0
    cache.put("d", 4)  # ttl: c
    assert (evictions(cache, "lru"), evictions(cache, "manual"), evictions(cache, "ttl")) == (1, 1, 1)


async def test_each_expired_value_counts_as_one_ttl_eviction():
    cache, clock, loader = await populated(ttl=0.1, max_stale=1.0)
    clock.now = 0.5
    await cache.get_or_load("k", loader)  # the stale value is replaced by the reload
    assert evictions(cache, "ttl") == 1
    clock.now = 5.0  # the reloaded value is held until 1.6
    cache.put("other", 1)
    assert evictions(cache, "ttl") == 2 and len(cache) == 1


async def test_size_gauge_follows_puts_and_invalidations():
    cache, _ = make()
    cache.put("a", 1)
    cache.put("b", 2)
    assert metric("cache_size", cache) == 2
    cache.invalidate("a")
    assert metric("cache_size", cache) == 1
    cache.clear()
    assert metric("cache_size", cache) == 0


async def test_metric_labels_never_carry_keys():
    cache, clock = make(ttl=0.1, max_size=2, max_stale=1.0)
    secret_key = "sk_test_do_not_export"
    loader = Loader()
    await cache.get_or_load(secret_key, loader)
    clock.now = 0.5
    loader.error = DbDown("x")
    await cache.get_or_load(secret_key, loader)
    for family in REGISTRY.collect():
        if family.name.startswith("cache_"):
            for sample in family.samples:
                assert secret_key not in sample.labels.values()
                assert set(sample.labels) <= {"cache", "reason"}


# --- refresh (admin X-Bypass-Cache) ------------------------------------------------------------------
async def test_refresh_skips_the_cache_and_stores_the_fresh_value():
    cache, _ = make(ttl=10)
    loader = Loader("old")
    await cache.get_or_load("k", loader)
    loader.value = "new"
    assert await cache.refresh("k", loader) == "new"
    assert cache.get("k") == "new" and loader.calls == 2 and misses(cache, "bypass") == 1


async def test_refresh_error_propagates_and_keeps_the_entry():
    cache, _ = make(ttl=10, max_stale=10)
    loader = Loader("old")
    await cache.get_or_load("k", loader)
    loader.error = DbDown("db down")
    with pytest.raises(DbDown):
        await cache.refresh("k", loader)  # never stale: the administrator asked for the database
    assert cache.get("k") == "old"


async def test_refresh_invalidated_meanwhile_is_not_stored():
    cache, _ = make(ttl=10)

    async def load() -> object:
        cache.invalidate("k")
        return "predates the write"

    assert await cache.refresh("k", load) == "predates the write"
    assert cache.get("k") is None


async def test_has_fresh_reads_without_metrics_or_reordering():
    cache, clock = make(ttl=0.1, max_size=2, max_stale=1.0)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.has_fresh("a") and not cache.has_fresh("zzz")
    cache.put("c", 3)  # "a" was not touched by has_fresh: still the least recently used
    assert not cache.has_fresh("a") and metric("cache_hits_total", cache) == 0
    clock.now = 0.5
    assert not cache.has_fresh("b")  # stale is not fresh
