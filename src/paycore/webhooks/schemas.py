"""API shapes for webhook endpoints and events (msgspec Structs)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, description="HTTPS URL of the receiver")]
EventType = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^(\*|[a-z_]+\.[a-z_]+)$",
        description="An event type such as `payment.succeeded`, or `*` for all",
    ),
]
EnabledEvents = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=32)]
MetaKey = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MetaValue = Annotated[str, msgspec.Meta(max_length=500)]
Metadata = Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=50)]
Description = Annotated[str, msgspec.Meta(max_length=500)]
OverlapSeconds = Annotated[int, msgspec.Meta(ge=0, le=7 * 86400, description="0-604800 seconds")]


class CreateEndpoint(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Register a receiver for some event types (or `*`)."""

    url: Url
    enabled_events: EnabledEvents
    description: Description | None = None
    metadata: Metadata | None = None


class UpdateEndpoint(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Change the URL, the event types, the description or metadata, or disable/enable it."""

    url: Url | None = None
    enabled_events: EnabledEvents | None = None
    description: Description | None = None
    metadata: Metadata | None = None
    disabled: bool | None = None


class RotateSecret(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`overlap_seconds`: how long the old secret keeps signing too (default 24 h)."""

    overlap_seconds: OverlapSeconds | None = None


class EndpointOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: uuid.UUID
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    enabled_events: list[str]
    status: Literal["enabled", "disabled"]
    livemode: bool
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    disabled_reason: str | None = None
    metadata: dict[str, str] | None = None
    previous_secret_expires_at: datetime | None = None
    # shown once: on creation and on rotation
    secret: str | None = None


class EndpointList(msgspec.Struct, kw_only=True):
    data: list[EndpointOut]
    has_more: bool
    next_cursor: str | None = None
    prev_cursor: str | None = None
    object: Literal["list"] = "list"


class EventOut(msgspec.Struct, kw_only=True):
    """The event as receivers get it (the webhook body) and as the API lists it."""

    id: uuid.UUID
    type: str
    created_at: datetime
    livemode: bool
    data: dict[str, Any]
    object: Literal["event"] = "event"


class EventList(msgspec.Struct, kw_only=True):
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None = None
    prev_cursor: str | None = None
    object: Literal["list"] = "list"


class DeliveryAttemptOut(msgspec.Struct, kw_only=True):
    attempted_at: datetime
    outcome: str
    duration_ms: int
    status_code: int | None = None
    error: str | None = None


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    status: Literal["pending", "delivering", "succeeded", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    log: list[DeliveryAttemptOut] = msgspec.field(default_factory=list)
    object: Literal["webhook_delivery"] = "webhook_delivery"


class EventDetail(msgspec.Struct, kw_only=True):
    """An event with its deliveries and each delivery's attempt log."""

    id: uuid.UUID
    type: str
    created_at: datetime
    livemode: bool
    data: dict[str, Any]
    deliveries: list[DeliveryOut]
    object: Literal["event"] = "event"


class ResendEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Send the event again to every enabled subscribed endpoint, or to one."""

    endpoint_id: uuid.UUID | None = None


class ResendOut(msgspec.Struct, kw_only=True):
    event_id: uuid.UUID
    deliveries: list[DeliveryOut]
    object: Literal["webhook_resend"] = "webhook_resend"
