"""The metric catalogue (roadmap §4.1). Every family paycore exports is declared here, once.

Label values come from closed sets: route templates, never raw paths; no ids, IPs or SQL.
With several server workers, prometheus_client's multiprocess mode is used
(`PROMETHEUS_MULTIPROC_DIR`); gauges declare how they aggregate across processes.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

MULTIPROCESS: Final = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# --- business (MON-1) ---------------------------------------------------------------------------
PAYMENT_TRANSACTIONS = Counter(
    "payment_transactions_total",
    "Payment transactions by final status",
    ["merchant", "payment_type", "transaction_type", "status"],
)
PAYMENT_AMOUNT_CENTS = Counter(
    "payment_amount_cents_total",
    "Amount in minor units by status and currency",
    ["merchant", "payment_type", "transaction_type", "status", "currency"],
)
PAYMENT_DURATION = Histogram(
    "payment_processing_duration_seconds",
    "Time to process one money operation",
    ["payment_type", "transaction_type", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.08, 0.1, 0.2, 0.25, 0.5, 1, 1.5, 2, 2.5, 5, 10, 30),
)
GATEWAY_RESPONSES = Counter(
    "payment_gateway_responses_total",
    "Gateway response codes by category",
    ["payment_type", "code", "category"],
)
# --- gateway ------------------------------------------------------------------------------------
GATEWAY_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "One gateway attempt",
    ["operation", "outcome"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10),
)
GATEWAY_RETRIES = Counter("gateway_retries_total", "Gateway retries", ["operation", "reason"])
GATEWAY_CALLS = Histogram(
    "gateway_call_duration_seconds",
    "One gateway call including its retries, by outcome and response category (none: no answer)",
    ["operation", "outcome", "category"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
)
CIRCUIT_STATE = Gauge(
    "circuit_breaker_state",
    "0 closed, 1 open, 2 half-open",
    ["name"],
    multiprocess_mode="max",
)
# The roadmap's name for the gateway breaker's state, kept as an alias family for dashboards.
EPX_CIRCUIT_STATE = Gauge(
    "epx_circuit_breaker_state",
    "State of the EPX Server Post breaker: 0 closed, 1 open, 2 half-open",
    multiprocess_mode="max",
)
CIRCUIT_OPENS = Counter("circuit_breaker_opens_total", "Breaker transitions to open", ["name"])
CIRCUIT_TRANSITIONS = Counter(
    "circuit_breaker_transitions_total", "Breaker state transitions", ["name", "from_state", "to_state"]
)
CIRCUIT_REQUESTS = Counter(
    "circuit_breaker_requests_total", "Calls through a breaker", ["name", "state", "result"]
)
OUTBOUND_CONNECTIONS = Counter(
    "outbound_connections_total", "Outbound connections by reuse", ["client", "kind"]
)
# --- HTTP ---------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["route", "method", "code"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being served", multiprocess_mode="livesum")
# --- database (CRITICAL-4, CRITICAL-5, DB-8) ----------------------------------------------------
DB_POOL_MAX = Gauge("db_pool_max_connections", "Pool max size", multiprocess_mode="livesum")
DB_POOL_MIN = Gauge("db_pool_min_connections", "Pool min size", multiprocess_mode="livesum")
DB_POOL_SIZE = Gauge("db_pool_size", "Open pool connections", multiprocess_mode="livesum")
DB_POOL_IDLE = Gauge("db_pool_idle_connections", "Idle pool connections", multiprocess_mode="livesum")
DB_POOL_ACQUIRED = Gauge("db_pool_acquired_connections", "Connections in use", multiprocess_mode="livesum")
DB_POOL_WAITERS = Gauge(
    "db_pool_waiting_acquires", "Tasks waiting for a pooled connection", multiprocess_mode="livesum"
)
DB_POOL_ACQUIRES = Counter("db_pool_acquire_total", "Pool acquires")
DB_POOL_EMPTY_ACQUIRES = Counter("db_pool_empty_acquire_total", "Acquires that began with no idle connection")
DB_POOL_CANCELED_ACQUIRES = Counter("db_pool_canceled_acquire_total", "Acquires cancelled or timed out")
DB_POOL_ACQUIRE_DURATION = Histogram(
    "db_pool_acquire_duration_seconds",
    "Wait for a pooled connection",
    ["status"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DB_UP = Gauge("db_up", "1 when the database answers the health ping", multiprocess_mode="min")
DB_QUERY_DURATION = Histogram(
    "db_query_duration_seconds",
    "Query latency by static query name and timeout class (tier)",
    ["query", "tier", "status"],
    buckets=(
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.064,
        0.128,
        0.256,
        0.512,
        1.024,
        1.6,
        2.048,
        4,
        12,
        24,
        48,
    ),
)
DB_QUERY_ERRORS = Counter("db_query_errors_total", "Query errors", ["query", "error_type"])
DB_TX_DURATION = Histogram(
    "db_transaction_duration_seconds",
    "Database transaction duration",
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12),
)
DB_TX_ROLLBACKS = Counter("db_transaction_rollbacks_total", "Rolled back transactions", ["reason"])
DB_QUERIES_PER_REQUEST = Histogram(
    "db_queries_per_request", "Queries per request", ["route"], buckets=(1, 2, 3, 5, 10, 20, 50)
)
# --- idempotency, reconciliation ------------------------------------------------------------------
IDEMPOTENCY_OUTCOMES = Counter("idempotency_requests_total", "Idempotency-Key outcomes", ["outcome"])
RECONCILIATIONS = Counter(
    "payment_reconciliations_total", "Unknown/pending transactions resolved", ["result"]
)
# --- runtime, shutdown, tasks ---------------------------------------------------------------------
TRACKED_TASKS = Gauge("tracked_tasks", "Supervised background tasks", ["type"], multiprocess_mode="livesum")
ASYNCIO_TASKS = Gauge("asyncio_tasks", "All asyncio tasks", multiprocess_mode="livesum")
TASK_LEAKS = Counter("asyncio_task_leaks_detected_total", "Task-count leak detections")
SHUTDOWN_DURATION = Histogram(
    "shutdown_duration_seconds", "Graceful shutdown", buckets=(1, 5, 10, 15, 20, 25, 30)
)
COMPONENT_SHUTDOWN_DURATION = Histogram(
    "component_shutdown_duration_seconds",
    "Shutdown phase duration",
    ["component"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 15, 20, 25, 30),
)
SHUTDOWN_ERRORS = Counter("shutdown_errors_total", "Shutdown phase failures", ["component"])
GRACEFUL_SHUTDOWNS = Counter("graceful_shutdowns_total", "Completed graceful shutdowns")
FEATURE_FLAG = Gauge("feature_flag_enabled", "Kill switches", ["flag"], multiprocess_mode="max")
# --- background jobs (paycore worker) -------------------------------------------------------------
JOB_RUNS = Counter(
    "job_runs_total",
    "Job runs by outcome (success, failed, timeout, released, lost, dead)",
    ["job_name", "status"],
)
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "One job run",
    ["job_name"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOB_QUEUE_DEPTH = Gauge(
    "job_queue_depth",
    "Queued jobs that are due (scheduled: 1 when due)",
    ["job_name"],
    multiprocess_mode="max",
)
JOB_LAG = Gauge(
    "job_lag_seconds",
    "Age of the oldest due, unclaimed job (or overdue schedule)",
    ["job_name"],
    multiprocess_mode="max",
)
# --- webhooks (RES-4, RES-5) -----------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Webhook delivery attempts (success, failed, pending = retry scheduled)",
    ["event_type", "status"],
)
WEBHOOK_DURATION = Histogram(
    "webhook_delivery_duration_seconds",
    "One webhook delivery attempt",
    ["event_type"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30),
)
BULKHEAD_IN_USE = Gauge("bulkhead_in_use", "Slots held in a bulkhead", ["name"], multiprocess_mode="livesum")
BULKHEAD_REJECTIONS = Counter(
    "bulkhead_rejections_total", "Work that found its bulkhead full and had to wait", ["name"]
)
# --- disputes --------------------------------------------------------------------------------------
CHARGEBACKS = Counter(
    "chargebacks_total", "Chargebacks seen (pending) and decided (won, lost)", ["reason_code", "status"]
)
# --- runtime (RES-M6) -------------------------------------------------------------------------------
EVENT_LOOP_LAG = Gauge(
    "event_loop_lag_seconds",
    "Overshoot of a 0.5 s sleep on the event loop (how late callbacks run)",
    multiprocess_mode="max",
)
GC_PAUSE = Histogram(
    "python_gc_pause_seconds",
    "Garbage-collector pause by generation",
    ["generation"],
    buckets=tuple(0.00001 * 2**n for n in range(20)),
)
# --- business: declines, ACH, subscriptions, customers (MON-1, MON-2) ------------------------------
PAYMENT_DECLINES = Counter(
    "payment_declines_total", "Declined money operations by decline category", ["payment_type", "category"]
)
ACH_VERIFICATIONS = Counter("ach_verifications_total", "ACH account verifications", ["status"])
ACH_RETURNS = Counter("ach_returns_total", "ACH returns by class", ["merchant", "class"])
SUBSCRIPTION_BILLINGS = Counter("subscription_billings_total", "Subscription billing attempts", ["status"])
SUBSCRIPTION_REVENUE = Counter(
    "subscription_revenue_cents_total",
    "Successful subscription charges (minor units)",
    ["merchant", "currency"],
)
PAYMENT_METHODS_CREATED = Counter(
    "payment_methods_created_total", "Saved payment methods", ["merchant", "payment_type"]
)
# Set by the worker's `payments.business_aggregates` job (payments.aggregates): the last run wins, in
# whichever process it ran (`max` would keep a dead worker's larger, older value).
ACTIVE_CUSTOMERS = Gauge(
    "active_customers",
    "Customers with an approved payment in the last 30 days (worker aggregate, 5 min)",
    ["merchant"],
    multiprocess_mode="mostrecent",
)
CUSTOMER_TRANSACTION_COUNT = Histogram(
    "customer_transaction_count",
    "Approved payments per active customer in 30 days; each 5-min run observes every active customer",
    ["merchant"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
# With several worker instances only the one that ran the latest period holds current values: select
# its `active_customers` with this timestamp (docs/observability.md, the executive dashboard).
BUSINESS_AGGREGATES_TIMESTAMP = Gauge(
    "business_aggregates_timestamp_seconds",
    "Unix time this instance last published the business aggregates (payments.business_aggregates)",
    multiprocess_mode="mostrecent",
)
MERCHANT_TIME_TO_FIRST_PAYMENT = Histogram(
    "merchant_time_to_first_payment_seconds",
    "From merchant creation to its first approved payment; each 5-min run observes every such merchant",
    buckets=(3600, 21600, 86400, 259200, 604800, 1209600, 2592000),
)
# --- resilience extras (SEC-4, A8, RES-9) -----------------------------------------------------------
RATE_LIMIT_REJECTIONS = Counter("rate_limit_rejections_total", "Rate-limited requests", ["scope"])
# --- caches (platform.cache; label `cache` is the cache's name, never a key) -----------------------
CACHE_HITS = Counter("cache_hits_total", "Cache hits", ["cache"])
CACHE_MISSES = Counter(
    "cache_misses_total", "Cache misses (not_found, expired, disabled, bypass)", ["cache", "reason"]
)
CACHE_SIZE = Gauge("cache_size", "Cache entries, stale ones included", ["cache"], multiprocess_mode="livesum")
CACHE_EVICTIONS = Counter("cache_evictions_total", "Cache evictions (ttl, lru, manual)", ["cache", "reason"])
CACHE_STALE_SERVED = Counter(
    "cache_stale_served_total", "Stale entries served because the loader failed (RES-9)", ["cache"]
)


# --- process metrics in multiprocess mode -----------------------------------------------------------
# The default process collector describes only the process that serves the scrape. With several
# workers each process writes its own values (label `pid`, `liveall`: removed when it exits), so
# `process_resident_memory_bytes > 450e6` fires per process. Not registered in the default registry
# (which already has the real process collector in single-process mode).
MP_PROCESS_RSS = Gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes",
    multiprocess_mode="liveall",
    registry=None,
)
MP_PROCESS_VMS = Gauge(
    "process_virtual_memory_bytes", "Virtual memory size in bytes", multiprocess_mode="liveall", registry=None
)
MP_PROCESS_CPU = Gauge(
    "process_cpu_seconds_total", "User and system CPU seconds", multiprocess_mode="liveall", registry=None
)
MP_PROCESS_OPEN_FDS = Gauge(
    "process_open_fds", "Open file descriptors", multiprocess_mode="liveall", registry=None
)
MP_PROCESS_MAX_FDS = Gauge(
    "process_max_fds", "Maximum open file descriptors", multiprocess_mode="liveall", registry=None
)
MP_PROCESS_START = Gauge(
    "process_start_time_seconds",
    "Process start time (unix seconds)",
    multiprocess_mode="liveall",
    registry=None,
)

_MP_PROCESS_GAUGES: Final = {
    "process_resident_memory_bytes": MP_PROCESS_RSS,
    "process_virtual_memory_bytes": MP_PROCESS_VMS,
    "process_cpu_seconds_total": MP_PROCESS_CPU,
    "process_open_fds": MP_PROCESS_OPEN_FDS,
    "process_max_fds": MP_PROCESS_MAX_FDS,
    "process_start_time_seconds": MP_PROCESS_START,
}


def sample_process() -> None:
    """Multiprocess mode: copy this process's collector values into its own `liveall` files."""
    if not MULTIPROCESS:
        return
    for family in PROCESS_COLLECTOR.collect():
        for sample in family.samples:
            gauge = _MP_PROCESS_GAUGES.get(sample.name)
            if gauge is not None:
                gauge.set(sample.value)


