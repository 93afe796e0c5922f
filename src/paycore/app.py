"""The ASGI application: routes of each capability, middleware, error rendering, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar import Litestar, Request, Response, get
from litestar.config.compression import CompressionConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from paycore import __version__
from paycore.admin.api import AdminController
from paycore.admin.service import start_tracing
from paycore.api_support import SKIP_COMPRESSION, complete_problem_responses, switchable_compression
from paycore.bootstrap import Container, build_container
from paycore.checkout.api import route_handlers as checkout_routes
from paycore.conditional import describe_conditional_gets
from paycore.config import Settings, load_settings
from paycore.disputes.api import DisputeController
from paycore.disputes.service import DisputeService
from paycore.idempotency.model import Replay
from paycore.kernel import codec, errors
from paycore.kernel.errors import PaycoreError
from paycore.merchants.model import Principal, looks_like_jwt
from paycore.middleware import RequestEnvelope
from paycore.payment_methods.api import PaymentMethodController
from paycore.payment_methods.service import PaymentMethodService
from paycore.payments.api import PaymentController
from paycore.payments.service import PaymentService
from paycore.platform.context import current_request_id
from paycore.platform.db import migrate
from paycore.platform.db.pool import PING
from paycore.platform.flags import FeatureFlags
from paycore.platform.health import HealthBody, HealthReporter, standard_checks
from paycore.platform.observability import metrics as m
from paycore.platform.observability import runtime, tracing
from paycore.platform.observability.logging import configure_logging, flush_logs, sampling_target_for
from paycore.platform.ratelimit import RateLimits
from paycore.platform.shutdown import Lifecycle, install_drain_handlers, install_granian_drain_hook, run_phase
from paycore.subscriptions.api import SubscriptionController
from paycore.subscriptions.service import SubscriptionService
from paycore.webhooks.api import EventController, WebhookEndpointController
from paycore.webhooks.service import WebhookService

log = structlog.get_logger("paycore.app")


def _problem(exc: PaycoreError) -> Response[bytes]:
    return Response(
        content=codec.encode(exc.problem(current_request_id())),
        status_code=exc.status,
        media_type="application/problem+json",
        headers=exc.headers,
    )


def _on_paycore_error(_: Request[Any, Any, Any], exc: PaycoreError) -> Response[bytes]:
    return _problem(exc)


def _on_replay(_: Request[Any, Any, Any], exc: Replay) -> Response[bytes]:
    media = "application/problem+json" if exc.status >= 400 else "application/json"
    return Response(
        content=exc.body, status_code=exc.status, media_type=media, headers={"Idempotent-Replayed": "true"}
    )


def _on_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else {}
    message = str(first.get("message", exc.detail))
    if "malformed" in message.lower() or "invalid json" in message.lower():
        return _problem(PaycoreError(errors.MALFORMED_REQUEST, message))
    param = first.get("key")
    if first.get("source") in {"query", "path"}:
        return _problem(PaycoreError(errors.INVALID_PARAMETER, message, param=param))
    if first.get("source") == "header":
        return _problem(PaycoreError(errors.MALFORMED_REQUEST, message, param=param))
    return _problem(PaycoreError(errors.VALIDATION_FAILED, message, param=param))


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if "path_template" not in request.scope:
        # refused by the router (unknown path, method not allowed) before the request envelope
        # runs: still counted, under the bounded route label "unmatched"
        m.HTTP_REQUESTS.labels("unmatched", request.method, str(exc.status_code)).inc()
    spec = {
        400: errors.MALFORMED_REQUEST,
        401: errors.UNAUTHENTICATED,
        403: errors.FORBIDDEN,
        404: errors.NOT_FOUND,
        405: errors.METHOD_NOT_ALLOWED,
        413: errors.BODY_TOO_LARGE,
        415: errors.UNSUPPORTED_MEDIA_TYPE,
        429: errors.RATE_LIMITED,
        503: errors.NOT_READY,
    }.get(exc.status_code, errors.INTERNAL_ERROR)
    detail = exc.detail if exc.status_code < 500 else spec.title
    return _problem(PaycoreError(spec, detail))


def _on_timeout(_: Request[Any, Any, Any], exc: TimeoutError) -> Response[bytes]:
    return _problem(PaycoreError(errors.DEADLINE_EXCEEDED))


def _on_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled_exception", error=type(exc).__name__, detail=str(exc)[:200], exc_info=exc)
    return _problem(PaycoreError(errors.INTERNAL_ERROR))


# --- dependencies --------------------------------------------------------------------------------
def _container(request: Request[Any, Any, Any]) -> Container:
    container: Container | None = request.app.state.get("container")
    if container is None:
        raise PaycoreError(errors.NOT_READY)
    return container


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    header = request.headers.get("authorization")
    if not header or not header.lower().startswith("bearer "):
        raise PaycoreError(
            errors.UNAUTHENTICATED,
            "Send `Authorization: Bearer sk_…` (an API key) or `Authorization: Bearer <JWT>` (a service JWT)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    credential = header[7:].strip()
    merchants = _container(request).merchants
    if not credential.startswith("sk_") and looks_like_jwt(credential):
        principal = await merchants.authenticate_jwt(credential)  # service-to-service (RS256)
    else:
        principal = await merchants.authenticate(credential)
    limits: RateLimits | None = request.app.state.get("rate_limits")
    if limits is not None:
        await limits.check_merchant(principal.merchant.id, principal.merchant.slug)  # A8: 429 + Retry-After
    return principal


def provide_disputes(request: Request[Any, Any, Any]) -> DisputeService:
    service = _container(request).disputes
    if service is None:
        raise PaycoreError(errors.NOT_READY, "Dispute reporting is not configured (PAYCORE_NORTH_API_URL)")
    return service


def provide_webhooks(request: Request[Any, Any, Any]) -> WebhookService:
    return _container(request).webhooks


def provide_payments(request: Request[Any, Any, Any]) -> PaymentService:
    return _container(request).payments


def provide_payment_methods(request: Request[Any, Any, Any]) -> PaymentMethodService:
    return _container(request).payment_methods


def provide_subscriptions(request: Request[Any, Any, Any]) -> SubscriptionService:
    service = _container(request).subscriptions
    if service is None:
        raise PaycoreError(errors.NOT_READY)
    return service


# --- health and metrics --------------------------------------------------------------------------
@get("/healthz", include_in_schema=True, tags=["health"], summary="Liveness: the event loop answers")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@get("/readyz", tags=["health"], summary="Readiness: database reachable, migrations current, not draining")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    container: Container | None = request.app.state.get("container")
    lifecycle: Lifecycle = request.app.state.lifecycle
    checks: dict[str, Any] = {"draining": lifecycle.draining, "started": lifecycle.ready}
    ok = lifecycle.ready and not lifecycle.draining and container is not None
    if container is not None:
        try:
            async with asyncio.timeout(2.0):
                await container.db.fetchval(PING)
            checks["database"] = "ok"
        except Exception:
            checks["database"] = "unreachable"
            ok = False
        checks["migrations"] = "current" if container.extras.get("migrations_current") else "behind"
        ok = ok and bool(container.extras.get("migrations_current"))
    return Response(
        {"status": "ready" if ok else "not_ready", "checks": checks},
        status_code=200 if ok else 503,
        headers={"Retry-After": "1"} if not ok else {},
    )


@get(
    "/health",
    tags=["health"],
    summary="Component health: database, pool, gateway, rate-limit storage, job queue (RES-10)",
    description=(
        "`healthy` or `degraded` → 200, `unhealthy` → 503 (the database is down). Checks run at once, "
        "each cut at PAYCORE_HEALTH_TIMEOUT; the report is reused for PAYCORE_HEALTH_CACHE_TTL."
    ),
    responses={503: ResponseSpec(data_container=HealthBody, description="Unhealthy (the same report)")},
)
async def health(request: Request[Any, Any, Any]) -> Response[HealthBody]:
    reporter: HealthReporter | None = request.app.state.get("health")
    if reporter is None:  # starting or stopped: nothing to check with
        return Response(HealthBody(status="unhealthy", version=__version__, checks=[]), status_code=503)
    report = await reporter.report()
    return Response(
        reporter.render(report), status_code=report.http_status, headers={"Cache-Control": "no-store"}
    )


@get(
    "/metrics",
    include_in_schema=True,
    tags=["health"],
    summary="Prometheus metrics",
    media_type="text/plain",  # the Prometheus text exposition format (version in the Content-Type)
)
async def metrics_endpoint() -> Response[bytes]:
    body, content_type = m.render()
    return Response(content=body, media_type=content_type)


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    cached = request.app.state.get("openapi_bytes")
    if cached is None:
        cached = codec.encode(
            describe_conditional_gets(complete_problem_responses(request.app.openapi_schema.to_schema()))
        )
        request.app.state.openapi_bytes = cached
    return Response(content=cached, media_type="application/vnd.oai.openapi+json")


# --- lifespan ----------------------------------------------------------------------------------------
def _lifespan(settings: Settings, lifecycle: Lifecycle, flags: FeatureFlags):  # type: ignore[no-untyped-def]
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        start_tracing(settings.tracemalloc_enabled, settings.tracemalloc_frames)  # RES-M7, opt-in
        container = await build_container(settings, lifecycle=lifecycle, flags=flags)
        async with container.db.acquire() as con:
            container.extras["migrations_current"] = await migrate.is_current(con)
        if not container.extras["migrations_current"]:
            log.error("migrations_not_current", hint="run `paycore migrate`")
        app.state.container = container
        app.state.rate_limits = RateLimits.from_settings(settings, enabled=flags.switch("rate_limit"))
        app.state.health = HealthReporter(  # RES-10: /health
            standard_checks(
                db=container.db,
                pool_monitor=container.pool_monitor,
                breakers=container.breakers,
                rate_limits=app.state.rate_limits,
                gateway_url=settings.epx_server_post_url,
                dsn=settings.database_url,
                timeout=settings.health_timeout,
                pool_threshold=settings.db_pool_error_ratio,
            ),
            tasks=container.tasks,
            timeout=settings.health_timeout,
            cache_ttl=settings.health_cache_ttl,
            version=__version__,
        )
        if container.admin is not None:
            await container.admin.load_flags_at_start()  # stored kill-switch overrides, before serving
        container.start_background()
        container.start_cache_warmup()  # CACHE-1: busiest merchants, in the background (never awaited)
        if container.listener is not None:  # serve only once admin commands can be heard
            await container.listener.wait_listening(5.0)
        runtime.start_runtime_monitors(container.tasks)
        flags.export()
        m.reap_dead_processes()  # live gauges of workers that died without a clean exit
        if not lifecycle.drain_hooked:  # not under granian: wrap the loop's own handlers
            install_drain_handlers(
                lifecycle,
                prestop_delay=settings.shutdown_prestop_delay,
                drain_timeout=max(settings.shutdown_timeout - 10.0, 1.0),
            )
        gc.collect()
        gc.freeze()  # MEM-20: long-lived start-up objects leave the collector's generations
        lifecycle.ready = True
        log.info("serving", version=__version__)
        try:
            yield
        finally:
            lifecycle.ready = False
            lifecycle.start_draining()
            started = asyncio.get_running_loop().time()
            await run_phase("drain_requests", lambda: lifecycle.wait_idle(10.0), 11.0)
            await run_phase("background_tasks", container.aclose, 15.0)
            await run_phase("rate_limits", app.state.rate_limits.aclose, 2.0)
            app.state.container = None
            app.state.health = None
            m.SHUTDOWN_DURATION.observe(asyncio.get_running_loop().time() - started)
            m.GRACEFUL_SHUTDOWNS.inc()
            log.info("stopped")
            tracing.shutdown_tracing()
            m.mark_process_dead(os.getpid())
            flush_logs()

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(
        settings.log_level,
        settings.log_queue_max,
        sampling_target=settings.log_sampling_target or sampling_target_for(settings.env),
    )
    tracing.configure_tracing(settings.trace_sample_ratio, settings.otlp_endpoint)
    lifecycle = Lifecycle()
    flags = FeatureFlags.from_settings(settings)  # hot-toggled through the admin API (RES-11)
    install_granian_drain_hook(  # granian loads the app before it installs its signal handlers
        lifecycle,
        prestop_delay=settings.shutdown_prestop_delay,
        drain_timeout=max(settings.shutdown_timeout - 10.0, 1.0),
    )
    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            health,
            metrics_endpoint,
            openapi_json,
            PaymentController,
            PaymentMethodController,
            WebhookEndpointController,
            EventController,
            SubscriptionController,
            DisputeController,
            AdminController,
            *checkout_routes(settings.env),
        ],
        dependencies={
            "principal": Provide(provide_principal),
            "payments": Provide(provide_payments, sync_to_thread=False),
            "payment_methods": Provide(provide_payment_methods, sync_to_thread=False),
            "webhooks": Provide(provide_webhooks, sync_to_thread=False),
            "subscriptions": Provide(provide_subscriptions, sync_to_thread=False),
            "disputes": Provide(provide_disputes, sync_to_thread=False),
        },
        exception_handlers={
            PaycoreError: _on_paycore_error,
            Replay: _on_replay,
            ValidationException: _on_validation,
            NotFoundException: _on_http_error,
            HTTPException: _on_http_error,
            TimeoutError: _on_timeout,
            Exception: _on_unexpected,
        },
        middleware=[
            DefineMiddleware(
                RequestEnvelope,  # type: ignore[arg-type]
                lifecycle=lifecycle,
                request_timeout=settings.request_timeout,
                max_body_bytes=settings.max_body_bytes,
                slow_request=settings.slow_request,
                max_queries=settings.db_max_queries_per_request,
                body_read_timeout=settings.body_read_timeout,
                detailed_logging=flags.switch("detailed_logging"),  # read per request (RES-11)
            )
        ],
        compression_config=CompressionConfig(
            backend="gzip",
            minimum_size=settings.gzip_min_size,
            gzip_compress_level=settings.gzip_level,
            exclude=["/metrics", "/healthz", "/readyz", "/health"],
            # single-object answers of the hot path stay near or under the minimum size: skip the
            # per-request compression wrapper there (docs/benchmarks.md)
            exclude_opt_key=SKIP_COMPRESSION,
            # the `compression` kill switch is read per request (hot-toggled through the admin API)
            # API-9: ETag / If-None-Match → 304 on merchant GETs, inside compression (one place)
            middleware_class=switchable_compression(
                flags.switch("compression"), etag_max_age=int(settings.etag_max_age)
            ),
        ),
        openapi_config=OpenAPIConfig(
            title="paycore",
            version=__version__,
            description=(
                "Card payments through the EPX gateway. Amounts are integers in minor units. "
                "Errors are RFC 9457 problem details with a stable `code`. Money-moving POSTs "
                "require an `Idempotency-Key`."
            ),
            path="/docs",
            render_plugins=[ScalarRenderPlugin(path="/")],
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description=(
                            "A merchant API key (sk_test_… or sk_live_…), or a service-to-service RS256 "
                            "JWT signed by a registered client service: `iss` selects its key, "
                            "`merchant_id` must be granted, `exp` and `jti` are required"
                        ),
                    ),
                    "adminToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="Admin token ak_… (`paycore admin create-admin-token`); /admin/v1 only",
                    ),
                }
            ),
            security=[{"apiKey": []}],
        ),
        lifespan=[_lifespan(settings, lifecycle, flags)],
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state.lifecycle = lifecycle
    app.state.settings = settings
    app.state.flags = flags
    return app
