"""Sending one webhook: the pooled session (API-1 table row "webhooks"), the SSRF-guarded resolver
and the bulkheads (RES-5).

* One `ClientSession` for all receivers: `limit` 200, `limit_per_host` 5 (a slow receiver cannot take
  every connection), keep-alive 30 s, connect 5 s, 10 s per attempt, redirects never followed, TLS
  verification on. Its connector is separate from the gateway's, so webhook saturation never
  delays a payment.
* `GuardedResolver` checks every address a host name resolves to *at connection time*, so a name
  that passed the check at registration and later resolves to 127.0.0.1 (DNS rebinding) is refused.
* `Bulkhead`: an `asyncio.Semaphore` that exports `bulkhead_in_use{name}` and counts
  `bulkhead_rejections_total{name}` when a caller had to wait for a slot.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from paycore.platform import http
from paycore.platform.observability import metrics as m
from paycore.webhooks import model

USER_AGENT = "paycore-webhooks/0.1 (+https://www.standardwebhooks.com/)"
MAX_ERROR_BODY = 512


class BlockedAddress(OSError):
    """The receiver's host resolves only to addresses webhooks may not reach (SSRF guard)."""


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver, then drops forbidden addresses (unless allowed)."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.allow_private:
            return results
        allowed = [r for r in results if not model.forbidden_address(r["host"])]
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to private or reserved addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def create_webhook_session(
    *,
    limit: int,
    limit_per_host: int,
    keepalive: float,
    timeout: float,
    allow_private: bool,
    connect_timeout: float = 5.0,
) -> aiohttp.ClientSession:
    """The webhook session (create inside the running loop; close at shutdown)."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        keepalive_timeout=keepalive,
        ttl_dns_cache=60,
        use_dns_cache=True,
        ssl=http.tls_context(),
        resolver=GuardedResolver(allow_private=allow_private),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=timeout, connect=connect_timeout, sock_connect=connect_timeout, sock_read=timeout
        ),
        headers={"User-Agent": USER_AGENT},
        trace_configs=[http.connection_trace_config("webhooks")],
        raise_for_status=False,
        auto_decompress=True,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    duration: float
    error: str | None = None
    retry_after: str | None = None


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> AttemptResult:
    """One POST; never raises except on cancellation. Redirects are answers, not hops."""
    started = time.perf_counter()
    try:
        async with (
            asyncio.timeout(timeout),
            session.post(url, data=body, headers=dict(headers), **http.NO_REDIRECTS) as resp,
        ):
            # read (and bound) the body so the connection can be reused
            await resp.content.read(MAX_ERROR_BODY)
            return AttemptResult(
                resp.status, time.perf_counter() - started, retry_after=resp.headers.get("Retry-After")
            )
    except TimeoutError:
        return AttemptResult(None, time.perf_counter() - started, error=f"timeout after {timeout:g}s")
    except BlockedAddress as exc:
        return AttemptResult(None, time.perf_counter() - started, error=f"blocked: {exc}")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, BlockedAddress):
            return AttemptResult(None, time.perf_counter() - started, error=f"blocked: {cause}")
        return AttemptResult(None, time.perf_counter() - started, error=f"connect error: {cause}"[:200])
    except (aiohttp.ClientError, OSError) as exc:
        return AttemptResult(None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"[:200])


class Bulkhead:
    """A named semaphore with metrics (RES-5)."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self.in_use = 0
        self.peak = 0
        self._gauge = m.BULKHEAD_IN_USE.labels(name)
        self._rejections = m.BULKHEAD_REJECTIONS.labels(name)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem.locked():
            self._rejections.inc()
        async with self._sem:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
            self._gauge.inc()
            try:
                yield
            finally:
                self.in_use -= 1
                self._gauge.dec()
