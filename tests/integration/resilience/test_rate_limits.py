"""A8 / SEC-4 against real storage and the real app: the Redis backend (`limits` moving window)
shared by several instances, failing open, and 429 + Retry-After through the HTTP stack."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest
from litestar import Litestar, get
from prometheus_client import REGISTRY

from paycore.app import _on_paycore_error
from paycore.kernel.errors import PaycoreError
from paycore.platform.ratelimit import MemoryBuckets, Rate, RateLimits, RedisWindows, ip_rate_limit_guard
from tests.integration.resilience.asgi import call

pytestmark = pytest.mark.integration

REDIS = "redis://127.0.0.1:6379/0"
RATE = Rate(10, 20)


async def admitted(backend, scope: str, key: str, n: int) -> int:
    return sum([(await backend.hit(scope, key, RATE)).allowed for _ in range(n)])


async def test_redis_fifty_immediate_calls_admit_the_burst() -> None:
    backend = RedisWindows(REDIS)
    key = uuid.uuid4().hex
    try:
        assert await admitted(backend, "merchant", key, 50) == 20
        refused = await backend.hit("merchant", key, RATE)
        assert not refused.allowed and 0 < refused.retry_after <= 2.0
        assert await admitted(backend, "merchant", uuid.uuid4().hex, 20) == 20  # another merchant
    finally:
        await backend.clear("merchant", key, RATE)
        await backend.aclose()


async def test_redis_bucket_is_shared_by_every_instance() -> None:
    """Two paycore instances (two clients) share one limit through Redis."""
    first, second = RedisWindows(REDIS), RedisWindows(REDIS)
    key = uuid.uuid4().hex
    try:
        counts = await asyncio.gather(admitted(first, "ip", key, 25), admitted(second, "ip", key, 25))
        assert sum(counts) == 20
    finally:
        await first.clear("ip", key, RATE)
        await first.aclose()
        await second.aclose()


async def test_redis_unreachable_fails_open_and_is_counted() -> None:
    backend = RedisWindows("redis://127.0.0.1:1/0")
    before = REGISTRY.get_sample_value("rate_limit_storage_errors_total", {"scope": "merchant"}) or 0
    try:
        decision = await asyncio.wait_for(backend.hit("merchant", "m", RATE), 5)
    finally:
        await backend.aclose()
    assert decision.allowed
    assert REGISTRY.get_sample_value("rate_limit_storage_errors_total", {"scope": "merchant"}) == before + 1


@pytest.mark.parametrize("storage", ["memory://", REDIS])
async def test_merchant_limit_over_http(live_app, storage: str) -> None:
    """Limit 10/s burst 20: 50 immediate calls → 20 pass, 30 get 429 `rate_limited` with
    Retry-After; another merchant is unaffected."""
    live = await live_app(
        merchant_rate_limit_rps=10, merchant_rate_limit_burst=20, rate_limit_storage=storage
    )
    other = await live.another_api_key()
    started = time.perf_counter()
    replies = [await live.get("/v1/payments?limit=1") for _ in range(50)]
    refill = math.ceil(10 * (time.perf_counter() - started))  # tokens that refilled meanwhile
    statuses = [r.status for r in replies]
    assert set(statuses) == {200, 429}
    assert 20 <= statuses.count(200) <= 20 + refill, statuses
    refused = next(r for r in replies if r.status == 429)
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [(await live.get("/v1/payments?limit=1", other)).status for _ in range(5)] == [200] * 5
    health = [(await call(live.app, "GET", "/healthz")).status for _ in range(30)]
    assert health == [200] * 30


async def test_ip_guard_on_a_public_route() -> None:
    @get("/public", guards=[ip_rate_limit_guard], sync_to_thread=False)
    def public() -> dict[str, str]:
        return {"ok": "yes"}

    app = Litestar([public], exception_handlers={PaycoreError: _on_paycore_error})
    app.state.rate_limits = RateLimits(MemoryBuckets(), merchant=RATE, ip=Rate(1, 3))
    statuses = [(await call(app, "GET", "/public")).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = await call(app, "GET", "/public")
    assert refused.json()["code"] == "rate_limited" and refused.headers["retry-after"] == "1"
