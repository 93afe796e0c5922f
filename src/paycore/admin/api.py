"""HTTP routes of the admin API (`/admin/v1`): thin — authenticate, call the service, encode.

Every call is audit-logged by `AdminAudit` (a route middleware): who (the admin token, or
`anonymous` when authentication failed), what (the route's action and object), the request id, the
client IP and the outcome — written before the answer is sent. Admin routes have their own rate
limit per client IP, checked before authentication; merchant rate limits never apply to them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import asdict
from typing import Annotated, Any, Final, cast

import structlog
from litestar import Controller, Request, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from paycore.admin import model, schemas
from paycore.admin.model import AdminActor, BreakerAction
from paycore.admin.repository import AuditEntry
from paycore.admin.service import AdminService
from paycore.api_support import Problem
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.platform.context import current_request_id
from paycore.platform.flags import FlagState
from paycore.platform.ratelimit import RateLimits
from paycore.platform.resilience.breaker import BreakerSnapshot

log = structlog.get_logger("paycore.admin.api")

ACTOR_KEY: Final = "paycore_admin_actor"
DETAILS_KEY: Final = "paycore_admin_details"
ACTION: Final = "admin_action"
OBJECT_TYPE: Final = "admin_object"


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem, description=description, media_type="application/problem+json"
    )


def _responses(*extra: tuple[int, str]) -> dict[int, ResponseSpec]:
    out = {
        400: _spec("Malformed request or parameter"),
        401: _spec("Missing, unknown or revoked admin token (`admin_token_invalid`)"),
        403: _spec("A merchant API key or service token (`admin_credentials_required`)"),
        422: _spec("The body is not valid"),
        429: _spec("Admin rate limit per client IP (see Retry-After)"),
        503: _spec("Not ready or shutting down"),
    }
    out.update({status: _spec(text) for status, text in extra})
    return out


def _service(connection: ASGIConnection[Any, Any, Any, Any]) -> AdminService:
    container = connection.app.state.get("container")
    if container is None:
        raise PaycoreError(errors.NOT_READY)
    service: AdminService = container.admin
    return service


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Rate limit (per IP, before any lookup), then the admin token."""
    limits: RateLimits | None = connection.app.state.get("rate_limits")
    scope = cast(dict[str, Any], connection.scope)
    if limits is not None:
        await limits.check_admin(scope)
    scope[ACTOR_KEY] = await _service(connection).tokens.authenticate(connection.headers.get("authorization"))


def provide_admin(request: Request[Any, Any, Any]) -> AdminActor:
    actor = cast(dict[str, Any], request.scope).get(ACTOR_KEY)
    if not isinstance(actor, AdminActor):  # the guard always runs first
        raise PaycoreError(model.ADMIN_TOKEN_INVALID)
    return actor


def _note(request: Request[Any, Any, Any], **details: Any) -> None:
    """Extra fields for this call's audit row."""
    cast(dict[str, Any], request.scope).setdefault(DETAILS_KEY, {}).update(details)


