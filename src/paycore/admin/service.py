"""Admin use cases: admin tokens, kill switches, merchant-cache eviction, circuit breakers, heap
snapshots, and the audit row of every admin call (ADR 0010).

Propagation: a flag change is stored in `feature_flag_overrides` and announced with
`NOTIFY paycore_admin, 'flags'` in the same transaction; every process (API workers and `paycore
worker`) reloads all overrides when it hears it, and again whenever its listener (re)connects.
Breaker commands and merchant evictions are not stored: they are announced once (`breaker|…`,
`mc|merchant|…`) and applied by every process listening at that moment.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from paycore.admin import model
from paycore.admin.model import AdminActor, BreakerAction
from paycore.admin.repository import AdminRepository, AdminTokenRow, AuditEntry
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.merchants.model import Merchant
from paycore.merchants.service import MerchantDirectory
from paycore.platform.db import Database
from paycore.platform.flags import FeatureFlags, FlagState
from paycore.platform.resilience.breaker import BreakerRegistry, BreakerSnapshot
from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.admin")


class NewAdminToken:
    __slots__ = ("id", "name", "secret")

    def __init__(self, token_id: uuid.UUID, name: str, secret: str) -> None:
        self.id = token_id
        self.name = name
        self.secret = secret

    def __repr__(self) -> str:
        return f"NewAdminToken(id={self.id}, name={self.name!r}, secret=***)"


@dataclass(frozen=True, slots=True)
class AllocationSite:
    file: str
    line: int
    size_bytes: int
    count: int


@dataclass(frozen=True, slots=True)
class AllocationGrowth:
    file: str
    line: int
    size_bytes: int
    size_diff_bytes: int
    count_diff: int


@dataclass(frozen=True, slots=True)
class HeapSnapshot:
    pid: int
    taken_at: datetime
    previous_taken_at: datetime | None
    traced_current_bytes: int
    traced_peak_bytes: int
    top: list[AllocationSite]
    growth: list[AllocationGrowth] | None


# Allocations of the tracing machinery itself are not the application's.
_SNAPSHOT_FILTERS = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


class AdminTokens:
    """Admin credentials: `ak_…` tokens stored as keyed hashes, shown once, revocable."""

    def __init__(self, db: Database, repository: AdminRepository, *, token_secret: str) -> None:
        self.db = db
        self.repo = repository
        self._token_secret = token_secret

    async def authenticate(self, authorization: str | None) -> AdminActor:
        """`Authorization: Bearer ak_…` → the admin token, or 401 (none, malformed, unknown, revoked)
        / 403 (a merchant credential: merchants never reach the admin API)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise PaycoreError(
                model.ADMIN_TOKEN_INVALID,
                "Send an admin token as `Authorization: Bearer ak_…`",
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
        bearer = authorization[7:].strip()
        kind = model.credential_kind(bearer)
        if kind == "merchant":
            raise PaycoreError(model.ADMIN_ONLY, "Merchant credentials cannot call the admin API")
        if kind == "invalid":
            raise PaycoreError(
                model.ADMIN_TOKEN_INVALID,
                "The admin token is malformed",
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
        found = await self.repo.resolve_token(model.hash_admin_token(bearer, self._token_secret))
        if found is None:
            raise PaycoreError(
                model.ADMIN_TOKEN_INVALID,
                "The admin token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="admin"'},
            )
        token_id, name = found
        try:
            await self.repo.touch_token(token_id)
        except Exception as exc:  # last use is informative; never fail the call for it
            log.warning("admin_token_touch_failed", error=type(exc).__name__)
        return AdminActor(token_id=token_id, name=name)

    async def create_token(self, name: str, *, actor: str = "admin-cli") -> NewAdminToken:
        if not model.valid_token_name(name):
            raise ValueError(
                "name must be 1-100 letters, digits, spaces or . _ @ -, starting with a letter or digit"
            )
        secret = model.generate_admin_token()
        token_id = uuid7()
        async with self.db.transaction() as con:
            await self.repo.insert_token(
                con,
                token_id,
                name,
                model.hash_admin_token(secret, self._token_secret),
                model.display_prefix(secret),
            )
            await self.repo.audit(
                con,
                AuditEntry(
                    actor,
                    "admin_token.create",
                    "admin_token",
                    str(token_id),
                    None,
                    None,
                    None,
                    "success",
                    {"name": name},
                ),
            )
        return NewAdminToken(token_id, name, secret)

    async def revoke_token(self, token_id: uuid.UUID, *, actor: str = "admin-cli") -> bool:
        async with self.db.transaction() as con:
            name = await self.repo.revoke_token(con, token_id)
            await self.repo.audit(
                con,
                AuditEntry(
                    actor,
                    "admin_token.revoke",
                    "admin_token",
                    str(token_id),
                    None,
                    None,
                    None,
                    "success" if name is not None else "failure",
                    {"name": name} if name is not None else {"reason": "not_found_or_revoked"},
                ),
            )
        return name is not None

    async def list_tokens(self) -> list[AdminTokenRow]:
        return await self.repo.list_tokens()


class AdminService:
    def __init__(
        self,
        *,
        db: Database,
        repository: AdminRepository,
        flags: FeatureFlags,
        breakers: BreakerRegistry,
        merchants: MerchantDirectory,
        tokens: AdminTokens,
        tasks: TaskSupervisor | None = None,
        tracemalloc_enabled: bool = False,
    ) -> None:
        self.db = db
        self.repo = repository
        self.flags = flags
        self.breakers = breakers
        self.merchants = merchants
        self.tokens = tokens
        self.tasks = tasks
        self.tracemalloc_enabled = tracemalloc_enabled
        self.origin = uuid.uuid4().hex[:12]  # this process, in breaker commands it sends
        self._reload_lock = asyncio.Lock()
        self._previous: tuple[tracemalloc.Snapshot, datetime] | None = None
        self._snapshot_lock = asyncio.Lock()

    # -- kill switches -----------------------------------------------------------------------------
    def flag_states(self) -> list[FlagState]:
        return self.flags.states()

    def _flag(self, name: str) -> str:
        if name not in self.flags.configured:
            raise PaycoreError(model.UNKNOWN_FLAG, f"No feature flag {name!r}", param="flag")
        return name

    async def set_flag(self, name: str, enabled: bool, admin: AdminActor) -> FlagState:
        flag = self._flag(name)
        async with self.db.transaction() as con:
            await self.repo.set_override(con, flag, enabled, admin.actor)
            await self.repo.notify(con, model.CONTROL_CHANNEL, model.FLAGS_CHANGED)
        await self.reload_flags()
        return self._state(flag)

    async def clear_flag(self, name: str, admin: AdminActor) -> FlagState:
        flag = self._flag(name)
        async with self.db.transaction() as con:
            await self.repo.clear_override(con, flag)
            await self.repo.notify(con, model.CONTROL_CHANNEL, model.FLAGS_CHANGED)
        await self.reload_flags()
        return self._state(flag)

    def _state(self, flag: str) -> FlagState:
        return next(s for s in self.flags.states() if s.name == flag)

    async def reload_flags(self) -> dict[str, bool]:
        """Read every override and apply them to this process (serialised: the last read wins)."""
        async with self._reload_lock:
            changed = self.flags.apply(await self.repo.overrides())
        if changed:
            log.warning("feature_flags_changed", changed=changed, pid=os.getpid())
        return changed

    async def load_flags_at_start(self) -> None:
        """Before serving: the stored overrides, or the configuration if they cannot be read."""
        try:
            await self.reload_flags()
        except Exception as exc:
            log.error("feature_flag_overrides_unreadable", error=type(exc).__name__)
            self.flags.export()

    # -- merchant cache ----------------------------------------------------------------------------
    async def evict_merchant(self, merchant_id: uuid.UUID) -> int:
        """Here at once, in every other process through the cache channel."""
        dropped = self.merchants.evict(merchant_id)
        await self.repo.notify(None, model.CACHE_CHANNEL, model.merchant_eviction(merchant_id))
        return dropped

    async def read_merchant(self, merchant_id: uuid.UUID, *, bypass_cache: bool) -> tuple[Merchant, str]:
        """The merchant as this process's payment paths see it (the merchant cache) and where it
        came from: `cache` (a fresh entry), `loaded` (a miss, now cached). With `bypass_cache`
        (the admin's `X-Bypass-Cache: true`): `database`, read as stored — never a stale copy — and
        the cache refreshed with it."""
        if bypass_cache:
            merchant, source = await self.merchants.get(merchant_id, bypass_cache=True), "database"
        else:
            source = "cache" if self.merchants.merchants.has_fresh(merchant_id) else "loaded"
            merchant = await self.merchants.get(merchant_id)
        if merchant is None:
            raise PaycoreError(model.UNKNOWN_MERCHANT, param="merchant_id")
        return merchant, source

    # -- circuit breakers --------------------------------------------------------------------------
    def breaker_snapshots(self) -> list[BreakerSnapshot]:
        return self.breakers.snapshot()

    async def command_breaker(self, name: str, action: BreakerAction) -> BreakerSnapshot:
        if name not in self.breakers:
            raise PaycoreError(model.UNKNOWN_BREAKER, f"No circuit breaker {name!r}", param="name")
        self._apply_breaker(name, action)
        await self.repo.notify(None, model.CONTROL_CHANNEL, model.breaker_command(name, action, self.origin))
        return self.breakers[name].snapshot()

    def _apply_breaker(self, name: str, action: BreakerAction) -> None:
        breaker = self.breakers[name]
        if action == "open":
            breaker.force_open()
        elif action == "close":
            breaker.force_closed()
        else:
            breaker.reset()

    # -- notifications from the other processes -------------------------------------------------
    def on_control(self, payload: str) -> None:
        if payload == model.FLAGS_CHANGED:
            if self.tasks is not None:
                self.tasks.spawn("feature_flags_reload", self._reload_logged())
            return
        command = model.parse_breaker_command(payload)
        if command is not None:
            name, action, origin = command
            if origin != self.origin and name in self.breakers:
                self._apply_breaker(name, action)

    async def _reload_logged(self) -> None:
        try:
            await self.reload_flags()
        except Exception as exc:
            log.error("feature_flags_reload_failed", error=type(exc).__name__)

    def on_cache_invalidation(self, payload: str) -> None:
        for merchant_id in model.parse_merchant_evictions(payload):
            self.merchants.evict(merchant_id)

    # -- heap snapshots (RES-M7) -------------------------------------------------------------------
    async def heap_snapshot(self, limit: int, now: datetime | None = None) -> HeapSnapshot:
        """The top `limit` allocation sites by line, and their growth since this process's previous
        snapshot. Only when allocation tracing runs (`PAYCORE_TRACEMALLOC_ENABLED`)."""
        if not self.tracemalloc_enabled or not tracemalloc.is_tracing():
            raise PaycoreError(model.TRACEMALLOC_DISABLED)
        async with self._snapshot_lock:  # one at a time: a snapshot is big
            taken_at = now or datetime.now(UTC)
            gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces(_SNAPSHOT_FILTERS)
            current, peak = tracemalloc.get_traced_memory()
            top = [
                AllocationSite(
                    file=stat.traceback[0].filename,
                    line=stat.traceback[0].lineno,
                    size_bytes=stat.size,
                    count=stat.count,
                )
                for stat in snapshot.statistics("lineno")[:limit]
            ]
            growth: list[AllocationGrowth] | None = None
            previous_at: datetime | None = None
            if self._previous is not None:
                previous, previous_at = self._previous
                growth = [
                    AllocationGrowth(
                        file=diff.traceback[0].filename,
                        line=diff.traceback[0].lineno,
                        size_bytes=diff.size,
                        size_diff_bytes=diff.size_diff,
                        count_diff=diff.count_diff,
                    )
                    for diff in snapshot.compare_to(previous, "lineno")[:limit]
                ]
            self._previous = (snapshot, taken_at)
        return HeapSnapshot(
            pid=os.getpid(),
            taken_at=taken_at,
            previous_taken_at=previous_at,
            traced_current_bytes=current,
            traced_peak_bytes=peak,
            top=top,
            growth=growth,
        )

    # -- audit ---------------------------------------------------------------------------------------
    async def audit(self, entry: AuditEntry) -> None:
        await self.repo.audit(None, entry)


def start_tracing(enabled: bool, frames: int) -> bool:
    """Start allocation tracing in this process when configured (the API lifespan)."""
    if enabled and not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    return tracemalloc.is_tracing()


def stop_tracing() -> None:
    if tracemalloc.is_tracing():
        tracemalloc.stop()
