"""Per-IP token buckets for the unauthenticated hosted-checkout routes (SEC-4, ARCH-3.1).

A small in-memory limiter until the general rate limiter lands: 10 requests/s with a burst of 20
per client IP (`PAYCORE_IP_RATE_LIMIT_RPS`, `PAYCORE_IP_RATE_LIMIT_BURST`); keys idle for 3 minutes
are dropped, and at most 10,000 keys are kept (the least recently seen goes first). It is
process-local and runs on the event loop only, so no lock is needed.

The client IP is the socket peer without its port. `X-Forwarded-For` is believed only when that peer
is a trusted proxy (`PAYCORE_TRUSTED_PROXIES`, CIDRs); the client is then the right-most hop that is
not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

IDLE_TTL: Final = 180.0
MAX_KEYS: Final = 10_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, for the Retry-After header


class IpRateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        idle_ttl: float = IDLE_TTL,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self.idle_ttl = idle_ttl
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str) -> Decision:
        """Take one token for `key`, or say how long until one is available."""
        now = self._clock()
        self._expire(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True)
        return Decision(False, max(1, math.ceil((1.0 - bucket.tokens) / self.rate)))

    def _expire(self, now: float) -> None:
        """Drop keys idle for longer than the TTL (the least recently seen sit at the front)."""
        buckets = self._buckets
        while buckets:
            key, bucket = next(iter(buckets.items()))
            if now - bucket.updated <= self.idle_ttl:
                break
            del buckets[key]


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's IP: the socket peer, or (behind trusted proxies) the right-most untrusted
    `X-Forwarded-For` hop. Never includes a port."""
    peer_ip = _ip(peer) if peer else None
    if peer_ip is None:
        return peer or "unknown"
    if not forwarded_for or not trusted or not _trusted(peer_ip, trusted):
        return str(peer_ip)
    hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
    candidate = peer_ip
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            break  # a malformed hop: trust nothing further left
        candidate = address
        if not _trusted(address, trusted):
            break
    return str(candidate)
