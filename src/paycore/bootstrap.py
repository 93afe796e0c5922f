"""The composition root: Settings → pools, clients, caches, services. Nothing else builds them."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import structlog

from paycore.admin import model as admin_model
from paycore.admin.repository import AdminRepository
from paycore.admin.service import AdminService, AdminTokens
from paycore.checkout.repository import CheckoutRepository
from paycore.checkout.service import CheckoutConfig, CheckoutService
from paycore.config import Settings
from paycore.disputes.repository import DisputeRepository
from paycore.disputes.service import DisputeService
from paycore.gateway.epx.ach_returns import EpxAchReturnsClient
from paycore.gateway.epx.client import EpxServerPostClient
from paycore.gateway.epx.key_exchange import KeyExchangeClient
from paycore.gateway.epx.reporting import EpxReportingClient
from paycore.gateway.north.client import NorthDisputeClient
from paycore.gateway.port import TransactionProcessor
from paycore.idempotency.repository import IdempotencyRepository
from paycore.idempotency.service import Idempotency
from paycore.kernel.clock import Clock, SystemClock
from paycore.merchants.model import Merchant, Principal, ServiceClient
from paycore.merchants.repository import MerchantRepository
from paycore.merchants.service import JwtPolicy, MerchantDirectory, RevokedJtis, ServiceAuthCaches
from paycore.payment_methods.model import PaymentMethod
from paycore.payment_methods.repository import PaymentMethodRepository
from paycore.payment_methods.service import CACHE_CHANNEL as PM_CACHE_CHANNEL
from paycore.payment_methods.service import PaymentMethodService, Policy
from paycore.payments.metrics import PaymentMetrics
from paycore.payments.repository import PaymentRepository
from paycore.payments.service import PaymentService, Timeouts
from paycore.platform import http
from paycore.platform.cache import AsyncTTLCache
from paycore.platform.crypto import Keyring
from paycore.platform.cursor import CursorCodec
from paycore.platform.db import Database
from paycore.platform.db.listener import NotificationListener
from paycore.platform.db.pool import PoolMonitor, create_database
from paycore.platform.flags import FeatureFlags
from paycore.platform.jobs import JobDefinition
from paycore.platform.observability.tracing import TracedTransactionProcessor, traceparent_headers
from paycore.platform.queue import PgJobQueue
from paycore.platform.resilience.breaker import (
    GATEWAY_KEY_EXCHANGE,
    GATEWAY_SERVER_POST,
    REPORTING_API,
    BreakerRegistry,
)
from paycore.platform.shutdown import Lifecycle
from paycore.platform.tasks import TaskSupervisor
from paycore.subscriptions.repository import SubscriptionRepository
from paycore.subscriptions.service import BillingConfig, SubscriptionService
from paycore.webhooks.delivery import create_webhook_session
from paycore.webhooks.repository import WebhookRepository
from paycore.webhooks.service import WebhookConfig, WebhookService, reseal_secrets

log = structlog.get_logger("paycore.bootstrap")


@dataclass
class Container:
    settings: Settings
    db: Database
    tasks: TaskSupervisor
    lifecycle: Lifecycle
    breakers: BreakerRegistry
    merchants: MerchantDirectory
    payments: PaymentService
    idempotency: Idempotency
    pool_monitor: PoolMonitor
    clock: Clock
    jobs: PgJobQueue
    webhooks: WebhookService
    payment_methods: PaymentMethodService
    disputes: DisputeService | None
    checkout: CheckoutService | None = None
    subscriptions: SubscriptionService | None = None
    flags: FeatureFlags | None = None  # the kill switches, overrides included (platform.flags)
    admin: AdminService | None = None
    listener: NotificationListener | None = None  # admin commands and merchant evictions
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def start_background(self) -> None:
        """Supervised periodic tasks of a serving process."""
        s = self.settings
        self.tasks.periodic("db_pool_monitor", s.db_pool_monitor_interval, self._pool_tick)
        self.tasks.periodic("db_health_ping", s.db_health_check_period, self.pool_monitor.ping)
        self.tasks.periodic(
            "db_connection_rotation",
            max(s.db_max_conn_lifetime / 2, 1.0),
            self._rotate_connections,
            initial_delay=s.db_max_conn_lifetime,
        )
        self.tasks.periodic("task_leak_monitor", s.task_leak_interval, self._leak_tick)
        if self.listener is not None:
            self.listener.start()  # kill switches, breaker commands, merchant evictions (admin API)

    def start_cache_warmup(self) -> None:
        """CACHE-1, at API start: the PAYCORE_MERCHANT_CACHE_WARM_TOP_N busiest merchants into the
        merchant cache, as a supervised background task — readiness never waits for it, it is
        bounded in time and a failure is only logged (`MerchantDirectory.warm`)."""
        top_n = self.settings.merchant_cache_warm_top_n
        if top_n > 0:
            self.tasks.spawn("merchant_cache_warmup", self.merchants.warm(top_n))

    async def _pool_tick(self) -> None:
        self.pool_monitor.tick()

    async def _leak_tick(self) -> None:
        self.tasks.check_leaks(self.settings.task_leak_threshold)

    async def _rotate_connections(self) -> None:
        await self.db.pool.expire_connections()

    async def aclose(self, timeout: float = 10.0) -> None:
        await self.tasks.drain(min(timeout, 5.0))
        await self.tasks.cancel_all()
        for session in self.sessions:
            with contextlib.suppress(Exception):
                await session.close()
        with contextlib.suppress(Exception):
            await self.db.pool.close()


# Capabilities whose `jobs` module (if present) declares background jobs for `paycore worker`.
JOB_CAPABILITIES: tuple[str, ...] = (
    "payments",
    "payment_methods",
    "checkout",
    "subscriptions",
    "webhooks",
    "disputes",
    "merchants",
    "idempotency",
)


def job_definitions(settings: Settings | None = None) -> list[JobDefinition]:
    """Every capability's jobs: `paycore.<capability>.jobs` exposes `JOBS` (a list of
    `JobDefinition`s) and/or `jobs(settings)` (definitions whose periods come from settings).
    A capability without a `jobs` module (or not installed) is skipped; one that fails to
    import is an error. Names must be unique."""
    import importlib
    import importlib.util

    found: list[JobDefinition] = []
    for capability in JOB_CAPABILITIES:
        name = f"paycore.{capability}.jobs"
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        module = importlib.import_module(name)
        found.extend(getattr(module, "JOBS", ()))
        factory = getattr(module, "jobs", None)
        if callable(factory) and settings is not None:
            found.extend(factory(settings))
    names = [d.name for d in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"job names declared twice: {', '.join(duplicates)}")
    return found


def build_merchant_directory(
    settings: Settings, db: Database, tasks: TaskSupervisor | None = None
) -> MerchantDirectory:
    """Every credential cache serves stale for up to PAYCORE_CACHE_MAX_STALE past its TTL when the
    database fails (RES-9). Safe because revocations (API keys, service clients, grants, jtis) and
    merchant evictions *invalidate*, which drops the entry and its stale copy: a revoked credential
    is refused during an outage (the deny-list of jtis too: a revocation drops it, and JWTs then
    fail closed until the database answers)."""
    return MerchantDirectory(
        db,
        MerchantRepository(db),
        api_key_secret=settings.api_key_secret,
        keyring=Keyring(settings.encryption_keys),
        principal_cache=AsyncTTLCache[bytes, Principal | None](
            "merchant_credentials",
            ttl=settings.merchant_cache_ttl,
            max_size=settings.merchant_cache_max_size,
            enabled=settings.merchant_cache_enabled,
            max_stale=settings.cache_max_stale,
        ),
        merchant_cache=AsyncTTLCache[uuid.UUID, Merchant | None](
            "merchant",
            ttl=settings.merchant_cache_ttl,
            max_size=settings.merchant_cache_max_size,
            enabled=settings.merchant_cache_enabled,
            max_stale=settings.cache_max_stale,
        ),
        service_auth=ServiceAuthCaches(
            clients=AsyncTTLCache[str, ServiceClient | None](
                "service_client",
                ttl=settings.service_client_cache_ttl,
                max_size=settings.merchant_cache_max_size,
                enabled=settings.merchant_cache_enabled,
                max_stale=settings.cache_max_stale,
            ),
            grants=AsyncTTLCache[tuple[uuid.UUID, uuid.UUID], bool](
                "service_grant",
                ttl=settings.service_grant_cache_ttl,
                max_size=10_000,
                enabled=settings.merchant_cache_enabled,
                max_stale=settings.cache_max_stale,
            ),
            revoked=AsyncTTLCache[str, RevokedJtis](
                "revoked_jti",
                ttl=settings.revoked_jti_cache_ttl,
                max_size=1,
                enabled=settings.merchant_cache_enabled,
                max_stale=settings.cache_max_stale,
            ),
        ),
        jwt_policy=JwtPolicy(
            leeway=settings.jwt_leeway,
            max_lifetime=settings.jwt_max_lifetime,
            audience=settings.jwt_audience or None,
        ),
        tasks=tasks,
        resealers=[lambda keyring: reseal_secrets(WebhookRepository(db), keyring)],
    )


def build_webhook_service(
    settings: Settings,
    db: Database,
    session: aiohttp.ClientSession,
    clock: Clock,
    flags: FeatureFlags | None = None,
) -> WebhookService:
    return WebhookService(
        db=db,
        repository=WebhookRepository(db),
        keyring=Keyring(settings.encryption_keys),
        session=session,
        clock=clock,
        cursors=CursorCodec(settings.cursor_secret),
        config=WebhookConfig(
            allow_private=settings.webhook_allow_private,
            timeout=settings.webhook_timeout,
            concurrency=settings.webhook_concurrency,
            event_concurrency=settings.webhook_event_concurrency,
            retry_schedule=settings.webhook_retry_schedule,
            jitter=settings.retry_jitter,
            batch_size=settings.webhook_batch_size,
            secret_overlap=settings.webhook_secret_overlap,
            disable_after=settings.webhook_disable_after,
            event_retention=settings.webhook_event_retention,
            lease=settings.webhook_timeout * 3 + 10,
        ),
        enabled=flags.switch("webhooks") if flags else settings.webhooks_enabled and not settings.degraded,
    )


def build_checkout_service(
    settings: Settings,
    db: Database,
    *,
    gateway_session: aiohttp.ClientSession,
    breakers: BreakerRegistry,
    merchants: MerchantDirectory,
    clock: Clock,
    tasks: TaskSupervisor,
    metrics: PaymentMetrics,
    card_saver: Any = None,
) -> CheckoutService:
    """Hosted checkout (Browser Post): Key Exchange over the gateway session and its own breaker."""
    key_exchange = (
        KeyExchangeClient.from_settings(gateway_session, breakers[GATEWAY_KEY_EXCHANGE], settings)
        if settings.epx_key_exchange_url
        else None
    )
    return CheckoutService(
        db=db,
        repository=CheckoutRepository(db),
        idempotency=IdempotencyRepository(db),
        key_exchange=key_exchange,
        merchants=merchants,
        clock=clock,
        config=CheckoutConfig(
            browser_post_url=settings.epx_browser_post_url,
            callback_base_url=settings.callback_base_url,
            verify_mac=settings.checkout_verify_mac,
            critical_timeout=settings.service_critical_timeout,
            noncritical_timeout=settings.service_noncritical_timeout,
            batch_timezone=settings.batch_timezone,
        ),
        tasks=tasks,
        metrics=metrics,
        card_saver=card_saver,
    )


def build_payment_method_service(
    settings: Settings,
    db: Database,
    *,
    gateway: TransactionProcessor,
    reporting_session: aiohttp.ClientSession,
    breakers: BreakerRegistry,
    merchants: MerchantDirectory,
    clock: Clock,
    tasks: TaskSupervisor,
    flags: FeatureFlags | None = None,
) -> PaymentMethodService:
    """Saved cards and bank accounts: the gateway client, the ACH returns report, two caches
    (invalidated across processes through the container's `NotificationListener`)."""
    returns = (
        EpxAchReturnsClient.from_settings(reporting_session, settings, breaker=breakers[REPORTING_API])
        if settings.epx_reporting_url
        else None
    )
    return PaymentMethodService(
        db=db,
        repository=PaymentMethodRepository(db),
        idempotency=Idempotency(db, IdempotencyRepository(db)),
        gateway=gateway,
        returns=returns,
        merchants=merchants.list_all,
        clock=clock,
        tasks=tasks,
        cursors=CursorCodec(settings.cursor_secret),
        methods_cache=AsyncTTLCache[uuid.UUID, PaymentMethod | None](
            "payment_method",
            ttl=settings.pm_cache_ttl,
            max_size=settings.pm_cache_max_size,
            enabled=flags.switch("pm_cache") if flags else settings.pm_cache_enabled,
        ),
        lists_cache=AsyncTTLCache[tuple[uuid.UUID, str], tuple[PaymentMethod, ...]](
            "payment_method_list",
            ttl=settings.pm_list_cache_ttl,
            max_size=10_000,
            enabled=flags.switch("pm_cache") if flags else settings.pm_cache_enabled,
        ),
        fingerprint_secret=settings.api_key_secret,
        policy=Policy(
            verification_days=settings.ach_verification_days,
            batch_size=settings.ach_batch_size,
            return_threshold=settings.ach_return_deactivate_threshold,
            returns_lookback_days=max(int(settings.ach_returns_lookback // 86400), 1),
            token_refresh_before=timedelta(seconds=settings.ach_token_refresh_before),
            critical_timeout=settings.service_critical_timeout,
            noncritical_timeout=settings.service_noncritical_timeout,
            batch_timezone=settings.batch_timezone,
            labelled_merchants=frozenset(settings.metrics_merchant_labels),
        ),
    )


def build_subscription_service(
    settings: Settings,
    db: Database,
    *,
    payments: PaymentService,
    merchants: MerchantDirectory,
    clock: Clock,
) -> SubscriptionService:
    """Subscriptions and their billing run: charges go through the payments service (and its
    saved payment methods); `clock` drives billing time."""
    return SubscriptionService(
        db=db,
        repository=SubscriptionRepository(db),
        idempotency=Idempotency(db, IdempotencyRepository(db)),
        payments=payments,
        payment_methods=payments.payment_methods,
        merchant_lookup=merchants.get,
        clock=clock,
        cursors=CursorCodec(settings.cursor_secret),
        config=BillingConfig(
            schedule=settings.billing_retry_schedule,
            concurrency=settings.billing_concurrency,
            batch_size=settings.billing_batch_size,
            lease=settings.billing_lease,
            critical_timeout=settings.service_critical_timeout,
            noncritical_timeout=settings.service_noncritical_timeout,
            labelled_merchants=frozenset(settings.metrics_merchant_labels),
        ),
    )


async def build_container(
    settings: Settings,
    *,
    dsn: str | None = None,
    lifecycle: Lifecycle | None = None,
    clock: Clock | None = None,
    application_name: str = "paycore",
    flags: FeatureFlags | None = None,
) -> Container:
    dsn = dsn or settings.database_url
    if dsn is None:
        raise RuntimeError("DATABASE_URL is not set")
    clock = clock or SystemClock()
    db = await create_database(settings, dsn, application_name=application_name)
    tasks = TaskSupervisor()
    # the kill switches: configured values now, stored overrides from `AdminService.load_flags_at_start`
    flags = flags or FeatureFlags.from_settings(settings)
    breakers = BreakerRegistry.from_settings(settings, enabled=flags.switch("cb"))
    sessions: list[aiohttp.ClientSession] = []
    try:
        gateway_session = http.create_session(http.gateway_profile(settings))
        sessions.append(gateway_session)
        reporting_session = http.create_session(http.reporting_profile(settings))
        sessions.append(reporting_session)
        webhook_session = create_webhook_session(
            limit=settings.webhook_max_conns,
            limit_per_host=settings.webhook_per_host,
            keepalive=settings.webhook_keepalive,
            timeout=settings.webhook_timeout,
            allow_private=settings.webhook_allow_private,
        )
        sessions.append(webhook_session)
        if settings.epx_server_post_url is None:
            raise RuntimeError("PAYCORE_EPX_SERVER_POST_URL is not set")
        gateway = TracedTransactionProcessor(
            EpxServerPostClient.from_settings(
                gateway_session, breakers[GATEWAY_SERVER_POST], settings, headers_factory=traceparent_headers
            )
        )
        report = (
            EpxReportingClient.from_settings(reporting_session, settings, breaker=breakers[REPORTING_API])
            if settings.epx_reporting_url
            else None
        )
        merchants = build_merchant_directory(settings, db, tasks)
        for credential_cache in (
            merchants.principals,
            merchants.merchants,
            merchants.service_clients,
            merchants.service_grants,
            merchants.revoked_jtis,
        ):  # the `merchant_cache` kill switch, read at use time
            credential_cache.follow(flags.switch("merchant_cache"))
        payment_methods = build_payment_method_service(
            settings,
            db,
            flags=flags,
            gateway=gateway,
            reporting_session=reporting_session,
            breakers=breakers,
            merchants=merchants,
            clock=clock,
            tasks=tasks,
        )
        payments = PaymentService(
            db=db,
            repository=PaymentRepository(db),
            idempotency=IdempotencyRepository(db),
            gateway=gateway,
            report=report,
            merchant_lookup=merchants.get,
            clock=clock,
            cursors=CursorCodec(settings.cursor_secret),
            metrics=PaymentMetrics(frozenset(settings.metrics_merchant_labels)),
            tasks=tasks,
            timeouts=Timeouts(
                critical=settings.service_critical_timeout, noncritical=settings.service_noncritical_timeout
            ),
            max_depth=settings.max_transaction_depth,
            batch_timezone=settings.batch_timezone,
            payment_methods=payment_methods,
            batch_max_ids=settings.batch_max_ids,
        )
        checkout = build_checkout_service(
            settings,
            db,
            gateway_session=gateway_session,
            breakers=breakers,
            merchants=merchants,
            clock=clock,
            tasks=tasks,
            metrics=payments.metrics,
            card_saver=payment_methods,
        )
        webhooks = build_webhook_service(settings, db, webhook_session, clock, flags)
        admin = AdminService(
            db=db,
            repository=AdminRepository(db),
            flags=flags,
            breakers=breakers,
            merchants=merchants,
            tokens=AdminTokens(db, AdminRepository(db), token_secret=settings.api_key_secret),
            tasks=tasks,
            tracemalloc_enabled=settings.tracemalloc_enabled,
        )
        listener = NotificationListener(dsn, tasks)
        listener.subscribe(admin_model.CONTROL_CHANNEL, admin.on_control)
        listener.subscribe(admin_model.CACHE_CHANNEL, admin.on_cache_invalidation)
        listener.on_connect(admin.reload_flags)  # notifications missed while disconnected
        # credential revocations (API keys, service clients, grants, jtis) of the other processes
        listener.subscribe(admin_model.CACHE_CHANNEL, merchants.on_cache_invalidation)
        listener.on_connect(merchants.on_listener_connect)
        # saved payment methods changed by the other processes
        listener.subscribe(PM_CACHE_CHANNEL, payment_methods.on_cache_invalidation)
        listener.on_connect(payment_methods.on_listener_connect)
        subscriptions = build_subscription_service(
            settings, db, payments=payments, merchants=merchants, clock=clock
        )
        disputes = (
            DisputeService(
                db=db,
                repository=DisputeRepository(db),
                north=NorthDisputeClient(
                    reporting_session,
                    settings.north_api_url,
                    breaker=breakers[REPORTING_API],
                    timeout=settings.reporting_timeout,
                ),
                clock=clock,
                cursors=CursorCodec(settings.cursor_secret),
                lookback_days=settings.dispute_lookback_days,
                max_lookback_days=settings.dispute_max_lookback_days,
            )
            if settings.north_api_url
            else None
        )
    except BaseException:
        for session in sessions:
            await session.close()
        await db.pool.close()
        raise
    return Container(
        settings=settings,
        db=db,
        tasks=tasks,
        lifecycle=lifecycle or Lifecycle(),
        breakers=breakers,
        merchants=merchants,
        payments=payments,
        idempotency=Idempotency(db, IdempotencyRepository(db)),
        pool_monitor=PoolMonitor(
            db, warn_ratio=settings.db_pool_warn_ratio, error_ratio=settings.db_pool_error_ratio
        ),
        clock=clock,
        jobs=PgJobQueue(db),
        webhooks=webhooks,
        payment_methods=payment_methods,
        disputes=disputes,
        checkout=checkout,
        subscriptions=subscriptions,
        flags=flags,
        admin=admin,
        listener=listener,
        sessions=sessions,
    )
