"""structlog JSON logging through a queue (LOG-1) with a masking processor (SEC-1).

Rendering happens on the caller; writing happens on a listener thread, so no blocking I/O runs on
the event loop. The queue is bounded: when full, DEBUG/INFO records are dropped and counted, and
WARNING+ records wait for room (never dropped).
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
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
_DIGIT_RUN = re.compile(r"(?<!\d)(\d[ -]?){12,18}\d(?!\d)")


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


def mask_text(text: str) -> str:
    """Mask 13-19 digit runs that pass Luhn (card-number-like)."""

    def repl(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return REDACTED
        return match.group(0)

    return _DIGIT_RUN.sub(repl, text)


def mask_value(key: str | None, value: Any, depth: int = 0) -> Any:
    if key is not None and key.lower() in SENSITIVE_KEYS:
        return REDACTED
    if depth > 8:
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
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


def _count(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    LOG_MESSAGES.labels(method if method != "exception" else "error").inc()
    return event_dict


class _BoundedQueueHandler(logging.handlers.QueueHandler):
    queue: queue.Queue[logging.LogRecord]

    def enqueue(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.queue.put(record)  # wait for room: warnings and errors are never dropped
            return
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            LOG_DROPPED.labels(record.levelname.lower()).inc()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # already rendered by structlog; keep the message as is


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str = "info", queue_max: int = 10000, *, stream: Any = None) -> None:
    """Configure structlog + stdlib logging once per process."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
    numeric = logging.getLevelNamesMapping()[level.upper()]
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=queue_max)
    out = logging.StreamHandler(stream or sys.stdout)
    out.setFormatter(logging.Formatter("%(message)s"))
    _listener = logging.handlers.QueueListener(q, out, respect_handler_level=False)
    _listener.start()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_BoundedQueueHandler(q))
    root.setLevel(numeric)
    for noisy in ("asyncio", "aiohttp.access", "granian.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            _count,
            _add_request_id,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            masking_processor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def flush_logs() -> None:
    """Drain the queue (shutdown phase 6)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
