"""The metric catalogue (roadmap §4.1). Every family paycore exports is declared here, once.

Label values come from closed sets: route templates, never raw paths; no ids, IPs or SQL.
With several server workers, prometheus_client's multiprocess mode is used
(`PROMETHEUS_MULTIPROC_DIR`); gauges declare how they aggregate across processes.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
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
    "Query latency by static query name",
    ["query", "status"],
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
    ["job", "status"],
)
JOB_DURATION = Histogram(
    "job_duration_seconds",
    "One job run",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOB_QUEUE_DEPTH = Gauge(
    "job_queue_depth", "Queued jobs that are due (scheduled: 1 when due)", ["job"], multiprocess_mode="max"
)
JOB_LAG = Gauge(
    "job_lag_seconds",
    "Age of the oldest due, unclaimed job (or overdue schedule)",
    ["job"],
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


def render(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The exposition text for /metrics (merging worker processes in multiprocess mode)."""
    if registry is None:
        if MULTIPROCESS:
            from prometheus_client import multiprocess

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
