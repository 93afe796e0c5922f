"""The per-IP limiter of the public checkout routes (SEC-4) and client-IP resolution."""

from __future__ import annotations

import pytest

from paycore.checkout.ratelimit import IpRateLimiter, client_ip, parse_networks

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refusal_with_retry_after_then_refill():
    clock = Clock()
    limiter = IpRateLimiter(10, 20, clock=clock)
    assert all(limiter.hit("203.0.113.9").allowed for _ in range(20))
    refused = limiter.hit("203.0.113.9")
    assert not refused.allowed and refused.retry_after == 1
    assert limiter.hit("198.51.100.1").allowed  # another IP has its own bucket
    clock.t += 0.1  # 10 rps: one token back
    assert limiter.hit("203.0.113.9").allowed
    assert not limiter.hit("203.0.113.9").allowed


def test_idle_keys_expire_after_three_minutes():
    clock = Clock()
    limiter = IpRateLimiter(10, 20, clock=clock)
    for i in range(1000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 1000
    clock.t += 181
    limiter.hit("192.0.2.1")
    assert len(limiter) == 1  # the 1,000 idle keys are gone


def test_key_count_is_capped():
    limiter = IpRateLimiter(10, 20, max_keys=10_000, clock=Clock())
    for i in range(10_001):
        limiter.hit(f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}")
    assert len(limiter) <= 10_000


def test_one_ip_over_two_connections_shares_one_bucket():
    limiter = IpRateLimiter(10, 20, clock=Clock())
    for port in range(20):
        assert limiter.hit(client_ip(f"203.0.113.9:{40000 + port}", None, ())).allowed
    assert not limiter.hit(client_ip("203.0.113.9:50000", None, ())).allowed
    assert client_ip("203.0.113.9", None, ()) == "203.0.113.9"
    assert client_ip("[2001:db8::1]:443", None, ()) == "2001:db8::1"


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    trusted = parse_networks(["10.0.0.0/8", "192.168.1.1/32"])
    xff = "198.51.100.7, 203.0.113.50, 10.1.2.3"
    # the peer is not a proxy: the header is the client's own claim
    assert client_ip("203.0.113.9", xff, trusted) == "203.0.113.9"
    # behind trusted proxies: the right-most hop that is not a proxy
    assert client_ip("192.168.1.1", xff, trusted) == "203.0.113.50"
    assert client_ip("10.0.0.5", "203.0.113.50", trusted) == "203.0.113.50"
    # every hop trusted: the left-most one
    assert client_ip("10.0.0.5", "10.9.9.9, 10.1.1.1", trusted) == "10.9.9.9"
    # no trusted proxies configured: never believed
    assert client_ip("10.0.0.5", xff, ()) == "10.0.0.5"
    # garbage in the header is not an address
    assert client_ip("10.0.0.5", "not-an-ip", trusted) == "10.0.0.5"
