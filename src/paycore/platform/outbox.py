"""What every outbox insert writes (conventions.md, webhooks; LOG-2).

Capabilities write their events to `outbox_events` in the transaction of the change, each with
its own statement; they all name the columns through `OUTBOX_COLUMNS` and bind `origin()` to the
last one, so no path can forget the request id (`tests/unit/architecture/test_outbox_inserts.py`
checks every statement).

`request_id` is the `X-Request-ID` of the API request whose transaction wrote the event (the
request envelope keeps it in a context variable; tasks spawned by the request inherit it), sent
back as `X-Request-ID` on every delivery attempt. Events written by jobs carry none.
"""

from __future__ import annotations

from typing import Final

from paycore.platform.context import current_request_id

OUTBOX_COLUMNS: Final = (
    "id, merchant_id, event_type, aggregate_type, aggregate_id, payload, traceparent, request_id"
)


def origin() -> str | None:
    """The request id to store with an event written now (None outside a request)."""
    return current_request_id()
