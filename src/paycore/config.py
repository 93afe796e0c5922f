"""Settings: every variable paycore reads, its default and its check.

One frozen `Settings` object is built from the environment at start. An invalid value stops the
process with a message naming the variable (`ConfigError`). `docs/configuration.md` lists every
variable declared here; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ENVIRONMENTS: Final = ("development", "test", "staging", "production")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


def parse_duration(text: str) -> float:
    """'100ms', '30s', '5m', '24h', '1d' -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected a duration such as 100ms, 30s, 5m, 24h; got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false; got {text!r}")


def parse_duration_list(text: str) -> tuple[float, ...]:
    return tuple(parse_duration(part) for part in text.split(",") if part.strip())


def parse_str_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _env(
    name: str,
    default: str | None,
    parse: Callable[[str], Any] = str,
    doc: str = "",
    *,
    secret: bool = False,
) -> Any:
    return field(
        default=None,
        metadata={"env": name, "default": default, "parse": parse, "doc": doc, "secret": secret},
    )


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _pos_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _pos_duration(text: str) -> float:
    return _positive(parse_duration(text))


def _nonneg_duration(text: str) -> float:
    return parse_duration(text)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a TCP port (0-65535)")
    return value


def _env_name(text: str) -> str:
    if text not in ENVIRONMENTS:
        raise ValueError(f"must be one of {', '.join(ENVIRONMENTS)}")
    return text


def _log_level(text: str) -> str:
    lowered = text.lower()
    if lowered not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be debug, info, warning or error")
    return lowered


def _url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError("must be an http(s) URL")
    return text.rstrip("/") if text.count("/") > 3 else text


def _exact_url(text: str) -> str:
    if not re.match(r"^https?://[^\s/]+", text) or re.search(r"\s", text):
        raise ValueError("must be an http(s) URL")
    return text