class AdminAudit:
    """Route middleware: one `audit_log` row per admin call, written before the answer goes out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = cast(dict[str, Any], scope)
        if raw["type"] != "http":
            await self.app(scope, receive, send)
            return
        audited = False

        async def audited_send(message: Message) -> None:
            nonlocal audited
            if message["type"] == "http.response.start" and not audited:
                audited = True
                await self._audit(raw, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except BaseException:
            if not audited:
                audited = True
                with contextlib.suppress(BaseException):
                    await self._audit(raw, 500)
            raise

    async def _audit(self, scope: dict[str, Any], status: int) -> None:
        app = scope.get("litestar_app")
        container = app.state.get("container") if app is not None else None
        if container is None:
            return
        actor = scope.get(ACTOR_KEY)
        handler = scope.get("route_handler")
        opt: dict[str, Any] = getattr(handler, "opt", {}) or {}
        params: dict[str, Any] = scope.get("path_params") or {}
        object_id = next((str(v) for v in params.values()), None)
        merchant_id = params.get("merchant_id")
        limits: RateLimits | None = app.state.get("rate_limits") if app is not None else None
        client = scope.get("client")
        ip = limits.client_ip(scope) if limits is not None else (client[0] if client else None)
        details: dict[str, Any] = {"method": scope.get("method"), "path": scope.get("path"), "status": status}
        if isinstance(actor, AdminActor):
            details["admin_token_id"] = str(actor.token_id)
        details.update(scope.get(DETAILS_KEY) or {})
        entry = AuditEntry(
            actor=actor.actor if isinstance(actor, AdminActor) else "anonymous",
            action=str(opt.get(ACTION, "admin.unknown")),
            object_type=opt.get(OBJECT_TYPE),
            object_id=object_id,
            merchant_id=merchant_id if isinstance(merchant_id, uuid.UUID) else None,
            request_id=current_request_id(),
            ip=ip,
            outcome=model.audit_outcome(status),
            details=details,
        )
        try:
            await container.admin.audit(entry)
        except Exception as exc:
            log.error("admin_audit_failed", action=entry.action, error=type(exc).__name__)


def _flag_out(state: FlagState) -> schemas.FlagOut:
    return schemas.FlagOut(
        name=state.name, configured=state.configured, override=state.override, effective=state.effective
    )


def _breaker_out(snap: BreakerSnapshot) -> schemas.BreakerOut:
    return schemas.BreakerOut(
        name=snap.name,
        state=snap.state,
        enabled=snap.enabled,
        forced=snap.forced,
        consecutive_failures=snap.consecutive_failures,
        window_calls=snap.window_calls,
        window_failures=snap.window_failures,
        open_seconds_left=snap.open_seconds_left,
        probes_admitted=snap.probes_admitted,
    )


async def _command(
    admin_service: AdminService, name: str, action: BreakerAction
) -> schemas.BreakerCommandOut:
    snap = await admin_service.command_breaker(name, action)
    return schemas.BreakerCommandOut(
        breaker=_breaker_out(snap), action=action, propagated=True, pid=os.getpid()
    )


def provide_admin_service(request: Request[Any, Any, Any]) -> AdminService:
    return _service(request)


def _opt(action: str, object_type: str | None) -> dict[str, Any]:
    return {ACTION: action, OBJECT_TYPE: object_type}


class AdminController(Controller):
    path = "/admin/v1"
    tags = ["admin"]
    security = [{"adminToken": []}]
    guards = [admin_guard]
    middleware = [AdminAudit]
    dependencies = {
        "admin": Provide(provide_admin, sync_to_thread=False),
        "admin_service": Provide(provide_admin_service, sync_to_thread=False),
    }

    # -- kill switches -----------------------------------------------------------------------------
    @get(
        "/flags",
        summary="Kill switches: configured value, override and effective value (this process)",
        responses=_responses(),
        opt=_opt("admin.flags.list", "feature_flag"),
    )
    async def list_flags(self, admin: AdminActor, admin_service: AdminService) -> schemas.FlagList:
        return schemas.FlagList(data=[_flag_out(s) for s in admin_service.flag_states()], pid=os.getpid())

    @put(
        "/flags/{flag:str}",
        summary="Override a kill switch in every process (stored; survives restarts)",
        responses=_responses((404, "No such flag (`feature_flag_not_found`)")),
        opt=_opt("admin.flag.set", "feature_flag"),
    )
    async def set_flag(
        self,
        request: Request[Any, Any, Any],
        flag: str,
        data: schemas.FlagUpdate,
        admin: AdminActor,
        admin_service: AdminService,
    ) -> schemas.FlagOut:
        _note(request, enabled=data.enabled)
        return _flag_out(await admin_service.set_flag(flag, data.enabled, admin))

    @delete(
        "/flags/{flag:str}",
        status_code=200,
        summary="Remove a kill-switch override: back to the configured value in every process",
        responses=_responses((404, "No such flag (`feature_flag_not_found`)")),
        opt=_opt("admin.flag.clear", "feature_flag"),
    )
    async def clear_flag(self, flag: str, admin: AdminActor, admin_service: AdminService) -> schemas.FlagOut:
        return _flag_out(await admin_service.clear_flag(flag, admin))

    # -- merchant cache ----------------------------------------------------------------------------
    @delete(
        "/merchants/{merchant_id:uuid}/cache",
        status_code=200,
        summary="Evict a merchant and its credentials from the caches of every process",
        responses=_responses((404, "Not a merchant id")),
        opt=_opt("admin.merchant_cache.evict", "merchant"),
    )
    async def evict_merchant(
        self, merchant_id: uuid.UUID, admin: AdminActor, admin_service: AdminService
    ) -> schemas.CacheEvictionOut:
        dropped = await admin_service.evict_merchant(merchant_id)
        return schemas.CacheEvictionOut(
            merchant_id=merchant_id, principals_evicted=dropped, propagated=True, pid=os.getpid()
        )

    @get(
        "/merchants/{merchant_id:uuid}",
        summary="A merchant as this process's cache holds it; `X-Bypass-Cache: true` reads the database",
        description=(
            "`source`: `cache` (a fresh cache entry), `loaded` (a miss, now cached) or `database` "
            "(`X-Bypass-Cache: true`: read as stored, never a stale copy, and the cache refreshed). "
            "The header is honoured on admin routes only; merchant credentials never bypass a cache."
        ),
        responses=_responses((404, "No such merchant (`merchant_not_found`)")),
        opt=_opt("admin.merchant.read", "merchant"),
    )
    async def read_merchant(
        self,
        request: Request[Any, Any, Any],
        merchant_id: uuid.UUID,
        admin: AdminActor,
        admin_service: AdminService,
    ) -> schemas.MerchantOut:
        bypass = model.bypass_requested(request.headers.get(model.BYPASS_CACHE_HEADER))
        if bypass:
            _note(request, bypass_cache=True)
        merchant, source = await admin_service.read_merchant(merchant_id, bypass_cache=bypass)
        return schemas.MerchantOut(
            id=merchant.id,
            slug=merchant.slug,
            name=merchant.name,
            environment=merchant.environment,
            status=merchant.status,
            multi_capture=merchant.multi_capture,
            timezone=merchant.timezone,
            source=source,
            pid=os.getpid(),
        )

    # -- circuit breakers --------------------------------------------------------------------------
    @get(
        "/breakers",
        summary="Circuit breakers of the process that answers: state and counts",
        responses=_responses(),
        opt=_opt("admin.breakers.list", "circuit_breaker"),
    )
    async def list_breakers(self, admin: AdminActor, admin_service: AdminService) -> schemas.BreakerList:
        return schemas.BreakerList(
            data=[_breaker_out(s) for s in admin_service.breaker_snapshots()], pid=os.getpid()
        )

    @post(
        "/breakers/{name:str}/reset",
        status_code=200,
        summary="Reset a breaker in every process: closed, automatic, counters cleared",
        responses=_responses((404, "No such breaker (`circuit_breaker_not_found`)")),
        opt=_opt("admin.breaker.reset", "circuit_breaker"),
    )
    async def reset_breaker(
        self, name: str, admin: AdminActor, admin_service: AdminService
    ) -> schemas.BreakerCommandOut:
        return await _command(admin_service, name, "reset")

    @post(
        "/breakers/{name:str}/open",
        status_code=200,
        summary="Force a breaker open in every process (every call rejected) until reset",
        responses=_responses((404, "No such breaker (`circuit_breaker_not_found`)")),
        opt=_opt("admin.breaker.force_open", "circuit_breaker"),
    )
    async def open_breaker(
        self, name: str, admin: AdminActor, admin_service: AdminService
    ) -> schemas.BreakerCommandOut:
        return await _command(admin_service, name, "open")

    @post(
        "/breakers/{name:str}/close",
        status_code=200,
        summary="Force a breaker closed in every process (failures never trip it) until reset",
        responses=_responses((404, "No such breaker (`circuit_breaker_not_found`)")),
        opt=_opt("admin.breaker.force_close", "circuit_breaker"),
    )
    async def close_breaker(
        self, name: str, admin: AdminActor, admin_service: AdminService
    ) -> schemas.BreakerCommandOut:
        return await _command(admin_service, name, "close")

    # -- heap snapshots (RES-M7) -------------------------------------------------------------------
    @post(
        "/diagnostics/tracemalloc/snapshot",
        status_code=200,
        summary="Top allocation sites of the answering process, and their growth since its previous snapshot",
        responses=_responses((409, "Allocation tracing is off (`tracemalloc_disabled`)")),
        opt=_opt("admin.tracemalloc.snapshot", "process"),
    )
    async def tracemalloc_snapshot(
        self,
        request: Request[Any, Any, Any],
        admin: AdminActor,
        admin_service: AdminService,
        limit: Annotated[
            int | None, Parameter(description="allocation sites returned: 1-50, default 10")
        ] = None,
    ) -> schemas.HeapSnapshotOut:
        bounded = model.snapshot_limit(limit)
        if bounded is None:
            raise PaycoreError(errors.INVALID_PARAMETER, "limit must be 1-50", param="limit")
        snap = await admin_service.heap_snapshot(bounded)
        _note(request, pid=snap.pid, traced_current_bytes=snap.traced_current_bytes)
        return schemas.HeapSnapshotOut(
            pid=snap.pid,
            taken_at=snap.taken_at,
            previous_taken_at=snap.previous_taken_at,
            traced_current_bytes=snap.traced_current_bytes,
            traced_peak_bytes=snap.traced_peak_bytes,
            top=[schemas.AllocationSiteOut(**asdict(site)) for site in snap.top],
            growth_since_previous=None
            if snap.growth is None
            else [schemas.AllocationGrowthOut(**asdict(g)) for g in snap.growth],
        )
