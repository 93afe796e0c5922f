"""structlog JSON logging through a queue (LOG-1) with a masking processor (SEC-1).

Rendering happens on the caller; writing happens on a listener thread, so no blocking I/O runs on
the event loop. The queue is bounded: when full, DEBUG/INFO records are dropped and counted, and
WARNING+ records wait for room (never dropped).

Every line inside a request carries `request_id`; every line inside a span carries `trace_id` and
`span_id`. INFO/DEBUG lines pass an adaptive sampler (LOG-4); WARNING+ and lines marked
`audit=True` or `security=True` are never sampled. The masking processor runs last, over the whole
event including rendered exceptions.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace as otel_trace
from prometheus_client import Counter

from paycore.platform.context import request_id_var

LOG_MESSAGES = Counter("log_messages_total", "Log records by level", ["level"])
LOG_DROPPED = Counter("log_records_dropped_total", "Log records dropped (queue full)", ["level"])

REDACTED = "[REDACTED]"
SENSITIVE_KEYS = frozenset(
    {
        "auth_guid",
        "bric",
        "orig_auth_guid",
        "payment_token",
        "token",
        "mac",
        "mac_secret",
        "api_key",
        "account_number",
        "account_nbr",
        "routing_number",
        "routing_nbr",
        "card_number",
        "card_nbr",
        "cvv",
        "cvv2",
        "exp_date",
        "expiration_date",
        "tac",
        "password",
        "secret",
        "authorization",
        "pan",
        "storage_token",
    }
)
# Keys whose lower-cased name contains one of these are always masked (`webhook_secret`,
# `x-api-key`, `db_password`, `proxy-authorization`, ...).
SENSITIVE_KEY_PARTS: Final = (
    "secret",
    "password",
    "passwd",
    "authorization",
    "api_key",
    "api-key",
    "cookie",
    "bric",
    "auth_guid",
    "card_number",
    "card_nbr",
    "account_number",
    "account_nbr",
    "routing_number",
    "routing_nbr",
    "cvv",
)
_DIGIT_RUN = re.compile(r"(?<!\d)(\d[ -]?){12,18}\d(?!\d)")
# Credentials inside free text: `Bearer <token>`, `Basic <b64>`, merchant API keys.
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}|\bsk_(?:live|test)_[A-Za-z0-9]{8,}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_digits(match: re.Match[str]) -> str:
    digits = match.group(0).replace(" ", "").replace("-", "")
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return REDACTED
    return match.group(0)


def _mask_credential(match: re.Match[str]) -> str:
    scheme = match.group(1)
    return f"{scheme} {REDACTED}" if scheme else REDACTED


def mask_text(text: str) -> str:
    """Mask 13-19 digit runs that pass Luhn (card-number-like) and credentials in free text."""
    if len(text) >= 13 and any(c.isdigit() for c in text):
        text = _DIGIT_RUN.sub(_mask_digits, text)
    if len(text) >= 11 and ("sk_" in text or "earer" in text or "asic" in text):
        text = _CREDENTIAL.sub(_mask_credential, text)
    return text


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in SENSITIVE_KEYS or any(part in lowered for part in SENSITIVE_KEY_PARTS)


MAX_DEPTH: Final = 16


def mask_value(key: str | None, value: Any, depth: int = 0) -> Any:
    """`value` with sensitive keys replaced by `[REDACTED]` at any nesting depth (keys compared
    case-insensitively) and card numbers / credentials masked inside strings. Deeper than
    `MAX_DEPTH`, containers are replaced whole (never passed through unmasked)."""
    if key is not None and is_sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bytes | bytearray):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return REDACTED
        return {k: mask_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        if depth >= MAX_DEPTH:
            return REDACTED
        return [mask_value(None, v, depth + 1) for v in value]
    return value


def masking_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = mask_value(key, event_dict[key])
    return event_dict


def _add_request_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    request_id = request_id_var.get()
    if request_id is not None and "request_id" not in event_dict:
        event_dict["request_id"] = request_id
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` of the active span (LOG-3)."""
    ctx = otel_trace.get_current_span().get_span_context()
    if ctx.is_valid and "trace_id" not in event_dict:
        event_dict["trace_id"] = f"{ctx.trace_id:032x}"
        event_dict["span_id"] = f"{ctx.span_id:016x}"
    return event_dict


SAMPLING_TARGETS: Final = {"production": 100, "staging": 500}
DEFAULT_SAMPLING_TARGET: Final = 999_999
_NEVER_SAMPLED: Final = frozenset({"warning", "error", "critical", "exception"})


