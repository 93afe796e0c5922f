"""Webhooks: endpoints, events, fan-out of the outbox and signed delivery (conventions.md).

* Capabilities write events to `outbox_events` in the transaction of the change (nothing here).
* `dispatch()` (job `webhooks.dispatch`) fans each new event out to one `webhook_deliveries` row
  per enabled endpoint subscribed to its type, in one transaction, and marks it dispatched.
* `deliver_due()` (job `webhooks.deliver`) claims due deliveries with `FOR UPDATE SKIP LOCKED`
  under a lease, so several workers never send the same attempt twice, and sends them behind the
  bulkheads: all sends share `PAYCORE_WEBHOOK_CONCURRENCY` slots, one event's fan-out at most
  `PAYCORE_WEBHOOK_EVENT_CONCURRENCY`, each delivery records its own outcome (a failing receiver
  never stops its siblings). The body is encoded once per event; the signature covers it exactly.
* 2xx → delivered; 410 → the endpoint is disabled; anything else is retried on
  `PAYCORE_WEBHOOK_RETRY_SCHEDULE` (± jitter, a longer `Retry-After` wins), then `failed`; an
  endpoint whose deliveries all failed for `PAYCORE_WEBHOOK_DISABLE_AFTER` is disabled.
* `PAYCORE_WEBHOOKS_ENABLED=false` or `PAYCORE_DEGRADED=true`: no delivery attempts; events and
  deliveries keep accumulating and go out once delivery is on again.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from paycore.kernel import codec, errors
from paycore.kernel.clock import Clock
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.merchants.model import Principal
from paycore.platform.context import traceparent_var
from paycore.platform.crypto import Keyring, Sealed
from paycore.platform.cursor import CursorCodec
from paycore.platform.db import Database
from paycore.platform.flags import Switch, constant
from paycore.platform.observability import metrics as m
from paycore.platform.observability import tracing
from paycore.webhooks import model, schemas
from paycore.webhooks.delivery import AttemptResult, Bulkhead, post
from paycore.webhooks.repository import DeliveryRow, EndpointRow, EventRow, WebhookRepository

log = structlog.get_logger("paycore.webhooks")

ENDPOINT_NOT_FOUND = errors.register("webhook_endpoint_not_found", 404, "No such webhook endpoint")
EVENT_NOT_FOUND = errors.register("event_not_found", 404, "No such event (events are kept 30 days)")
URL_INVALID = errors.register("webhook_url_invalid", 422, "The webhook URL is not valid")
URL_FORBIDDEN = errors.register(
    "webhook_url_forbidden", 422, "The webhook URL points at a private or reserved address"
)
EVENT_TYPE_UNKNOWN = errors.register("webhook_event_type_unknown", 422, "Unknown event type")
ENDPOINT_DISABLED = errors.register("webhook_endpoint_disabled", 409, "The webhook endpoint is disabled")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    allow_private: bool = False
    timeout: float = 10.0
    concurrency: int = 50
    event_concurrency: int = 10
    retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    jitter: float = 0.1
    batch_size: int = 100
    secret_overlap: float = 86400.0
    disable_after: float = 5 * 86400.0
    event_retention: float = 30 * 86400.0
    lease: float = 60.0
    resolve_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ListEvents:
    limit: int
    event_type: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None
    starting_after: str | None = None
    ending_before: str | None = None


class WebhookService:
    def __init__(
        self,
        *,
        db: Database,
        repository: WebhookRepository,
        keyring: Keyring,
        session: aiohttp.ClientSession,
        clock: Clock,
        cursors: CursorCodec,
        config: WebhookConfig,
        enabled: bool | Switch = True,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.repo = repository
        self.keyring = keyring
        self.session = session
        self.clock = clock
        self.cursors = cursors
        self.config = config
        # the kill switch (`webhooks` and not `degraded`), read before every delivery run
        self._enabled: Switch = enabled if callable(enabled) else constant(enabled)
        self.rand = rand
        self.bulkhead = Bulkhead("webhooks", config.concurrency)

    @property
    def enabled(self) -> bool:
        return self._enabled()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = constant(value)

    # ================================================================== endpoints API
    async def _check_url(self, url: str) -> None:
        try:
            host = model.check_url(url, allow_private=self.config.allow_private)
        except model.UrlProblem as exc:
            raise PaycoreError(
                URL_FORBIDDEN if exc.forbidden else URL_INVALID, str(exc), param="url"
            ) from None
        if self.config.allow_private:
            return
        try:
            async with asyncio.timeout(self.config.resolve_timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            raise PaycoreError(URL_INVALID, f"the host {host} does not resolve", param="url") from None
        if any(model.forbidden_address(str(info[4][0])) for info in infos):
            raise PaycoreError(URL_FORBIDDEN, param="url")

    @staticmethod
    def _check_events(events: list[str]) -> list[str]:
        unknown = model.unknown_event_types(events)
        if unknown:
            raise PaycoreError(
                EVENT_TYPE_UNKNOWN, f"unknown event types: {', '.join(unknown)}", param="enabled_events"
            )
        return sorted(set(events))

    def _out(self, row: EndpointRow, principal: Principal, secret: str | None = None) -> schemas.EndpointOut:
        return schemas.EndpointOut(
            id=row.id,
            url=row.url,
            enabled_events=row.event_types,
            status="enabled" if row.status == "enabled" else "disabled",
            livemode=principal.livemode,
            created_at=row.created_at,
            updated_at=row.updated_at,
            description=row.description,
            disabled_reason=row.disabled_reason,
            metadata=row.metadata,
            previous_secret_expires_at=row.previous_secret_expires_at
            if row.previous_secret_expires_at and row.previous_secret_expires_at > self.clock.now()
            else None,
            secret=secret,
        )

    @staticmethod
    def _new_secret() -> str:
        return model.format_secret(os.urandom(model.SECRET_BYTES))

    async def create_endpoint(self, principal: Principal, cmd: schemas.CreateEndpoint) -> schemas.EndpointOut:
        events = self._check_events(cmd.enabled_events)
        await self._check_url(cmd.url)
        secret = self._new_secret()
        sealed = self.keyring.seal(secret)
        row = await self.repo.insert_endpoint(
            (
                uuid7(),
                principal.merchant.id,
                cmd.url,
                cmd.description,
                events,
                cmd.metadata,
                sealed.ciphertext,
                sealed.key_version,
            )
        )
        log.info("webhook_endpoint_created", endpoint_id=str(row.id), events=events)
        return self._out(row, principal, secret)

    async def get_endpoint(self, principal: Principal, endpoint_id: uuid.UUID) -> schemas.EndpointOut:
        row = await self.repo.get_endpoint(endpoint_id, principal.merchant.id)
        if row is None:
            raise PaycoreError(ENDPOINT_NOT_FOUND)
        return self._out(row, principal)

    async def list_endpoints(
        self, principal: Principal, limit: int, starting_after: str | None, ending_before: str | None
    ) -> schemas.EndpointList:
        mid = principal.merchant.id
        after, before = self.cursors.bounds(starting_after, ending_before, mid)
        rows = await self.repo.list_endpoints(mid, limit + 1, after, before)
        page = self.cursors.page(
            rows, limit=limit, merchant_id=mid, after=after, before=before, key=lambda r: (r.created_at, r.id)
        )
        return schemas.EndpointList(
            data=[self._out(r, principal) for r in page.rows],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            prev_cursor=page.prev_cursor,
        )

    async def update_endpoint(
        self, principal: Principal, endpoint_id: uuid.UUID, cmd: schemas.UpdateEndpoint
    ) -> schemas.EndpointOut:
        events = self._check_events(cmd.enabled_events) if cmd.enabled_events is not None else None
        if cmd.url is not None:
            await self._check_url(cmd.url)
        status = None if cmd.disabled is None else ("disabled" if cmd.disabled else "enabled")
        row = await self.repo.update_endpoint(
            (endpoint_id, principal.merchant.id, cmd.url, cmd.description, events, cmd.metadata, status)
        )
        if row is None:
            raise PaycoreError(ENDPOINT_NOT_FOUND)
        return self._out(row, principal)

    async def delete_endpoint(self, principal: Principal, endpoint_id: uuid.UUID) -> None:
        if not await self.repo.delete_endpoint(endpoint_id, principal.merchant.id):
            raise PaycoreError(ENDPOINT_NOT_FOUND)

    async def rotate_secret(
        self, principal: Principal, endpoint_id: uuid.UUID, cmd: schemas.RotateSecret
    ) -> schemas.EndpointOut:
        overlap = (
            float(cmd.overlap_seconds) if cmd.overlap_seconds is not None else self.config.secret_overlap
        )
        secret = self._new_secret()
        sealed = self.keyring.seal(secret)
        row = await self.repo.rotate_secret(
            endpoint_id, principal.merchant.id, sealed.ciphertext, sealed.key_version, overlap
        )
        if row is None:
            raise PaycoreError(ENDPOINT_NOT_FOUND)
        log.info("webhook_secret_rotated", endpoint_id=str(endpoint_id), overlap_seconds=overlap)
        return self._out(row, principal, secret)

    async def rotate_encryption_key(self) -> int:
        """Re-encrypt every endpoint secret (current and previous) under the primary key."""
        return await reseal_secrets(self.repo, self.keyring)

    # ================================================================== events API
    def _event_out(self, row: EventRow, livemode: bool) -> schemas.EventOut:
        return schemas.EventOut(
            id=row.id, type=row.event_type, created_at=row.created_at, livemode=livemode, data=row.payload
        )

    async def list_events(self, principal: Principal, query: ListEvents) -> schemas.EventList:
        mid = principal.merchant.id
        after, before = self.cursors.bounds(query.starting_after, query.ending_before, mid)
        rows = await self.repo.list_events(
            mid,
            limit=query.limit + 1,
            window=self.config.event_retention,
            event_type=query.event_type,
            created_gte=query.created_gte,
            created_lt=query.created_lt,
            after=after,
            before=before,
        )
        page = self.cursors.page(
            rows,
            limit=query.limit,
            merchant_id=mid,
            after=after,
            before=before,
            key=lambda r: (r.created_at, r.id),
        )
        return schemas.EventList(
            data=[self._event_out(r, principal.livemode) for r in page.rows],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            prev_cursor=page.prev_cursor,
        )

    async def _deliveries_out(self, deliveries: list[DeliveryRow]) -> list[schemas.DeliveryOut]:
        attempts = await self.repo.attempts_for([d.id for d in deliveries])
        logs: dict[uuid.UUID, list[schemas.DeliveryAttemptOut]] = {}
        for a in attempts:
            logs.setdefault(a.delivery_id, []).append(
                schemas.DeliveryAttemptOut(
                    attempted_at=a.attempted_at,
                    outcome=a.outcome,
                    duration_ms=a.duration_ms,
                    status_code=a.status_code,
                    error=a.error,
                )
            )
        return [
            schemas.DeliveryOut(
                id=d.id,
                endpoint_id=d.endpoint_id,
                status=d.status,  # type: ignore[arg-type]
                attempts=d.attempts,
                created_at=d.created_at,
                next_attempt_at=d.next_attempt_at,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                delivered_at=d.delivered_at,
                log=logs.get(d.id, []),
            )
            for d in deliveries
        ]

    async def get_event(self, principal: Principal, event_id: uuid.UUID) -> schemas.EventDetail:
        mid = principal.merchant.id
        row = await self.repo.get_event(event_id, mid, self.config.event_retention)
        if row is None:
            raise PaycoreError(EVENT_NOT_FOUND)
        deliveries = await self._deliveries_out(await self.repo.event_deliveries(event_id, mid))
        return schemas.EventDetail(
            id=row.id,
            type=row.event_type,
            created_at=row.created_at,
            livemode=principal.livemode,
            data=row.payload,
            deliveries=deliveries,
        )

    async def resend(
        self, principal: Principal, event_id: uuid.UUID, cmd: schemas.ResendEvent
    ) -> schemas.ResendOut:
        mid = principal.merchant.id
        event = await self.repo.get_event(event_id, mid, self.config.event_retention)
        if event is None:
            raise PaycoreError(EVENT_NOT_FOUND)
        if cmd.endpoint_id is not None:
            endpoint = await self.repo.get_endpoint(cmd.endpoint_id, mid)
            if endpoint is None:
                raise PaycoreError(ENDPOINT_NOT_FOUND, param="endpoint_id")
            if endpoint.status != "enabled":
                raise PaycoreError(ENDPOINT_DISABLED, param="endpoint_id")
            targets = [endpoint.id]
        else:
            async with self.db.transaction() as con:
                candidates = await self.repo.enabled_endpoints_for(con, [mid])
            targets = [c["id"] for c in candidates if model.subscribed(event.event_type, c["event_types"])]
        deliveries = await self.repo.resend(event, [(uuid7(), t) for t in targets])
        log.info("webhook_event_resent", event_id=str(event_id), deliveries=len(deliveries))
        return schemas.ResendOut(event_id=event_id, deliveries=await self._deliveries_out(deliveries))

    # ================================================================== worker side
    async def dispatch(self, limit: int | None = None) -> int:
        """Fan new outbox events out to deliveries (one per subscribed enabled endpoint)."""
        limit = limit or self.config.batch_size
        async with self.db.transaction() as con:
            events = await self.repo.lock_undispatched(con, limit)
            if not events:
                return 0
            merchants = sorted({e["merchant_id"] for e in events})
            endpoints = await self.repo.enabled_endpoints_for(con, merchants)
            by_merchant: dict[uuid.UUID, list[Any]] = {}
            for ep in endpoints:
                by_merchant.setdefault(ep["merchant_id"], []).append(ep)
            rows = [
                (uuid7(), e["id"], ep["id"], e["merchant_id"], e["event_type"])
                for e in events
                for ep in by_merchant.get(e["merchant_id"], [])
                if model.subscribed(e["event_type"], ep["event_types"])
            ]
            await self.repo.insert_deliveries(con, rows)
            await self.repo.mark_dispatched(con, [e["id"] for e in events])
        for row in rows:
            m.WEBHOOK_DELIVERIES.labels(model.event_label(row[4]), "pending").inc(0)
        return len(events)

    async def deliver_due(self, limit: int | None = None) -> int:
        """Claim due deliveries and send them; returns the number of attempts made."""
        if not self.enabled:
            return 0
        limit = limit or self.config.batch_size
        await self.repo.requeue_lapsed()
        token = uuid.uuid4()
        claimed = await self.repo.claim_due(limit, token, self.config.lease)
        if not claimed:
            return 0
        endpoints = await self.repo.endpoints_by_ids(sorted({d.endpoint_id for d in claimed}))
        events = await self.repo.events_by_ids(sorted({d.event_id for d in claimed}))
        by_event: dict[uuid.UUID, list[DeliveryRow]] = {}
        for delivery in claimed:
            by_event.setdefault(delivery.event_id, []).append(delivery)
        # structured: every event's fan-out finishes (or is cancelled) before this returns
        await asyncio.gather(
            *(self._fan_out(events.get(eid), group, endpoints, token) for eid, group in by_event.items())
        )
        return len(claimed)

    async def _fan_out(
        self,
        event: EventRow | None,
        deliveries: list[DeliveryRow],
        endpoints: dict[uuid.UUID, tuple[EndpointRow, bool]],
        token: uuid.UUID,
    ) -> None:
        if event is None:  # purged meanwhile
            for d in deliveries:
                await self.repo.cancel_delivery(d.id, token, "event no longer exists")
            return
        body = codec.encode(self._event_out(event, event.livemode))  # encoded once, signed per endpoint
        fan_out = asyncio.Semaphore(self.config.event_concurrency)
        traceparent_token = traceparent_var.set(event.traceparent)
        try:
            await asyncio.gather(
                *(self._deliver_one(event, body, d, endpoints, token, fan_out) for d in deliveries)
            )
        finally:
            traceparent_var.reset(traceparent_token)

    def _signing_keys(self, endpoint: EndpointRow) -> list[bytes]:
        keys = [
            model.secret_key(
                self.keyring.open(Sealed(endpoint.secret_ciphertext, endpoint.secret_key_version)).reveal()
            )
        ]
        if (
            endpoint.previous_secret_ciphertext
            and endpoint.previous_secret_key_version
            and endpoint.previous_secret_expires_at is not None
            and endpoint.previous_secret_expires_at > self.clock.now()
        ):
            previous = Sealed(endpoint.previous_secret_ciphertext, endpoint.previous_secret_key_version)
            keys.append(model.secret_key(self.keyring.open(previous).reveal()))
        return keys

    async def _deliver_one(
        self,
        event: EventRow,
        body: bytes,
        delivery: DeliveryRow,
        endpoints: dict[uuid.UUID, tuple[EndpointRow, bool]],
        token: uuid.UUID,
        fan_out: asyncio.Semaphore,
    ) -> None:
        """One attempt in a `webhook.deliver` span: a new trace root linked to the span that wrote
        the event (MON-4)."""
        attributes = {
            "paycore.webhook.event_id": str(event.id),
            "paycore.webhook.event_type": event.event_type,
            "paycore.webhook.delivery_id": str(delivery.id),
            "paycore.webhook.endpoint_id": str(delivery.endpoint_id),
        }
        with tracing.job_span("webhook.deliver", event.traceparent, attributes):
            await self._attempt_delivery(event, body, delivery, endpoints, token, fan_out)

    async def _attempt_delivery(
        self,
        event: EventRow,
        body: bytes,
        delivery: DeliveryRow,
        endpoints: dict[uuid.UUID, tuple[EndpointRow, bool]],
        token: uuid.UUID,
        fan_out: asyncio.Semaphore,
    ) -> None:
        """One attempt; records its own outcome and never raises (siblings continue)."""
        label = model.event_label(event.event_type)
        try:
            found = endpoints.get(delivery.endpoint_id)
            if found is None or found[1] or found[0].status != "enabled":
                reason = "endpoint deleted" if found is None or found[1] else "endpoint disabled"
                await self.repo.cancel_delivery(delivery.id, token, reason)
                m.WEBHOOK_DELIVERIES.labels(label, "failed").inc()
                return
            endpoint = found[0]
            try:
                model.check_url(endpoint.url, allow_private=self.config.allow_private)
                result: AttemptResult | None = None
            except model.UrlProblem as exc:
                result = AttemptResult(None, 0.0, error=f"blocked: {exc}")
            if result is None:
                keys = self._signing_keys(endpoint)
                timestamp = int(self.clock.now().timestamp())
                headers = model.headers(keys, str(event.id), timestamp, body, event.request_id)
                async with fan_out, self.bulkhead.slot():
                    result = await post(self.session, endpoint.url, body, headers, self.config.timeout)
            m.WEBHOOK_DURATION.labels(label).observe(result.duration)
            await self._record(event, delivery, endpoint, token, result, label)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "webhook_delivery_error",
                delivery_id=str(delivery.id),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )

    async def _record(
        self,
        event: EventRow,
        delivery: DeliveryRow,
        endpoint: EndpointRow,
        token: uuid.UUID,
        result: AttemptResult,
        label: str,
    ) -> None:
        verdict = model.verdict(result.status_code)
        duration_ms = int(result.duration * 1000)
        now = self.clock.now()
        if verdict is model.Verdict.DELIVERED:
            await self.repo.finish_delivery(
                delivery.id,
                token,
                status="succeeded",
                next_attempt_at=None,
                status_code=result.status_code,
                error=None,
                outcome="delivered",
                duration_ms=duration_ms,
                endpoint_id=endpoint.id,
                health="success",
                disable_after=self.config.disable_after,
            )
            m.WEBHOOK_DELIVERIES.labels(label, "success").inc()
            return
        error = result.error or f"HTTP {result.status_code}"
        if verdict is model.Verdict.GONE:
            await self.repo.finish_delivery(
                delivery.id,
                token,
                status="failed",
                next_attempt_at=None,
                status_code=result.status_code,
                error=error,
                outcome="gone",
                duration_ms=duration_ms,
                endpoint_id=endpoint.id,
                health="failure",
                disable_after=self.config.disable_after,
                disable_reason="the receiver answered 410 Gone",
            )
            m.WEBHOOK_DELIVERIES.labels(label, "failed").inc()
            log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason="410 Gone")
            return
        delay = model.next_delay(
            delivery.attempts + 1,
            self.config.retry_schedule,
            jitter=self.config.jitter,
            rand=self.rand,
            retry_after=model.parse_retry_after(result.retry_after, now),
        )
        next_at = now + timedelta(seconds=delay) if delay is not None else None
        status = "pending" if next_at is not None else "failed"
        endpoint_status = await self.repo.finish_delivery(
            delivery.id,
            token,
            status=status,
            next_attempt_at=next_at,
            status_code=result.status_code,
            error=error[:500],
            outcome="retry_scheduled" if next_at is not None else "exhausted",
            duration_ms=duration_ms,
            endpoint_id=endpoint.id,
            health="failure",
            disable_after=self.config.disable_after,
        )
        m.WEBHOOK_DELIVERIES.labels(label, status).inc()
        if next_at is None:
            log.error(
                "webhook_delivery_failed",
                delivery_id=str(delivery.id),
                endpoint_id=str(endpoint.id),
                attempts=delivery.attempts + 1,
            )
        if endpoint_status == "disabled":
            log.warning("webhook_endpoint_disabled", endpoint_id=str(endpoint.id), reason="failing too long")

    async def purge(self) -> int:
        total = 0
        while True:
            purged = await self.repo.purge_events(self.config.event_retention, 1000)
            total += purged
            if purged < 1000:
                return total


async def reseal_secrets(repo: WebhookRepository, keyring: Keyring) -> int:
    """Re-encrypt every endpoint secret (current and previous) under the primary key version;
    returns how many endpoints changed. Part of `paycore admin rotate-encryption-key`."""
    primary = keyring.primary_version
    total = 0
    while True:
        batch = await repo.sealed_not_at(primary, 200)
        progressed = 0
        for row in batch:
            current = keyring.reseal(Sealed(row["secret_ciphertext"], row["secret_key_version"]))
            previous = (
                keyring.reseal(Sealed(row["previous_secret_ciphertext"], row["previous_secret_key_version"]))
                if row["previous_secret_ciphertext"]
                else None
            )
            if await repo.update_sealed(
                (
                    row["id"],
                    current.ciphertext,
                    current.key_version,
                    previous.ciphertext if previous else None,
                    previous.key_version if previous else None,
                    row["secret_key_version"],
                    row["previous_secret_key_version"],
                )
            ):
                progressed += 1
        total += progressed
        if not batch or progressed == 0:
            return total
