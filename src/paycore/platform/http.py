"""Outbound HTTP: one pooled aiohttp `ClientSession` per upstream (P2-3, API-1, RES-6, SCALE-5).

* `TCPConnector(limit, limit_per_host, keepalive_timeout, ttl_dns_cache)` per upstream, so webhook
  saturation can never take the gateway's connections.
* An explicit `ClientTimeout` (connect, socket read, total); callers narrow it per attempt.
* TLS ≥ 1.2 with certificate and host-name verification **always on**; an extra CA bundle (a test
  CA, a private EPX chain) may be *added* to the system store, never replace verification.
* Redirects are not followed: aiohttp has no session-wide switch, so every request made by
  paycore passes `allow_redirects=False` (`NO_REDIRECTS` below); a 3xx is an answer, not a hop.
* A `TraceConfig` counts new vs reused connections into `outbound_connections_total{client,kind}`
  and fills a per-request `RequestProbe`, which tells the gateway client whether any byte of a
  request may have left the process (the basis of "provably not delivered", §3.6).

Sessions are created inside the running event loop at startup (`bootstrap`) and closed at
shutdown. Bodies are never logged here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import msgspec
import structlog

from paycore.platform.observability import metrics
from paycore.platform.resilience import deadline

_log = structlog.get_logger("paycore.http")

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = [
    "NO_REDIRECTS",
    "ClientProfile",
    "RequestProbe",
    "connection_trace_config",
    "create_session",
    "gateway_profile",
    "reporting_profile",
    "tls_context",
]

NO_REDIRECTS: Final[Mapping[str, Any]] = {"allow_redirects": False}
USER_AGENT: Final = "paycore/0.1"


class ClientProfile(msgspec.Struct, frozen=True, kw_only=True):
    """Pool and timeout settings of one upstream (roadmap §2.6 table)."""

    name: str  # the `client` label of outbound_connections_total
    limit: int
    limit_per_host: int
    keepalive_timeout: float
    connect_timeout: float
    read_timeout: float  # socket read, per attempt
    total_timeout: float | None  # default per request; the caller narrows it to what remains
    ttl_dns_cache: int = 300
    ca_file: str | None = None


def gateway_profile(settings: Settings) -> ClientProfile:
    """EPX Server Post and Key Exchange: 50/50 connections, keep-alive 90 s, connect 5 s, 10 s/attempt."""
    return ClientProfile(
        name="gateway",
        limit=settings.gateway_max_conns,
        limit_per_host=settings.gateway_max_conns,
        keepalive_timeout=settings.gateway_keepalive,
        connect_timeout=settings.gateway_connect_timeout,
        read_timeout=settings.gateway_attempt_timeout,
        total_timeout=settings.gateway_attempt_timeout,
        ca_file=settings.epx_ca_file,
    )


def reporting_profile(settings: Settings) -> ClientProfile:
    """Reporting API: 100/50 connections, keep-alive 90 s, connect 10 s, 30 s per call."""
    return ClientProfile(
        name="reporting",
        limit=100,
        limit_per_host=50,
        keepalive_timeout=90.0,
        connect_timeout=10.0,
        read_timeout=settings.reporting_timeout,
        total_timeout=settings.reporting_timeout,
        ca_file=settings.epx_ca_file,
    )


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verification on, host names checked, TLS ≥ 1.2; `ca_file` adds trust, never removes checks."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class RequestProbe:
    """Per-request delivery facts, filled by the trace config when passed as `trace_request_ctx`.

    `headers_sent` turns true just *before* aiohttp hands the first byte of the request to the
    transport, so `headers_sent is False` proves nothing was sent. `tracked` is false when the
    session was built without `connection_trace_config` (then nothing can be proven).
    """

    __slots__ = ("connection", "headers_sent", "tracked")

    def __init__(self) -> None:
        self.tracked = False
        self.connection: str | None = None  # "new" or "reused" once a connection is held
        self.headers_sent = False

    @property
    def provably_not_sent(self) -> bool:
        return self.tracked and not self.headers_sent


def _probe(ctx: SimpleNamespace) -> RequestProbe | None:
    probe = getattr(ctx, "trace_request_ctx", None)
    return probe if isinstance(probe, RequestProbe) else None


def connection_trace_config(client: str) -> aiohttp.TraceConfig:
    """Counts `outbound_connections_total{client,kind=new|reused}` and fills `RequestProbe`s."""
    new_counter = metrics.OUTBOUND_CONNECTIONS.labels(client, "new")
    reused_counter = metrics.OUTBOUND_CONNECTIONS.labels(client, "reused")

    async def on_request_start(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        probe = _probe(ctx)
        if probe is not None:
            probe.tracked = True

    async def on_connection_create_end(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceConnectionCreateEndParams
    ) -> None:
        new_counter.inc()
        probe = _probe(ctx)
        if probe is not None:
            probe.connection = "new"

    async def on_connection_reuseconn(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceConnectionReuseconnParams
    ) -> None:
        reused_counter.inc()
        probe = _probe(ctx)
        if probe is not None:
            probe.connection = "reused"

    async def on_request_headers_sent(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestHeadersSentParams
    ) -> None:
        probe = _probe(ctx)
        if probe is not None:
            probe.headers_sent = True

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    config.on_connection_create_end.append(on_connection_create_end)
    config.on_connection_reuseconn.append(on_connection_reuseconn)
    config.on_request_headers_sent.append(on_request_headers_sent)
    return config


def create_session(
    profile: ClientProfile,
    *,
    headers: Mapping[str, str] | None = None,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """A pooled session for one upstream. Call inside the running loop; close it at shutdown."""
    connector = aiohttp.TCPConnector(
        limit=profile.limit,
        limit_per_host=profile.limit_per_host,
        keepalive_timeout=profile.keepalive_timeout,
        ttl_dns_cache=profile.ttl_dns_cache,
        use_dns_cache=True,
        ssl=tls_context(profile.ca_file),
    )
    timeout = aiohttp.ClientTimeout(
        total=profile.total_timeout,
        connect=profile.connect_timeout,
        sock_connect=profile.connect_timeout,
        sock_read=profile.read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        trace_configs=[connection_trace_config(profile.name), *(trace_configs or [])],
        raise_for_status=False,
        auto_decompress=True,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class UpstreamFailure(Exception):
    """A reporting upstream gave no usable answer. `healthy` says whether it answered at all
    (a 4xx or a non-success status: the upstream is up) — the breaker's verdict."""

    def __init__(self, message: str, *, healthy: bool) -> None:
        super().__init__(message)
        self.healthy = healthy


async def get_bounded(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    budget: float,
    max_body: int,
    what: str,
) -> bytes:
    """GET a JSON report under `min(budget, what remains)` with a bounded body; redirects not
    followed. Every failure is an `UpstreamFailure` naming `what`."""
    left = deadline.remaining(budget)
    if left is not None and left <= 0:
        raise UpstreamFailure(f"no time left for the {what}", healthy=True)
    try:
        async with (
            asyncio.timeout(left),
            session.get(url, params=params, headers=headers, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                _log.warning("report_http_error", report=what, status=resp.status)
                raise UpstreamFailure(f"the {what} answered HTTP {resp.status}", healthy=resp.status < 500)
            body = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                body.extend(chunk)
                if len(body) > max_body:
                    raise UpstreamFailure(f"the {what} is too large", healthy=False)
    except UpstreamFailure:
        raise
    except TimeoutError:
        _log.warning("report_timeout", report=what)
        raise UpstreamFailure(f"the {what} timed out", healthy=False) from None
    except (aiohttp.ClientError, OSError) as exc:
        _log.warning("report_connection_error", report=what, error=type(exc).__name__)
        raise UpstreamFailure(f"the {what} is unreachable ({type(exc).__name__})", healthy=False) from None
    return bytes(body)
