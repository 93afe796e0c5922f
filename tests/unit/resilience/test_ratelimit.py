"""A8 / SEC-4: token buckets per merchant and per IP (memory backend, fake clock), client IPs
behind trusted proxies, 429 with Retry-After and the rejection metric."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from paycore.config import ConfigError, load_settings
from paycore.kernel.errors import PaycoreError
from paycore.platform.ratelimit import (
    MemoryBuckets,
    Rate,
    RateLimits,
    RedisWindows,
    client_ip,
    parse_networks,
)

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TEN_PER_S_BURST_20 = Rate(10, 20)


def limits(
    clock: Clock, *, merchant: Rate = TEN_PER_S_BURST_20, ip: Rate = TEN_PER_S_BURST_20, **kw
) -> RateLimits:
    return RateLimits(MemoryBuckets(clock=clock, **kw), merchant=merchant, ip=ip)


def scope(peer: str, port: int = 5000, path: str = "/checkout/callback", xff: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", xff.encode())] if xff else []
    return {"type": "http", "path": path, "client": (peer, port), "headers": headers}


async def outcomes(check, n: int) -> list[int]:
    codes = []
    for _ in range(n):
        try:
            await check()
            codes.append(200)
        except PaycoreError as exc:
            codes.append(exc.status)
    return codes


async def test_fifty_immediate_calls_at_10_per_second_burst_20() -> None:
    rl = limits(Clock())
    codes = await outcomes(lambda: rl.check_merchant("m1"), 50)
    assert codes.count(200) == 20 and codes.count(429) == 30
    assert codes[:20] == [200] * 20


async def test_rejection_is_a_rate_limited_problem_with_retry_after() -> None:
    rl = limits(Clock(), merchant=Rate(2, 1))
    await rl.check_merchant("m1")
    before = REGISTRY.get_sample_value("rate_limit_rejections_total", {"scope": "merchant"}) or 0
    with pytest.raises(PaycoreError) as info:
        await rl.check_merchant("m1")
    assert info.value.status == 429 and info.value.spec.code == "rate_limited"
    assert info.value.headers["Retry-After"] == "1"  # 0.5 s rounded up, never 0
    after = REGISTRY.get_sample_value("rate_limit_rejections_total", {"scope": "merchant"})
    assert after == before + 1


async def test_another_merchant_is_unaffected() -> None:
    rl = limits(Clock())
    assert (await outcomes(lambda: rl.check_merchant("busy"), 30)).count(200) == 20
    assert await outcomes(lambda: rl.check_merchant("quiet"), 20) == [200] * 20


async def test_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    rl = limits(clock)
    await outcomes(lambda: rl.check_merchant("m1"), 25)
    clock.now += 0.5  # 5 tokens at 10/s
    assert (await outcomes(lambda: rl.check_merchant("m1"), 10)).count(200) == 5
    clock.now += 60  # never more than the burst
    assert (await outcomes(lambda: rl.check_merchant("m1"), 30)).count(200) == 20


async def test_retry_after_matches_the_refill_time() -> None:
    bucket = MemoryBuckets(clock=Clock())
    rate = Rate(0.25, 1)  # one request every 4 s
    assert bucket.take("s", "k", rate).allowed
    decision = bucket.take("s", "k", rate)
    assert not decision.allowed and decision.retry_after == pytest.approx(4.0)


async def test_one_ip_over_two_connections_shares_a_bucket() -> None:
    rl = limits(Clock())
    first = await outcomes(lambda: rl.check_ip(scope("203.0.113.7", 40001)), 15)
    second = await outcomes(lambda: rl.check_ip(scope("203.0.113.7", 40002)), 15)
    assert first.count(200) + second.count(200) == 20
    assert await outcomes(lambda: rl.check_ip(scope("203.0.113.8", 40003)), 5) == [200] * 5


async def test_health_and_metrics_are_exempt() -> None:
    rl = limits(Clock(), ip=Rate(1, 1))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert await outcomes(lambda p=path: rl.check_ip(scope("198.51.100.1", path=p)), 5) == [200] * 5


def test_idle_keys_expire_after_three_minutes() -> None:
    clock = Clock()
    buckets = MemoryBuckets(clock=clock, idle_expiry=180.0)
    for i in range(1000):
        buckets.take("ip", f"10.0.{i // 256}.{i % 256}", Rate(10, 20))
    assert len(buckets) == 1000
    clock.now += 179
    assert buckets.sweep() == 0 and len(buckets) == 1000
    clock.now += 2
    buckets.take("ip", "192.0.2.1", Rate(10, 20))  # any hit sweeps the idle ones
    assert len(buckets) == 1
    clock.now += 181
    buckets.sweep()
    assert len(buckets) == 0


def test_key_cap_holds_and_evicts_the_least_recently_used() -> None:
    buckets = MemoryBuckets(clock=Clock(), max_keys=10_000)
    rate = Rate(10, 20)
    for i in range(10_001):
        buckets.take("ip", f"k{i}", rate)
    assert len(buckets) <= 10_000
    for _ in range(20):
        buckets.take("ip", "k10000", rate)  # the newest key is kept, and now empty
    assert not buckets.take("ip", "k10000", rate).allowed
    assert buckets.take("ip", "k0", rate).allowed  # the oldest was evicted: a fresh bucket


async def test_disabled_limits_let_everything_through() -> None:
    rl = RateLimits(MemoryBuckets(clock=Clock()), merchant=Rate(1, 1), ip=Rate(1, 1), enabled=False)
    assert await outcomes(lambda: rl.check_merchant("m"), 10) == [200] * 10


async def test_ip_decision_answers_without_raising_and_counts_the_refusal() -> None:
    """The hosted-checkout pages' form of the per-IP limit: the same buckets as `check_ip`."""
    rl = limits(Clock(), ip=Rate(1, 2))
    before = REGISTRY.get_sample_value("rate_limit_rejections_total", {"scope": "ip"}) or 0.0
    decisions = [await rl.ip_decision(scope("203.0.113.9", port=40000 + i)) for i in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[2].retry_after == pytest.approx(1.0)
    assert REGISTRY.get_sample_value("rate_limit_rejections_total", {"scope": "ip"}) == before + 1
    with pytest.raises(PaycoreError):  # one bucket for both forms
        await rl.check_ip(scope("203.0.113.9"))
    assert (await rl.ip_decision(scope("198.51.100.1"))).allowed  # another client
    rl.enabled = False
    assert (await rl.ip_decision(scope("203.0.113.9"))).allowed  # the kill switch


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", None, (), "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", (), "203.0.113.9"),  # no trusted proxies: the header is ignored
        ("203.0.113.9", "1.2.3.4", ("10.0.0.0/8",), "203.0.113.9"),  # peer not a proxy: spoofed header
        ("10.0.0.5", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.9", ("10.0.0.0/8",), "1.2.3.4"),  # right-most untrusted
        ("10.0.0.5", "10.0.0.7, 10.0.0.9", ("10.0.0.0/8",), "10.0.0.7"),  # all trusted: the left-most
        ("10.0.0.5", "junk, 10.0.0.9", ("10.0.0.0/8",), "10.0.0.9"),  # malformed: the last vouched hop
        ("::1", "2001:db8::1", ("::1/128",), "2001:db8::1"),
        (None, None, (), "unknown"),
    ],
)
def test_client_ip(peer, xff, trusted, expected) -> None:
    assert client_ip(peer, xff, parse_networks(trusted)) == expected