PROCESS_COLLECTOR: Final = ProcessCollector(registry=None)


def render(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The exposition text for /metrics (merging worker processes in multiprocess mode)."""
    if registry is None:
        if MULTIPROCESS:
            from prometheus_client import multiprocess

            sample_process()  # the serving process is always current
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Multiprocess mode: drop a dead worker's live gauges."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_LIVE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def reap_dead_processes(directory: str | None = None) -> list[int]:
    """Multiprocess mode: remove live-gauge files of processes that no longer exist (a worker
    killed without a clean shutdown). Called when a worker starts. Returns the reaped pids."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return []
    reaped: set[int] = set()
    for name in os.listdir(directory):
        match = _LIVE_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid in reaped or _alive(pid):
            continue
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        reaped.add(pid)
    return sorted(reaped)


def clean_multiprocess_dir(directory: str) -> None:
    """Remove every metrics file (the server does this before it starts its workers)."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def family_sample_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every series name a family of `registry` can expose (`_total`, `_bucket`, ... included);
    the multiprocess process gauges are added. Used to check rules and dashboards."""
    names: set[str] = set(_MP_PROCESS_GAUGES)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created", ""),
        "gauge": ("",),
        "info": ("_info",),
    }
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(sample.name for sample in family.samples)
    return names


# --- hosted checkout (Browser Post) ---------------------------------------------------------------
CHECKOUT_SESSIONS = Counter(
    "checkout_sessions_total",
    "Hosted-checkout sessions by mode and event (created, form_reissued, key_exchange_failed)",
    ["mode", "event"],
)
CHECKOUT_CALLBACKS = Counter(
    "checkout_callbacks_total",
    "Browser Post callbacks by result (approved, declined, failed, unknown, late, replayed, conflict, "
    "rejected)",
    ["result"],
)
CHECKOUT_EXPIRED = Counter("checkout_expired_total", "Pending Browser Post transactions expired")
IP_RATE_LIMITED = Counter(
    "ip_rate_limited_total", "Requests refused by the per-IP limit of public routes", ["route"]
)


# --- resilience (RES-M1) --------------------------------------------------------------------------
LONG_RUNNING_TASKS = Gauge(
    "long_running_tasks",
    "One-shot supervised tasks older than 10 minutes (a leak suspect)",
    ["type"],
    multiprocess_mode="livesum",
)
RATE_LIMIT_ERRORS = Counter(
    "rate_limit_storage_errors_total", "Rate-limit storage failures (the request was let through)", ["scope"]
)


# --- saved payment methods and ACH (NACHA return rates) ------------------------------------------
ACH_RETURN_RATE = Gauge(
    "ach_return_rate",
    "Trailing 60-day ACH debit return rate by class (NACHA thresholds: unauthorized 0.005, "
    "administrative 0.03, overall 0.15)",
    ["merchant", "class"],
    multiprocess_mode="max",
)
