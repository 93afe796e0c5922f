"""Per-request context carried in context variables (request id, trace parent)."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("paycore_request_id", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("paycore_traceparent", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()
