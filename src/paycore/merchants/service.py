"""The merchant directory: the only code that reads merchants, keys and secrets (CACHE-1).

Authentication resolves an API key to a `Principal` from an in-process TTL cache (single-flight),
so the hot path does not touch the database. Revocation and merchant changes invalidate it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from paycore.gateway.port import MerchantKey
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.merchants import model
from paycore.merchants.model import KeyMode, Merchant, Principal
from paycore.merchants.repository import MerchantRepository
from paycore.platform.cache import AsyncTTLCache
from paycore.platform.crypto import Keyring, Sealed, SecretStr
from paycore.platform.db import Database
from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.merchants")

TOUCH_INTERVAL = 60.0  # seconds between `last_used_at` writes per API key


class NewApiKey:
    __slots__ = ("id", "secret")

    def __init__(self, key_id: uuid.UUID, secret: str) -> None:
        self.id = key_id
        self.secret = secret


class MerchantDirectory:
    def __init__(
        self,
        db: Database,
        repository: MerchantRepository,
        *,
        api_key_secret: str,
        keyring: Keyring,
        principal_cache: AsyncTTLCache[bytes, Principal | None],
        merchant_cache: AsyncTTLCache[uuid.UUID, Merchant | None],
        tasks: TaskSupervisor | None = None,
        resealers: Sequence[Callable[[Keyring], Awaitable[int]]] = (),
    ) -> None:
        self.db = db
        self.repo = repository
        self._api_key_secret = api_key_secret
        self.keyring = keyring
        self.principals = principal_cache
        self.merchants = merchant_cache
        self.tasks = tasks
        self._touched: dict[uuid.UUID, float] = {}
        # other capabilities' secrets at rest (webhook signing secrets), re-encrypted by the same rotation
        self.resealers = tuple(resealers)

    # -- authentication (hot path) --------------------------------------------------------------
    async def authenticate(self, api_key: str) -> Principal:
        mode = model.key_mode(api_key)
        if mode is None:
            raise PaycoreError(errors.UNAUTHENTICATED, "The API key is malformed")
        key_hash = model.hash_api_key(api_key, self._api_key_secret)
        principal = await self.principals.get_or_load(key_hash, lambda: self._load_principal(key_hash))
        if principal is None:
            raise PaycoreError(errors.UNAUTHENTICATED, "The API key is not valid")
        if not principal.merchant.active:
            raise PaycoreError(errors.FORBIDDEN, "The merchant is not active")
        if self.tasks is not None and principal.api_key_id is not None:
            self._touch(principal.api_key_id)
        return principal

    def _touch(self, key_id: uuid.UUID) -> None:
        """Keep `last_used_at` (minute precision) without a write per request."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[key_id] = now
        assert self.tasks is not None
        self.tasks.spawn_once(("api_key_touch", key_id), "api_key_touch", self.repo.touch_api_key(key_id))

    async def _load_principal(self, key_hash: bytes) -> Principal | None:
        found = await self.repo.resolve_api_key(key_hash)
        if found is None:
            return None
        merchant, mode, key_id = found
        return Principal(merchant=merchant, mode="live" if mode == "live" else "test", api_key_id=key_id)

    async def get(self, merchant_id: uuid.UUID) -> Merchant | None:
        return await self.merchants.get_or_load(merchant_id, lambda: self.repo.get(merchant_id))

    async def get_by_slug(self, slug: str) -> Merchant | None:
        return await self.repo.get_by_slug(slug)

    async def list_all(self) -> list[Merchant]:
        return await self.repo.list_all()

    async def mac_secret(self, merchant_id: uuid.UUID) -> SecretStr | None:
        sealed = await self.repo.get_sealed_mac(merchant_id)
        if sealed is None:
            return None
        return self.keyring.open(Sealed(sealed[0], sealed[1]))

    # -- administration ---------------------------------------------------------------------------
    async def create_merchant(
        self,
        *,
        slug: str,
        name: str,
        environment: str,
        epx: MerchantKey,
        mac_secret: str | None = None,
        multi_capture: bool | None = None,
        timezone: str = "UTC",
        return_urls: tuple[str, ...] = (),
        actor: str = "admin-cli",
    ) -> Merchant:
        if not model.SLUG_PATTERN.match(slug):
            raise ValueError("slug must be 2-63 lower-case letters, digits or dashes")
        if environment not in {"sandbox", "production"}:
            raise ValueError("environment must be sandbox or production")
        model.validate_epx_key(epx)
        sealed = self.keyring.seal(mac_secret) if mac_secret else None
        if multi_capture is None:
            # epx-protocol.md §4.3: several captures per auth only where verified (the sandbox).
            multi_capture = environment == "sandbox"
        merchant_id = uuid7()
        async with self.db.transaction() as con:
            merchant = await self.repo.insert(
                con,
                (
                    merchant_id,
                    slug,
                    name,
                    environment,
                    epx.cust_nbr,
                    epx.merch_nbr,
                    epx.dba_nbr,
                    epx.terminal_nbr,
                    sealed.ciphertext if sealed else None,
                    sealed.key_version if sealed else None,
                    multi_capture,
                    timezone,
                    list(return_urls),
                ),
            )
            await self.repo.audit(
                con,
                actor,
                "merchant.create",
                "merchant",
                str(merchant_id),
                merchant_id,
                None,
                None,
                "success",
                {"slug": slug, "environment": environment},
            )
        return merchant

    async def create_api_key(
        self, merchant_id: uuid.UUID, *, mode: KeyMode | None = None, name: str = "", actor: str = "admin-cli"
    ) -> NewApiKey:
        merchant = await self.repo.get(merchant_id)
        if merchant is None:
            raise PaycoreError(errors.NOT_FOUND, "No such merchant")
        if mode is None:
            mode = "test" if merchant.environment == "sandbox" else "live"
        if not model.mode_allowed(mode, merchant.environment):
            raise ValueError(f"{mode} keys are not allowed for a {merchant.environment} merchant")
        secret = model.generate_api_key(mode)
        key_id = uuid7()
        async with self.db.transaction() as con:
            await self.repo.insert_api_key(
                con,
                key_id,
                merchant_id,
                model.hash_api_key(secret, self._api_key_secret),
                model.display_prefix(secret),
                mode,
                name,
            )
            await self.repo.audit(
                con,
                actor,
                "api_key.create",
                "api_key",
                str(key_id),
                merchant_id,
                None,
                None,
                "success",
                {"mode": mode, "name": name},
            )
        return NewApiKey(key_id, secret)

    async def revoke_api_key(self, key_id: uuid.UUID, *, actor: str = "admin-cli") -> bool:
        async with self.db.transaction() as con:
            found = await self.repo.revoke_api_key(con, key_id)
            if found is None:
                return False
            key_hash, merchant_id = found
            await self.repo.audit(
                con, actor, "api_key.revoke", "api_key", str(key_id), merchant_id, None, None, "success", None
            )
        self.principals.invalidate(key_hash)
        return True

    async def list_api_keys(self, merchant_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self.repo.list_api_keys(merchant_id)

    async def rotate_encryption_key(self, *, actor: str = "admin-cli") -> int:
        """Re-encrypt every sealed merchant secret under the primary key version."""
        primary = self.keyring.primary_version
        total = 0
        while True:
            batch = await self.repo.sealed_secrets_not_at(primary)
            if not batch:
                break
            progressed = 0
            for merchant_id, ciphertext, version in batch:
                resealed = self.keyring.reseal(Sealed(ciphertext, version))
                if await self.repo.update_sealed_secret(
                    merchant_id, resealed.ciphertext, resealed.key_version, version
                ):
                    progressed += 1
            total += progressed
            if progressed == 0:
                break
        for reseal in self.resealers:
            total += await reseal(self.keyring)
        await self.repo.audit(
            None,
            actor,
            "encryption_key.rotate",
            "keyring",
            primary,
            None,
            None,
            None,
            "success",
            {"resealed": total},
        )
        return total
