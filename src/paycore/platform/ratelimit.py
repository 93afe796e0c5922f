"""Rate limiting (A8, SEC-4): per merchant on authenticated routes, per client IP on public ones.

A limit is a `Rate`: a sustained `per_second` rate with a `burst` allowance. Refused requests get
429 `rate_limited` with `Retry-After` (whole seconds, at least 1) and count in
`rate_limit_rejections_total{scope}`. Health and metrics routes are never limited.

Merchant tiers: `PAYCORE_MERCHANT_RATE_LIMIT_OVERRIDES` gives named merchants (by slug) their own rate.

Two backends behind one interface (`Backend.hit(scope, key, rate) -> Decision`):

* `MemoryBuckets` (default, `PAYCORE_RATE_LIMIT_STORAGE=memory://`): token buckets in this process.
  Exact burst-then-refill; idle keys are forgotten after `idle_expiry` (a bucket idle that long is
  full again, so forgetting it changes nothing once `idle_expiry >= burst / rate`); at most
  `max_keys` buckets, the least recently used evicted first. It is driven by an injectable clock and
  needs no background task. (`limits`' own async memory storage starts an unsupervised expiry task
  and has no key cap, so it is not used here.)
* `RedisWindows` (`PAYCORE_RATE_LIMIT_STORAGE=redis://host:port/db`): the `limits` library's moving
  window in Redis, shared by every instance. A rate R/s with burst B is the window "B per ⌈B/R⌉ s":
  the same burst, the same long-run rate. Redis trouble fails open (logged, counted), because an
  outage of the limiter must not become an outage of payments; calls are bounded by short socket
  timeouts.

Client IP (`client_ip`): the socket peer without port; `X-Forwarded-For` is read only when the
peer is a trusted proxy (`PAYCORE_TRUSTED_PROXIES`), and then the right-most hop that is not itself
a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.platform.flags import Switch, constant
from paycore.platform.observability import metrics as m

if TYPE_CHECKING:
    from paycore.config import Settings

log = structlog.get_logger("paycore.ratelimit")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MERCHANT: Final = "merchant"
IP: Final = "ip"
ADMIN: Final = "admin"
EXEMPT_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics", "/health"})


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a rate needs per_second > 0 and burst >= 1")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until one more request would be allowed


class Backend(Protocol):
    async def hit(self, scope: str, key: str, rate: Rate) -> Decision: ...

    async def aclose(self) -> None: ...


class MemoryBuckets:
    """Token buckets in one process, bounded in keys and forgotten when idle."""

    def __init__(
        self,
        *,
        idle_expiry: float = 180.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_keys < 1 or idle_expiry <= 0:
            raise ValueError("max_keys >= 1 and idle_expiry > 0 required")
        self.idle_expiry = idle_expiry
        self.max_keys = max_keys
        self._clock = clock
        # (scope, key) -> [tokens, last update]; ordered by last use (LRU first)
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def sweep(self, now: float | None = None) -> int:
        """Forget buckets idle for `idle_expiry`; returns how many were dropped."""
        now = self._clock() if now is None else now
        dropped = 0
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self.idle_expiry:
                break
            buckets.popitem(last=False)
            dropped += 1
        return dropped

    def take(self, scope: str, key: str, rate: Rate) -> Decision:
        now = self._clock()
        self.sweep(now)
        slot = (scope, key)
        bucket = self._buckets.get(slot)
        if bucket is None:
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[slot] = [float(rate.burst), now]
        else:
            self._buckets.move_to_end(slot)
            bucket[0] = min(float(rate.burst), bucket[0] + (now - bucket[1]) * rate.per_second)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return Decision(True)
        return Decision(False, (1.0 - bucket[0]) / rate.per_second)

    async def hit(self, scope: str, key: str, rate: Rate) -> Decision:
        return self.take(scope, key, rate)

    async def aclose(self) -> None:
        self._buckets.clear()


class RedisWindows:
    """The `limits` moving window in Redis (shared by every instance); fails open."""

    def __init__(self, uri: str, *, socket_timeout: float = 0.25) -> None:
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter

        self._storage = RedisStorage(
            "async+" + uri.removeprefix("async+"),
            implementation="redispy",
            key_prefix="paycore_rl",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items: dict[Rate, Any] = {}

    def _item(self, rate: Rate) -> Any:
        item = self._items.get(rate)
        if item is None:
            from limits import RateLimitItemPerSecond

            window = max(1, math.ceil(rate.burst / rate.per_second))
            item = self._items[rate] = RateLimitItemPerSecond(rate.burst, window)
        return item

    async def hit(self, scope: str, key: str, rate: Rate) -> Decision:
        item = self._item(rate)
        try:
            if await self._limiter.hit(item, scope, key):
                return Decision(True)
            stats = await self._limiter.get_window_stats(item, scope, key)
        except Exception as exc:  # Redis down or slow: never block payments on the limiter
            m.RATE_LIMIT_ERRORS.labels(scope).inc()
            log.warning("rate_limit_storage_error", scope=scope, error=type(exc).__name__)
            return Decision(True)
        return Decision(False, max(stats.reset_time - time.time(), 0.0))

    async def clear(self, scope: str, key: str, rate: Rate) -> None:
        await self._limiter.clear(self._item(rate), scope, key)

    async def ping(self) -> bool:
        """Whether Redis answers `PING` (`/health`); never raises."""
        try:
            return bool(await self._storage.check())
        except Exception:
            return False

    async def aclose(self) -> None:
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or (behind trusted proxies) the right-most untrusted hop."""
    if not peer:
        return "unknown"
    if not forwarded_for or not trusted or not _trusted(peer, trusted):
        return peer
    nearest = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return nearest  # a malformed hop: stop at the last address a trusted proxy vouched for
        if not _trusted(address, trusted):
            return address
        nearest = address
    return nearest