def parse_rate_overrides(text: str) -> tuple[tuple[str, float, int], ...]:
    """'acme=500/1000,big=1000/2000' -> (('acme', 500.0, 1000), ...): slug=rate/burst."""
    out: list[tuple[str, float, int]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = re.fullmatch(r"\s*([a-z0-9][a-z0-9_-]*)\s*=\s*(\d+(?:\.\d+)?)\s*/\s*(\d+)\s*", part)
        if match is None or float(match.group(2)) <= 0 or int(match.group(3)) < 1:
            raise ValueError(f"expected slug=rate/burst entries such as acme=500/1000; got {part.strip()!r}")
        out.append((match.group(1), float(match.group(2)), int(match.group(3))))
    return tuple(out)


def _rate_limit_storage(text: str) -> str:
    if not re.match(r"^(memory://|(async\+)?rediss?://)", text):
        raise ValueError("must be memory:// or a redis:// / rediss:// URI")
    return text


def _dsn(text: str) -> str:
    if not re.match(r"^postgres(ql)?://", text):
        raise ValueError("must be a postgresql:// DSN")
    return text


@dataclass(frozen=True, slots=True)
class Settings:
    # --- process and environment -------------------------------------------------------------
    database_url: str | None = _env(
        "DATABASE_URL", None, _dsn, "PostgreSQL DSN. Unset: `paycore up` starts an embedded PostgreSQL"
    )
    env: str = _env("PAYCORE_ENV", "development", _env_name, "development / test / staging / production")
    data_dir: str = _env("PAYCORE_DATA_DIR", ".paycore", str, "local state of `paycore up` (embedded DB)")
    http_host: str = _env("PAYCORE_HTTP_HOST", "127.0.0.1", str, "API listen address")
    http_port: int = _env("PAYCORE_HTTP_PORT", "8080", _port, "API port (also /healthz, /readyz, /metrics)")
    workers: int = _env("PAYCORE_WORKERS", "1", _pos_int, "API worker processes (raise to the core count)")
    worker_metrics_port: int = _env(
        "PAYCORE_WORKER_METRICS_PORT", "9091", _port, "metrics and health port of `paycore worker`"
    )
    public_base_url: str | None = _env(
        "PAYCORE_PUBLIC_BASE_URL",
        None,
        _url,
        "external base URL of the API (Browser Post callback host); default http://HOST:PORT",
    )
    # --- security ----------------------------------------------------------------------------
    api_key_secret: str = _env(
        "PAYCORE_API_KEY_SECRET",
        None,
        str,
        "HMAC key for stored API-key hashes (required outside development/test)",
        secret=True,
    )
    cursor_secret: str = _env(
        "PAYCORE_CURSOR_SECRET",
        None,
        str,
        "HMAC key for pagination cursors (required outside development/test)",
        secret=True,
    )
    encryption_keys: str = _env(
        "PAYCORE_ENCRYPTION_KEYS",
        None,
        str,
        "versioned keys for secrets at rest: `v2:<fernet key>,v1:<fernet key>` (first encrypts)",
        secret=True,
    )
    admin_rate_limit_rps: int = _env(
        "PAYCORE_ADMIN_RATE_LIMIT_RPS", "5", _pos_int, "admin API rate per client IP (`/admin/v1`)"
    )
    admin_rate_limit_burst: int = _env(
        "PAYCORE_ADMIN_RATE_LIMIT_BURST", "20", _pos_int, "admin API burst per client IP"
    )
    # --- gateway (EPX) -----------------------------------------------------------------------
    epx_server_post_url: str = _env(
        "PAYCORE_EPX_SERVER_POST_URL", None, _url, "EPX Server Post URL (required; the simulator in dev)"
    )
    epx_key_exchange_url: str | None = _env(
        "PAYCORE_EPX_KEY_EXCHANGE_URL", None, _url, "EPX Key Exchange URL"
    )
    epx_browser_post_url: str | None = _env(
        "PAYCORE_EPX_BROWSER_POST_URL",
        None,
        _exact_url,
        "EPX Browser Post form target (kept exactly: EPX wants the trailing slash of /browserpost/)",
    )
    checkout_verify_mac: bool = _env(
        "PAYCORE_CHECKOUT_VERIFY_MAC",
        "true",
        parse_bool,
        "require and check the MAC on Browser Post callbacks (epx-protocol.md §6.5 candidate scheme)",
    )
    epx_reporting_url: str | None = _env(
        "PAYCORE_EPX_REPORTING_URL",
        None,
        _url,
        "transaction/returns reporting base URL used by reconciliation and the ACH return job",
    )
    north_api_url: str | None = _env("PAYCORE_NORTH_API_URL", None, _url, "North dispute reporting base URL")
    epx_ca_file: str | None = _env(
        "PAYCORE_EPX_CA_FILE", None, str, "extra CA bundle trusted for the gateway (verification stays on)"
    )
    batch_timezone: str = _env("PAYCORE_BATCH_TIMEZONE", "UTC", str, "zone of BATCH_ID / LOCAL_DATE")
    # --- database pool -----------------------------------------------------------------------
    db_max_conns: int = _env("PAYCORE_DB_MAX_CONNS", "25", _pos_int, "pool max per process")
    db_min_conns: int = _env("PAYCORE_DB_MIN_CONNS", "5", _nonneg_int, "pool min per process")
    db_max_conn_lifetime: float = _env(
        "PAYCORE_DB_MAX_CONN_LIFETIME", "30m", _pos_duration, "connection retirement age"
    )
    db_max_conn_idle: float = _env("PAYCORE_DB_MAX_CONN_IDLE", "15m", _pos_duration, "idle connection close")
    db_health_check_period: float = _env(
        "PAYCORE_DB_HEALTH_CHECK_PERIOD", "1m", _pos_duration, "`SELECT 1` ping period (db_up)"
    )
    db_conn_budget: int = _env(
        "PAYCORE_DB_CONN_BUDGET", "50", _pos_int, "connections this container may open across processes"
    )
    db_acquire_timeout: float = _env(
        "PAYCORE_DB_ACQUIRE_TIMEOUT", "2s", _pos_duration, "max wait for a pooled connection"
    )
    db_pool_monitor_interval: float = _env(
        "PAYCORE_DB_POOL_MONITOR_INTERVAL", "10s", _pos_duration, "pool gauge sampling period"
    )
    db_pool_warn_ratio: float = _env("PAYCORE_DB_POOL_WARN_RATIO", "0.80", _ratio, "WARN log threshold")
    db_pool_error_ratio: float = _env("PAYCORE_DB_POOL_ERROR_RATIO", "0.95", _ratio, "ERROR log threshold")
    db_statement_cache_size: int = _env(
        "PAYCORE_DB_STATEMENT_CACHE_SIZE", "100", _nonneg_int, "asyncpg statement cache (0 behind a pooler)"
    )
    db_statement_timeout: float = _env(
        "PAYCORE_DB_STATEMENT_TIMEOUT", "60s", _pos_duration, "server-side statement_timeout backstop"
    )
    db_idle_in_tx_timeout: float = _env(
        "PAYCORE_DB_IDLE_IN_TX_TIMEOUT", "15s", _pos_duration, "server-side idle-in-transaction limit"
    )
    db_max_queries_per_request: int = _env(
        "PAYCORE_DB_MAX_QUERIES_PER_REQUEST", "10", _pos_int, "N+1 warning threshold"
    )
    query_timeout_simple: float = _env("PAYCORE_QUERY_TIMEOUT_SIMPLE", "2s", _pos_duration, "SIMPLE tier")
    query_timeout_standard: float = _env(
        "PAYCORE_QUERY_TIMEOUT_STANDARD", "5s", _pos_duration, "STANDARD tier and pool command_timeout"
    )
    query_timeout_complex: float = _env("PAYCORE_QUERY_TIMEOUT_COMPLEX", "15s", _pos_duration, "COMPLEX tier")
    query_timeout_report: float = _env("PAYCORE_QUERY_TIMEOUT_REPORT", "30s", _pos_duration, "REPORT tier")
    query_timeout_export: float = _env("PAYCORE_QUERY_TIMEOUT_EXPORT", "60s", _pos_duration, "EXPORT tier")
    tx_timeout: float = _env("PAYCORE_TX_TIMEOUT", "10s", _pos_duration, "one DB transaction")
    migration_statement_timeout: float = _env(
        "PAYCORE_MIGRATION_STATEMENT_TIMEOUT", "5m", _pos_duration, "per migration statement"
    )
    migration_lock_timeout: float = _env(
        "PAYCORE_MIGRATION_LOCK_TIMEOUT", "5s", _pos_duration, "lock wait during migrations"
    )
    # --- timeout hierarchy -------------------------------------------------------------------
    request_timeout: float = _env(
        "PAYCORE_REQUEST_TIMEOUT",
        "60s",
        _pos_duration,
        "request deadline (X-Request-Timeout-Ms may lower it)",
    )
    service_timeout: float = _env("PAYCORE_SERVICE_TIMEOUT", "50s", _pos_duration, "service call")
    service_critical_timeout: float = _env(
        "PAYCORE_SERVICE_CRITICAL_TIMEOUT", "45s", _pos_duration, "money-moving service path"
    )
    service_noncritical_timeout: float = _env(
        "PAYCORE_SERVICE_NONCRITICAL_TIMEOUT", "30s", _pos_duration, "listing/reporting service path"
    )
    gateway_timeout: float = _env(
        "PAYCORE_GATEWAY_TIMEOUT", "30s", _pos_duration, "one gateway call including retries"
    )
    gateway_attempt_timeout: float = _env(
        "PAYCORE_GATEWAY_ATTEMPT_TIMEOUT", "10s", _pos_duration, "one gateway attempt"
    )
    gateway_max_attempts: int = _env(
        "PAYCORE_GATEWAY_MAX_ATTEMPTS", "3", _pos_int, "attempts per gateway call"
    )
    gateway_connect_timeout: float = _env(
        "PAYCORE_GATEWAY_CONNECT_TIMEOUT", "5s", _pos_duration, "TCP/TLS connect to the gateway"
    )
    gateway_max_conns: int = _env("PAYCORE_GATEWAY_MAX_CONNS", "50", _pos_int, "gateway connector limit")
    gateway_keepalive: float = _env(
        "PAYCORE_GATEWAY_KEEPALIVE", "90s", _pos_duration, "idle gateway connection lifetime"
    )
    retry_base: float = _env("PAYCORE_RETRY_BASE", "100ms", _pos_duration, "backoff base")
    retry_cap: float = _env("PAYCORE_RETRY_CAP", "30s", _pos_duration, "backoff cap")
    retry_multiplier: float = _env("PAYCORE_RETRY_MULTIPLIER", "2.0", float, "backoff factor")
    retry_jitter: float = _env("PAYCORE_RETRY_JITTER", "0.1", _ratio, "± jitter fraction")
    # --- circuit breakers --------------------------------------------------------------------
    cb_enabled: bool = _env("PAYCORE_CB_ENABLED", "true", parse_bool, "circuit breakers on (kill switch)")
    cb_failure_threshold: int = _env(
        "PAYCORE_CB_FAILURE_THRESHOLD", "5", _pos_int, "consecutive failures to open"
    )
    cb_open_timeout: float = _env("PAYCORE_CB_OPEN_TIMEOUT", "30s", _pos_duration, "open → half-open")
    cb_half_open_probes: int = _env(
        "PAYCORE_CB_HALF_OPEN_PROBES", "3", _pos_int, "probes that must all succeed"
    )
    cb_window: int = _env("PAYCORE_CB_WINDOW", "20", _pos_int, "calls in the failure-rate window")
    cb_failure_rate: float = _env(
        "PAYCORE_CB_FAILURE_RATE", "0.5", _ratio, "failure-rate trip, non-gateway upstreams"
    )
    gateway_cb_failure_rate: float = _env(
        "PAYCORE_GATEWAY_CB_FAILURE_RATE", "0.6", _ratio, "failure-rate trip, gateway breakers"
    )
    reporting_timeout: float = _env("PAYCORE_REPORTING_TIMEOUT", "30s", _pos_duration, "reporting API call")
    # --- payments ----------------------------------------------------------------------------
    max_transaction_depth: int = _env(
        "PAYCORE_MAX_TRANSACTION_DEPTH", "10", _pos_int, "max parent chain on write"
    )
    batch_max_ids: int = _env(
        "PAYCORE_BATCH_MAX_IDS", "100", _pos_int, "ids per `POST /v1/payments/batch-get` (more: 422)"
    )
    reconcile_after: float = _env(
        "PAYCORE_RECONCILE_AFTER",
        "2m",
        _pos_duration,
        "age after which a pending/unknown transaction is reconciled against the gateway report",
    )
    # --- HTTP server -------------------------------------------------------------------------
    max_body_bytes: int = _env("PAYCORE_MAX_BODY_BYTES", "1048576", _pos_int, "request body limit (413)")
    max_header_bytes: int = _env("PAYCORE_MAX_HEADER_BYTES", "1048576", _pos_int, "request header limit")
    header_read_timeout: float = _env(
        "PAYCORE_HEADER_READ_TIMEOUT", "5s", _pos_duration, "request header read limit"
    )
    body_read_timeout: float = _env(
        "PAYCORE_BODY_READ_TIMEOUT", "10s", _pos_duration, "request body read limit"
    )
    h2_max_streams: int = _env("PAYCORE_H2_MAX_STREAMS", "250", _pos_int, "HTTP/2 concurrent streams")
    h2_max_frame: int = _env("PAYCORE_H2_MAX_FRAME", "1048576", _pos_int, "HTTP/2 max frame size")
    backpressure: int = _env(
        "PAYCORE_BACKPRESSURE", "512", _pos_int, "max concurrent requests per worker before refusing"
    )
    slow_request: float = _env("PAYCORE_SLOW_REQUEST", "1s", _pos_duration, "WARN threshold per request")
    health_timeout: float = _env(
        "PAYCORE_HEALTH_TIMEOUT", "2s", _pos_duration, "bound of each `/health` component check (run at once)"
    )
    health_cache_ttl: float = _env(
        "PAYCORE_HEALTH_CACHE_TTL", "2s", _nonneg_duration, "`/health` report reuse per process (0 = none)"
    )
    page_limit_default: int = _env("PAYCORE_PAGE_LIMIT_DEFAULT", "20", _pos_int, "default page size")
    page_limit_max: int = _env("PAYCORE_PAGE_LIMIT_MAX", "100", _pos_int, "max page size")
    compression_enabled: bool = _env("PAYCORE_COMPRESSION_ENABLED", "true", parse_bool, "gzip (kill switch)")
    gzip_level: int = _env("PAYCORE_GZIP_LEVEL", "6", _pos_int, "gzip level (rollback 3)")
    gzip_min_size: int = _env("PAYCORE_GZIP_MIN_SIZE", "1024", _pos_int, "bytes below which no gzip")
    etag_max_age: float = _env(
        "PAYCORE_ETAG_MAX_AGE",
        "0s",
        _nonneg_duration,
        "`Cache-Control: private, max-age` of merchant GETs carrying an ETag (0 = revalidate every time)",
    )
    # --- caches ------------------------------------------------------------------------------
    merchant_cache_enabled: bool = _env(
        "PAYCORE_MERCHANT_CACHE_ENABLED", "true", parse_bool, "credential cache (kill switch)"
    )
    merchant_cache_ttl: float = _env(
        "PAYCORE_MERCHANT_CACHE_TTL", "5m", _pos_duration, "credential cache TTL"
    )
    merchant_cache_max_size: int = _env(
        "PAYCORE_MERCHANT_CACHE_MAX_SIZE", "1000", _pos_int, "credential cache entries"
    )
    merchant_cache_warm_top_n: int = _env(
        "PAYCORE_MERCHANT_CACHE_WARM_TOP_N",
        "100",
        _nonneg_int,
        "busiest merchants loaded into the merchant cache at API start, in the background (0 = off)",
    )
    pm_cache_enabled: bool = _env(
        "PAYCORE_PM_CACHE_ENABLED", "true", parse_bool, "payment-method caches (kill switch)"
    )
    pm_cache_ttl: float = _env("PAYCORE_PM_CACHE_TTL", "2m", _pos_duration, "payment-method cache TTL")
    pm_cache_max_size: int = _env("PAYCORE_PM_CACHE_MAX_SIZE", "10000", _pos_int, "payment-method entries")
    pm_list_cache_ttl: float = _env(
        "PAYCORE_PM_LIST_CACHE_TTL", "30s", _pos_duration, "customer method-list cache TTL"
    )
    cache_max_stale: float = _env(
        "PAYCORE_CACHE_MAX_STALE",
        "15m",
        _nonneg_duration,
        "how long past its TTL a merchant/credential cache entry may still be served when the database"
        " fails (stale-on-error; never after an invalidation; 0 = off)",
    )
    # --- service-to-service JWTs (RS256; docs/api.md "Service-to-service authentication") -------
    jwt_leeway: float = _env(
        "PAYCORE_JWT_LEEWAY", "30s", _nonneg_duration, "clock skew allowed on `exp`, `nbf` and `iat`"
    )
    jwt_max_lifetime: float = _env(
        "PAYCORE_JWT_MAX_LIFETIME", "1h", _pos_duration, "longest accepted token life (`exp - iat`)"
    )
    jwt_audience: str | None = _env(
        "PAYCORE_JWT_AUDIENCE", None, str, "when set, tokens must carry this `aud`; unset = `aud` not checked"
    )
    service_client_cache_ttl: float = _env(
        "PAYCORE_SERVICE_CLIENT_CACHE_TTL", "5m", _pos_duration, "service-client public-key cache TTL"
    )
    service_grant_cache_ttl: float = _env(
        "PAYCORE_SERVICE_GRANT_CACHE_TTL", "1m", _pos_duration, "service grant cache TTL"
    )
    revoked_jti_cache_ttl: float = _env(
        "PAYCORE_REVOKED_JTI_CACHE_TTL", "30s", _pos_duration, "revoked-`jti` list reload interval"
    )
    # --- rate limits -------------------------------------------------------------------------
    ip_rate_limit_rps: int = _env("PAYCORE_IP_RATE_LIMIT_RPS", "10", _pos_int, "per-IP rate (public routes)")
    ip_rate_limit_burst: int = _env("PAYCORE_IP_RATE_LIMIT_BURST", "20", _pos_int, "per-IP burst")
    merchant_rate_limit_rps: int = _env(
        "PAYCORE_MERCHANT_RATE_LIMIT_RPS", "100", _pos_int, "per-merchant rate"
    )
    merchant_rate_limit_burst: int = _env(
        "PAYCORE_MERCHANT_RATE_LIMIT_BURST", "200", _pos_int, "per-merchant burst"
    )
    rate_limit_storage: str = _env(
        "PAYCORE_RATE_LIMIT_STORAGE",
        "memory://",
        _rate_limit_storage,
        "`memory://` (one instance) or a `redis://host:port/db` URI shared by every instance",
    )
    merchant_rate_limit_overrides: tuple[tuple[str, float, int], ...] = _env(
        "PAYCORE_MERCHANT_RATE_LIMIT_OVERRIDES",
        "",
        parse_rate_overrides,
        "per-merchant tiers: `slug=rate/burst` entries, comma separated (e.g. `acme=500/1000`)",
    )
    rate_limit_enabled: bool = _env(
        "PAYCORE_RATE_LIMIT_ENABLED", "true", parse_bool, "per-merchant and per-IP limits (kill switch)"
    )
    rate_limit_idle_expiry: float = _env(
        "PAYCORE_RATE_LIMIT_IDLE_EXPIRY", "3m", _pos_duration, "idle in-memory buckets are forgotten"
    )
    rate_limit_max_keys: int = _env(
        "PAYCORE_RATE_LIMIT_MAX_KEYS", "10000", _pos_int, "in-memory bucket cap (least recently used evicted)"
    )
    trusted_proxies: tuple[str, ...] = _env(
        "PAYCORE_TRUSTED_PROXIES", "", parse_str_list, "CIDRs whose X-Forwarded-For is trusted"
    )
    # --- jobs --------------------------------------------------------------------------------
    job_timeout: float = _env("PAYCORE_JOB_TIMEOUT", "5m", _pos_duration, "one worker job run")
    worker_concurrency: int = _env(
        "PAYCORE_WORKER_CONCURRENCY", "10", _pos_int, "jobs one `paycore worker` runs at once"
    )
    job_poll_interval: float = _env(
        "PAYCORE_JOB_POLL_INTERVAL", "1s", _pos_duration, "how often an idle worker looks for due jobs"
    )
    job_lease: float = _env(
        "PAYCORE_JOB_LEASE",
        "30s",
        _pos_duration,
        "claim lease of a job, renewed while it runs; a dead worker's jobs are re-run after it",
    )
    job_retry_base: float = _env(
        "PAYCORE_JOB_RETRY_BASE", "10s", _pos_duration, "first retry delay of a failed job (doubles)"
    )
    job_retry_cap: float = _env("PAYCORE_JOB_RETRY_CAP", "1h", _pos_duration, "longest job retry delay")
    job_retention: float = _env(
        "PAYCORE_JOB_RETENTION", "7d", _pos_duration, "finished jobs are deleted after this"
    )
    retention_interval: float = _env(
        "PAYCORE_RETENTION_INTERVAL", "1h", _pos_duration, "period of the purge jobs (keys, jobs, events)"
    )
    reconcile_interval: float = _env(
        "PAYCORE_RECONCILE_INTERVAL", "1m", _pos_duration, "period of the `payments.reconcile` job"
    )
    dispute_sync_interval: float = _env(
        "PAYCORE_DISPUTE_SYNC_INTERVAL", "1h", _pos_duration, "period of the `disputes.sync` job"
    )
    dispute_lookback_days: int = _env(
        "PAYCORE_DISPUTE_LOOKBACK_DAYS", "7", _pos_int, "days re-read by each dispute sync (overlap)"
    )
    dispute_max_lookback_days: int = _env(
        "PAYCORE_DISPUTE_MAX_LOOKBACK_DAYS", "90", _pos_int, "days read by a merchant's first dispute sync"
    )
    billing_concurrency: int = _env(
        "PAYCORE_BILLING_CONCURRENCY", "10", _pos_int, "concurrent charges per billing run"
    )
    billing_interval: float = _env(
        "PAYCORE_BILLING_INTERVAL", "1m", _pos_duration, "period of the `subscriptions.bill_due` job"
    )
    billing_retry_schedule: tuple[float, ...] = _env(
        "PAYCORE_BILLING_RETRY_SCHEDULE",
        "1d,3d,5d",
        parse_duration_list,
        "dunning: retries of a soft-declined period, as offsets from its first decline; then past_due",
    )
    billing_batch_size: int = _env(
        "PAYCORE_BILLING_BATCH_SIZE", "100", _pos_int, "subscriptions claimed per billing transaction"
    )
    billing_lease: float = _env(
        "PAYCORE_BILLING_LEASE",
        "5m",
        _pos_duration,
        "a claimed subscription is held this long; also the wait before retrying a charge the gateway "
        "never processed and before re-asking an unknown one",
    )
    ach_verification_days: int = _env(
        "PAYCORE_ACH_VERIFICATION_DAYS", "3", _pos_int, "banking days before a pre-noted account is verified"
    )
    ach_batch_size: int = _env("PAYCORE_ACH_BATCH_SIZE", "100", _pos_int, "rows per ACH sweep")
    ach_return_deactivate_threshold: int = _env(
        "PAYCORE_ACH_RETURN_DEACTIVATE_THRESHOLD",
        "2",
        _pos_int,
        "returns on live debits after which a bank account is deactivated (excessive_returns)",
    )
    ach_returns_lookback: float = _env(
        "PAYCORE_ACH_RETURNS_LOOKBACK",
        "7d",
        _pos_duration,
        "window of return dates re-read from the returns report on each ingest run",
    )
    ach_token_refresh_before: float = _env(
        "PAYCORE_ACH_TOKEN_REFRESH_BEFORE",
        "30d",
        _pos_duration,
        "a bank account's lapsing token (pre-note BRIC, 13 months) is renewed this long before it expires",
    )
    webhooks_enabled: bool = _env(
        "PAYCORE_WEBHOOKS_ENABLED", "true", parse_bool, "webhook delivery (kill switch)"
    )
    webhook_timeout: float = _env("PAYCORE_WEBHOOK_TIMEOUT", "10s", _pos_duration, "one delivery attempt")
    webhook_concurrency: int = _env("PAYCORE_WEBHOOK_CONCURRENCY", "50", _pos_int, "global delivery bulkhead")
    webhook_event_concurrency: int = _env(
        "PAYCORE_WEBHOOK_EVENT_CONCURRENCY", "10", _pos_int, "fan-out per event"
    )
    webhook_max_conns: int = _env("PAYCORE_WEBHOOK_MAX_CONNS", "200", _pos_int, "webhook connector limit")
    webhook_per_host: int = _env("PAYCORE_WEBHOOK_PER_HOST", "5", _pos_int, "connections per receiver host")
    webhook_keepalive: float = _env(
        "PAYCORE_WEBHOOK_KEEPALIVE", "30s", _pos_duration, "idle webhook connection lifetime"
    )
    webhook_retry_schedule: tuple[float, ...] = _env(
        "PAYCORE_WEBHOOK_RETRY_SCHEDULE",
        "5s,5m,30m,2h,5h,10h,14h,20h,24h",
        parse_duration_list,
        "delays between delivery attempts",
    )
    webhook_allow_private: bool = _env(
        "PAYCORE_WEBHOOK_ALLOW_PRIVATE",
        "false",
        parse_bool,
        "development only: allow loopback/private webhook targets (SSRF guard off)",
    )
    webhook_poll_interval: float = _env(
        "PAYCORE_WEBHOOK_POLL_INTERVAL", "1s", _pos_duration, "period of the dispatch and delivery jobs"
    )
    webhook_batch_size: int = _env(
        "PAYCORE_WEBHOOK_BATCH_SIZE", "100", _pos_int, "events or deliveries taken per job run"
    )
    webhook_secret_overlap: float = _env(
        "PAYCORE_WEBHOOK_SECRET_OVERLAP",
        "24h",
        parse_duration,
        "default time both secrets sign after a rotation",
    )
    webhook_disable_after: float = _env(
        "PAYCORE_WEBHOOK_DISABLE_AFTER",
        "5d",
        _pos_duration,
        "an endpoint failing without a single success for this long is disabled",
    )
    webhook_event_retention: float = _env(
        "PAYCORE_WEBHOOK_EVENT_RETENTION",
        "30d",
        _pos_duration,
        "events (and their delivery logs) are listed, re-sent and kept this long",
    )
    degraded: bool = _env(
        "PAYCORE_DEGRADED", "false", parse_bool, "turns off webhooks, reporting and detailed logging"
    )
    merchant_reporting_enabled: bool = _env(
        "PAYCORE_MERCHANT_REPORTING_ENABLED", "true", parse_bool, "asynchronous merchant reporting"
    )
    # --- observability -----------------------------------------------------------------------
    log_level: str = _env("PAYCORE_LOG_LEVEL", "info", _log_level, "minimum log level")
    log_queue_max: int = _env("PAYCORE_LOG_QUEUE_MAX", "10000", _pos_int, "log queue bound")
    detailed_logging_enabled: bool = _env(
        "PAYCORE_DETAILED_LOGGING_ENABLED", "false", parse_bool, "per-request INFO logging"
    )
    tracemalloc_enabled: bool = _env(
        "PAYCORE_TRACEMALLOC_ENABLED",
        "false",
        parse_bool,
        "trace allocations so the admin API can take heap snapshots (RES-M7; costs CPU and memory)",
    )
    tracemalloc_frames: int = _env(
        "PAYCORE_TRACEMALLOC_FRAMES", "1", _pos_int, "stack frames kept per traced allocation"
    )
    otlp_endpoint: str | None = _env(
        "PAYCORE_OTLP_ENDPOINT", None, _url, "OTLP/HTTP collector; unset = spans not exported"
    )
    trace_sample_ratio: float = _env("PAYCORE_TRACE_SAMPLE_RATIO", "0.1", _ratio, "root sampling ratio")
    log_sampling_target: int | None = _env(
        "PAYCORE_LOG_SAMPLING_TARGET",
        None,
        _pos_int,
        "INFO/DEBUG events kept per second per process; unset = by env (production 100, staging 500)",
    )
    metrics_merchant_labels: tuple[str, ...] = _env(
        "PAYCORE_METRICS_MERCHANT_LABELS",
        "",
        parse_str_list,
        "up to 50 merchant slugs given their own metric label; the others are `other`",
    )
    task_leak_interval: float = _env(
        "PAYCORE_TASK_LEAK_INTERVAL", "30s", _pos_duration, "task monitor period"
    )
    task_leak_threshold: int = _env(
        "PAYCORE_TASK_LEAK_THRESHOLD", "100", _pos_int, "tasks above baseline that count as a leak"
    )
    # --- shutdown ----------------------------------------------------------------------------
    shutdown_timeout: float = _env("PAYCORE_SHUTDOWN_TIMEOUT", "30s", _pos_duration, "total shutdown budget")
    shutdown_prestop_delay: float = _env(
        "PAYCORE_SHUTDOWN_PRESTOP_DELAY",
        "0s",
        parse_duration,
        "wait after /readyz turns 503 before draining (5s behind a load balancer)",
    )

    # ------------------------------------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def callback_base_url(self) -> str:
        return self.public_base_url or f"http://{self.http_host}:{self.http_port}"

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (logged at start)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            elif f.name == "database_url" and value:
                value = re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", value)
            out[f.metadata["env"]] = value
        return out


def variables() -> list[tuple[str, str | None, str]]:
    """(name, default, meaning) for every variable, in declaration order."""
    return [
        (f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in dataclasses.fields(Settings)
    ]


_DEV_SECRETS: Final = {
    "PAYCORE_API_KEY_SECRET": "dev-only-api-key-secret-do-not-use-in-production",
    "PAYCORE_CURSOR_SECRET": "dev-only-cursor-secret-do-not-use-in-production",
    # Fernet key: urlsafe base64 of 32 bytes. Development and test only.
    "PAYCORE_ENCRYPTION_KEYS": "v1:ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=",
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read, parse and validate every variable. Raises ConfigError naming the variable."""
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    env_name = source.get("PAYCORE_ENV", "development")
    for f in dataclasses.fields(Settings):
        name: str = f.metadata["env"]
        raw = source.get(name)
        if raw is None or raw == "":
            raw = f.metadata["default"]
        if raw is None and env_name in {"development", "test"} and name in _DEV_SECRETS:
            raw = _DEV_SECRETS[name]
        if raw is None:
            values[f.name] = None
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name}: {exc}") from None
    values.update(overrides)
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Cross-field rules. Each failure names the variable at fault."""
    required = {
        "PAYCORE_API_KEY_SECRET": s.api_key_secret,
        "PAYCORE_CURSOR_SECRET": s.cursor_secret,
        "PAYCORE_ENCRYPTION_KEYS": s.encryption_keys,
    }
    for name, value in required.items():
        if not value:
            raise ConfigError(f"{name}: required when PAYCORE_ENV={s.env}")
    if len(s.metrics_merchant_labels) > 50:
        raise ConfigError("PAYCORE_METRICS_MERCHANT_LABELS: at most 50 merchant slugs (metric cardinality)")
    if s.db_min_conns > s.db_max_conns:
        raise ConfigError("PAYCORE_DB_MIN_CONNS: must not exceed PAYCORE_DB_MAX_CONNS")
    if s.workers * s.db_max_conns > s.db_conn_budget:
        raise ConfigError(
            f"PAYCORE_DB_CONN_BUDGET: {s.workers} workers × {s.db_max_conns} connections "
            f"exceeds the budget of {s.db_conn_budget}"
        )
    if s.page_limit_default > s.page_limit_max:
        raise ConfigError("PAYCORE_PAGE_LIMIT_DEFAULT: must not exceed PAYCORE_PAGE_LIMIT_MAX")
    if s.gateway_attempt_timeout > s.gateway_timeout:
        raise ConfigError("PAYCORE_GATEWAY_ATTEMPT_TIMEOUT: must not exceed PAYCORE_GATEWAY_TIMEOUT")
    if s.gateway_timeout >= s.service_critical_timeout:
        raise ConfigError("PAYCORE_GATEWAY_TIMEOUT: must be below PAYCORE_SERVICE_CRITICAL_TIMEOUT")
    if s.service_critical_timeout >= s.request_timeout:
        raise ConfigError("PAYCORE_SERVICE_CRITICAL_TIMEOUT: must be below PAYCORE_REQUEST_TIMEOUT")
    if s.health_timeout >= s.request_timeout:
        raise ConfigError("PAYCORE_HEALTH_TIMEOUT: must be below PAYCORE_REQUEST_TIMEOUT")
    if s.gzip_level > 9:
        raise ConfigError("PAYCORE_GZIP_LEVEL: must be 1-9")
    if s.epx_server_post_url is None and s.env not in {"development", "test"}:
        raise ConfigError("PAYCORE_EPX_SERVER_POST_URL: required")
    if s.is_production:
        for url_name, url in (
            ("PAYCORE_EPX_SERVER_POST_URL", s.epx_server_post_url),
            ("PAYCORE_EPX_KEY_EXCHANGE_URL", s.epx_key_exchange_url),
            ("PAYCORE_EPX_BROWSER_POST_URL", s.epx_browser_post_url),
        ):
            if url and "epxuap.com" in url:
                raise ConfigError(f"{url_name}: a production deployment must not use the EPX sandbox")
        if s.webhook_allow_private:
            raise ConfigError("PAYCORE_WEBHOOK_ALLOW_PRIVATE: not allowed in production")
        if s.api_key_secret == _DEV_SECRETS["PAYCORE_API_KEY_SECRET"]:
            raise ConfigError("PAYCORE_API_KEY_SECRET: the development secret is not allowed in production")
    if s.dispute_lookback_days > s.dispute_max_lookback_days:
        raise ConfigError("PAYCORE_DISPUTE_LOOKBACK_DAYS: must not exceed PAYCORE_DISPUTE_MAX_LOOKBACK_DAYS")
    sched = s.billing_retry_schedule
    if not sched or min(sched) <= 0 or list(sched) != sorted(set(sched)):
        raise ConfigError(
            "PAYCORE_BILLING_RETRY_SCHEDULE: positive offsets, strictly increasing (e.g. 1d,3d,5d)"
        )
    if not s.webhook_retry_schedule:
        raise ConfigError("PAYCORE_WEBHOOK_RETRY_SCHEDULE: at least one delay is required")
    if s.retry_multiplier < 1.0:
        raise ConfigError("PAYCORE_RETRY_MULTIPLIER: must be at least 1.0")


def production_timeout_invariants(s: Settings) -> list[str]:
    """RES-7 production invariants of the timeout ladder; returns the violated ones."""
    problems: list[str] = []
    if s.gateway_attempt_timeout < 5:
        problems.append("attempt >= 5 s")
    if s.gateway_timeout < s.gateway_attempt_timeout:
        problems.append("gateway call >= attempt")
    if s.service_timeout < 5 + s.gateway_timeout + 10:
        problems.append("service >= 5 s + gateway call + 10 s")
    if s.request_timeout <= s.service_timeout:
        problems.append("request > service")
    if s.service_critical_timeout <= s.service_noncritical_timeout:
        problems.append("money-moving > non-critical")
    if s.job_timeout < 300 or s.job_timeout <= s.request_timeout:
        problems.append("job run >= 5 min and > request")
    return problems