async def test_forwarded_clients_behind_a_trusted_proxy_get_their_own_buckets() -> None:
    rl = RateLimits(
        MemoryBuckets(clock=Clock()),
        merchant=Rate(1, 1),
        ip=Rate(1, 2),
        trusted_proxies=parse_networks(["10.0.0.0/8"]),
    )
    proxy = "10.1.2.3"
    assert await outcomes(lambda: rl.check_ip(scope(proxy, xff="198.51.100.1")), 3) == [200, 200, 429]
    assert await outcomes(lambda: rl.check_ip(scope(proxy, xff="198.51.100.2")), 2) == [200, 200]


def test_settings_choose_the_backend() -> None:
    base = {"PAYCORE_ENV": "test"}
    memory = RateLimits.from_settings(load_settings(base))
    assert isinstance(memory.backend, MemoryBuckets)
    assert memory.merchant_rate == Rate(100, 200) and memory.ip_rate == Rate(10, 20)
    assert memory.backend.max_keys == 10_000 and memory.backend.idle_expiry == 180.0
    redis = RateLimits.from_settings(
        load_settings({**base, "PAYCORE_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379/0"})
    )
    assert isinstance(redis.backend, RedisWindows)
    with pytest.raises(ConfigError, match=r"^PAYCORE_RATE_LIMIT_STORAGE"):
        load_settings({**base, "PAYCORE_RATE_LIMIT_STORAGE": "memcached://x"})


async def test_a_merchant_tier_override_gets_its_own_rate() -> None:
    settings = load_settings(
        {"PAYCORE_ENV": "test", "PAYCORE_MERCHANT_RATE_LIMIT_OVERRIDES": "big-shop=1000/50, tiny=1/2"}
    )
    rl = RateLimits.from_settings(settings)
    assert rl.merchant_overrides == {"big-shop": Rate(1000, 50), "tiny": Rate(1, 2)}
    assert (await outcomes(lambda: rl.check_merchant("id-big", "big-shop"), 60)).count(200) == 50
    assert (await outcomes(lambda: rl.check_merchant("id-tiny", "tiny"), 5)).count(200) == 2
    assert (await outcomes(lambda: rl.check_merchant("id-std", "standard"), 5)).count(200) == 5


@pytest.mark.parametrize("value", ["acme", "acme=0/10", "acme=5", "Acme=5/10", "acme=5/0"])
def test_malformed_overrides_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^PAYCORE_MERCHANT_RATE_LIMIT_OVERRIDES"):
        load_settings({"PAYCORE_ENV": "test", "PAYCORE_MERCHANT_RATE_LIMIT_OVERRIDES": value})