def retry_after_header(seconds: float) -> str:
    """`Retry-After` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class RateLimits:
    """The two limits of the API, over one backend."""

    def __init__(
        self,
        backend: Backend,
        *,
        merchant: Rate,
        ip: Rate,
        trusted_proxies: Sequence[Network] = (),
        enabled: bool | Switch = True,
        merchant_overrides: Mapping[str, Rate] | None = None,
        admin: Rate | None = None,
    ) -> None:
        self.backend = backend
        self.merchant_rate = merchant
        self.merchant_overrides = dict(merchant_overrides or {})
        self.ip_rate = ip
        self.trusted_proxies = tuple(trusted_proxies)
        self.admin_rate = admin or Rate(5.0, 20)
        # the kill switch: a constant or a switch read at every check (platform.flags)
        self._enabled: Switch = enabled if callable(enabled) else constant(enabled)

    @property
    def enabled(self) -> bool:
        return self._enabled()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = constant(value)

    @classmethod
    def from_settings(cls, settings: Settings, *, enabled: Switch | None = None) -> RateLimits:
        storage = settings.rate_limit_storage
        backend: Backend
        if storage.removeprefix("async+").startswith(("redis://", "rediss://")):
            backend = RedisWindows(storage)
        elif storage.startswith("memory://"):
            backend = MemoryBuckets(
                idle_expiry=settings.rate_limit_idle_expiry, max_keys=settings.rate_limit_max_keys
            )
        else:
            raise ValueError(f"unsupported rate-limit storage {storage!r}")
        return cls(
            backend,
            merchant=Rate(settings.merchant_rate_limit_rps, settings.merchant_rate_limit_burst),
            ip=Rate(settings.ip_rate_limit_rps, settings.ip_rate_limit_burst),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            enabled=enabled if enabled is not None else settings.rate_limit_enabled,
            admin=Rate(settings.admin_rate_limit_rps, settings.admin_rate_limit_burst),
            merchant_overrides={
                slug: Rate(rps, burst) for slug, rps, burst in settings.merchant_rate_limit_overrides
            },
        )

    async def _decide(self, scope: str, key: str, rate: Rate) -> Decision:
        if not self._enabled():
            return Decision(True)
        decision = await self.backend.hit(scope, key, rate)
        if not decision.allowed:
            m.RATE_LIMIT_REJECTIONS.labels(scope).inc()
        return decision

    async def _check(self, scope: str, key: str, rate: Rate) -> None:
        decision = await self._decide(scope, key, rate)
        if not decision.allowed:
            raise PaycoreError(
                errors.RATE_LIMITED,
                f"Too many requests for this {'merchant' if scope == MERCHANT else 'client'}; "
                "retry after the number of seconds in Retry-After",
                headers={"Retry-After": retry_after_header(decision.retry_after)},
            )

    async def check_merchant(self, merchant_id: object, slug: str | None = None) -> None:
        """Raises 429 `rate_limited` when the merchant's bucket is empty. A merchant whose slug has
        an override (its tier, `PAYCORE_MERCHANT_RATE_LIMIT_OVERRIDES`) gets that rate instead."""
        rate = self.merchant_overrides.get(slug, self.merchant_rate) if slug else self.merchant_rate
        await self._check(MERCHANT, str(merchant_id), rate)

    async def check_ip(self, scope: Mapping[str, Any]) -> None:
        """Per client IP, for unauthenticated public routes (health and metrics exempt)."""
        if scope.get("path") in EXEMPT_PATHS:
            return
        await self._check(IP, self.client_ip(scope), self.ip_rate)

    async def ip_decision(self, scope: Mapping[str, Any]) -> Decision:
        """The per-IP decision without raising, for public routes that answer a refusal in their
        own format (the hosted-checkout HTML pages); `retry_after_header` formats it."""
        return await self._decide(IP, self.client_ip(scope), self.ip_rate)

    async def check_admin(self, scope: Mapping[str, Any]) -> None:
        """The admin API's own limit, per client IP, checked before authentication (so guessing
        tokens is limited too); merchant limits never apply to it."""
        await self._check(ADMIN, self.client_ip(scope), self.admin_rate)

    def client_ip(self, scope: Mapping[str, Any]) -> str:
        client = scope.get("client")
        peer = client[0] if client else None
        forwarded: str | None = None
        if self.trusted_proxies:
            values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
            forwarded = ",".join(values) if values else None
        return client_ip(peer, forwarded, self.trusted_proxies)

    async def aclose(self) -> None:
        await self.backend.aclose()


async def ip_rate_limit_guard(connection: Any, _: Any) -> None:
    """Litestar guard for unauthenticated public routes: `guards=[ip_rate_limit_guard]`."""
    limits: RateLimits | None = connection.app.state.get("rate_limits")
    if limits is not None:
        await limits.check_ip(connection.scope)