def sampling_target_for(env: str) -> int:
    """INFO/DEBUG events kept per second per process by environment (LOG-4)."""
    return SAMPLING_TARGETS.get(env, DEFAULT_SAMPLING_TARGET)


class AdaptiveSampler:
    """LOG-4: keeps about `target` INFO/DEBUG events per second.

    Once per second the keep-rate is multiplied by 0.9 when more than `target` events were seen,
    and by 1.1 (up to 1.0) when fewer than 80 % of it were. Within a second, once `target` events
    were kept the rest are dropped. Kept sampled lines carry `sampled=true` and the rate. WARNING+
    and events with `audit=True` or `security=True` always pass."""

    def __init__(
        self,
        target: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] | None = None,
    ) -> None:
        import random

        self.target = target
        self.rate = 1.0
        self._clock = clock
        self._rand = rand or random.random
        self._window = clock()
        self._seen = 0
        self._kept = 0
        self._lock = threading.Lock()

    def __call__(self, _: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if method in _NEVER_SAMPLED or event_dict.get("audit") or event_dict.get("security"):
            return event_dict
        with self._lock:
            now = self._clock()
            if now - self._window >= 1.0:
                if self._seen > self.target:
                    self.rate *= 0.9
                elif self._seen < 0.8 * self.target:
                    self.rate = min(1.0, self.rate * 1.1)
                self._window = now
                self._seen = 0
                self._kept = 0
            self._seen += 1
            if self._seen <= self.target and self.rate >= 1.0:
                self._kept += 1
                return event_dict
            if self._kept >= self.target or self._rand() >= self.rate:
                raise structlog.DropEvent
            self._kept += 1
            event_dict["sampled"] = True
            event_dict["sample_rate"] = round(self.rate, 3)
            return event_dict


def _count(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    LOG_MESSAGES.labels(method if method != "exception" else "error").inc()
    return event_dict


_RENDERED: Final = "paycore_rendered"
_json_renderer = structlog.processors.JSONRenderer()


def _render(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Render JSON once, on the caller; mark the record so the writer passes it through."""
    return (_json_renderer(logger, method, event_dict),), {"extra": {_RENDERED: True}}


class _Formatter(logging.Formatter):
    """Runs on the listener thread. paycore's lines are already JSON; records of other libraries
    (asyncio, granian, aiohttp) are rendered as JSON here and masked like ours."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _RENDERED, False):
            return record.getMessage()
        event: dict[str, Any] = {
            "event": record.getMessage(),
            "logger": record.name,
            "level": record.levelname.lower(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        masked = masking_processor(None, record.levelname.lower(), event)
        return str(_json_renderer(None, "", masked))


class _BoundedQueueHandler(logging.handlers.QueueHandler):
    queue: queue.Queue[logging.LogRecord]

    def enqueue(self, record: logging.LogRecord) -> None:
        if not getattr(record, _RENDERED, False):
            LOG_MESSAGES.labels(record.levelname.lower()).inc()
        if record.levelno >= logging.WARNING:
            self.queue.put(record)  # wait for room: warnings and errors are never dropped
            return
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            LOG_DROPPED.labels(record.levelname.lower()).inc()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # rendered by structlog, or formatted on the listener thread


_listener: logging.handlers.QueueListener | None = None


def configure_logging(
    level: str = "info",
    queue_max: int = 10000,
    *,
    stream: Any = None,
    sampling_target: int | None = None,
) -> None:
    """Configure structlog + stdlib logging once per process (`sampling_target` None: no sampling)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
    numeric = logging.getLevelNamesMapping()[level.upper()]
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=queue_max)
    out = logging.StreamHandler(stream or sys.stdout)
    out.setFormatter(_Formatter())
    _listener = logging.handlers.QueueListener(q, out, respect_handler_level=False)
    _listener.start()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_BoundedQueueHandler(q))
    root.setLevel(numeric)
    for noisy in ("asyncio", "aiohttp.access", "granian.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sampling: list[Any] = [AdaptiveSampler(sampling_target)] if sampling_target else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            *sampling,
            _count,
            _add_request_id,
            add_trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            masking_processor,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def flush_logs() -> None:
    """Drain the queue (shutdown phase 6). Lines logged afterwards are written directly (the
    process is stopping: nothing may wait on a queue nobody reads)."""
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        listener.stop()
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, _BoundedQueueHandler):
                root.removeHandler(handler)
        for out in listener.handlers:
            root.addHandler(out)
