"""The merchant directory: the only code that reads merchants, keys and secrets (CACHE-1).

Authentication resolves an API key or a service JWT to a `Principal` from in-process TTL caches
(single-flight), so the hot path does not touch the database. Revocation and merchant changes
invalidate them, in this process after the commit and in the others through `NOTIFY`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import jwt
import structlog

from paycore.gateway.port import MerchantKey
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.merchants import model
from paycore.merchants.model import KeyMode, Merchant, Principal, ServiceClient
from paycore.merchants.repository import MerchantRepository
from paycore.platform.cache import AsyncTTLCache
from paycore.platform.crypto import Keyring, Sealed, SecretStr
from paycore.platform.db import Connection, Database
from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.merchants")

TOUCH_INTERVAL = 60.0  # seconds between `last_used_at` writes per API key
# cross-process invalidation: `mc|<kind>|<a>|<b>` items, `;`-separated, on the channel every
# process LISTENs to (platform/db/listener.py); `pm|…` items belong to the payment methods
CACHE_CHANNEL: Final = "paycore_cache_invalidate"
# merchant-cache warm-up at API start (CACHE-1): the busiest merchants by payments over a window
WARM_WINDOW: Final = 86_400.0  # seconds of payments counted
WARM_COUNT_CAP: Final = 10_000  # payments counted per merchant at most (bounds the query's work)
WARM_TIMEOUT: Final = 30.0  # the whole warm-up, query and loads
REVOKED_JTI_LIMIT: Final = 50_000  # more live revocations than this: checked per token in the database
_REQUIRED_CLAIMS: Final = ["exp", "iss", "jti", "merchant_id"]


@dataclass(frozen=True, slots=True)
class JwtPolicy:
    """How service JWTs are checked (PAYCORE_JWT_*)."""

    leeway: float = 30.0
    max_lifetime: float = 3600.0
    audience: str | None = None


@dataclass(frozen=True, slots=True)
class RevokedJtis:
    """The live (unexpired) revoked token ids; `complete` is False when the list was cut at
    `REVOKED_JTI_LIMIT`, and a token not in it must then be looked up."""

    entries: frozenset[tuple[uuid.UUID, str]]
    complete: bool


@dataclass(frozen=True, slots=True)
class ServiceAuthCaches:
    clients: AsyncTTLCache[str, ServiceClient | None]  # by issuer; unknown issuers cached as None
    grants: AsyncTTLCache[tuple[uuid.UUID, uuid.UUID], bool]  # (client id, merchant id) -> active
    revoked: AsyncTTLCache[str, RevokedJtis]  # one entry: the live revocations


def _invalid_token(reason: str, issuer: str | None = None) -> PaycoreError:
    # one message for every signature, issuer, claim and revocation failure: a caller learns
    # nothing about which check refused the token; the operator reads the reason in the log
    log.info("service_token_refused", reason=reason, issuer=issuer)
    return PaycoreError(
        errors.UNAUTHENTICATED, "The token is not valid", headers={"WWW-Authenticate": "Bearer"}
    )


def _expired_token(issuer: str) -> PaycoreError:
    log.info("service_token_refused", reason="expired", issuer=issuer)
    return PaycoreError(
        errors.UNAUTHENTICATED, "The token has expired", headers={"WWW-Authenticate": "Bearer"}
    )


def _not_granted(reason: str, issuer: str) -> PaycoreError:
    log.info("service_token_refused", reason=reason, issuer=issuer)
    return PaycoreError(errors.FORBIDDEN, "These credentials may not act for this merchant")


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
        service_auth: ServiceAuthCaches,
        jwt_policy: JwtPolicy,
        tasks: TaskSupervisor | None = None,
        resealers: Sequence[Callable[[Keyring], Awaitable[int]]] = (),
        clock: Callable[[], float] = time.time,
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
        self.service_clients = service_auth.clients
        self.service_grants = service_auth.grants
        self.revoked_jtis = service_auth.revoked
        self.jwt_policy = jwt_policy
        self._clock = clock

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

    # -- service JWTs (hot path) --------------------------------------------------------------------
    async def authenticate_jwt(self, token: str) -> Principal:
        """An RS256 JWT of a registered client service → the granted merchant's principal.

        `iss` is read unverified only to pick the client's public key (cached); then PyJWT verifies
        the signature with `algorithms=["RS256"]` alone (never `none`, never an HMAC keyed with the
        public key) and the claims; then paycore's rules (model.check_claims), the revoked `jti`
        list (in memory), the grant (cached) and the merchant (cached). 401 for anything about the
        token itself, 403 when the client may not act for that merchant.
        """
        if len(token) > model.TOKEN_MAX_LENGTH or not model.looks_like_jwt(token):
            raise _invalid_token("malformed")
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid_token("malformed") from None
        header, payload = unverified["header"], unverified["payload"]
        issuer = payload.get("iss") if isinstance(payload, dict) else None
        if not isinstance(issuer, str) or not model.ISSUER_PATTERN.match(issuer):
            raise _invalid_token("issuer_malformed")
        if header.get("alg") != "RS256":
            raise _invalid_token("algorithm_not_rs256", issuer)
        client = await self.service_clients.get_or_load(
            issuer, lambda: self.repo.get_service_client_by_issuer(issuer)
        )
        if client is None:
            raise _invalid_token("issuer_unknown", issuer)
        if not client.active:
            raise _invalid_token("client_revoked", issuer)
        policy = self.jwt_policy
        try:
            claims = jwt.decode(
                token,
                client.public_key,
                algorithms=["RS256"],
                options={"require": _REQUIRED_CLAIMS, "verify_aud": policy.audience is not None},
                audience=policy.audience,
                issuer=client.issuer,
                leeway=policy.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise _expired_token(issuer) from None
        except jwt.PyJWTError as exc:
            raise _invalid_token(type(exc).__name__, issuer) from None  # signature, claims, audience
        try:
            checked = model.check_claims(
                claims, now=self._clock(), max_lifetime=policy.max_lifetime, leeway=policy.leeway
            )
        except model.InvalidClaims as exc:
            if str(exc) == "expired":
                raise _expired_token(issuer) from None
            raise _invalid_token(str(exc), issuer) from None
        if await self._jti_revoked(client.id, checked.jti):
            raise _invalid_token("jti_revoked", issuer)
        key = (client.id, checked.merchant_id)
        granted = await self.service_grants.get_or_load(
            key, lambda: self.repo.has_active_grant(client.id, checked.merchant_id)
        )
        if not granted:
            raise _not_granted("no_active_grant", issuer)
        merchant = await self.get(checked.merchant_id)
        if merchant is None or not merchant.active:
            raise _not_granted("merchant_not_active", issuer)
        return Principal(
            merchant=merchant,
            mode=model.mode_for_environment(merchant.environment),
            service_client_id=client.id,
        )

    async def _jti_revoked(self, client_id: uuid.UUID, jti: str) -> bool:
        if not self.revoked_jtis.enabled:  # kill switch: no list in memory, ask the database
            return await self.repo.is_jti_revoked(client_id, jti)
        live = await self.revoked_jtis.get_or_load("live", self._load_revoked_jtis)
        if (client_id, jti) in live.entries:
            return True
        if live.complete:
            return False
        return await self.repo.is_jti_revoked(client_id, jti)

    async def _load_revoked_jtis(self) -> RevokedJtis:
        rows = await self.repo.live_revoked_jtis(self.jwt_policy.leeway, REVOKED_JTI_LIMIT + 1)
        return RevokedJtis(frozenset(rows[:REVOKED_JTI_LIMIT]), complete=len(rows) <= REVOKED_JTI_LIMIT)

    # -- cross-process invalidation ------------------------------------------------------------------
    async def _publish(self, con: Connection | None, *items: str) -> None:
        """Tell the other processes (NOTIFY; inside `con`'s transaction it is sent at commit)."""
        await self.repo.notify(con, CACHE_CHANNEL, ";".join(items))

    def on_cache_invalidation(self, payload: str) -> None:
        """A NOTIFY payload from another process (subscribed to `CACHE_CHANNEL` by the process's
        `NotificationListener`): drop the credentials it names. Items of other kinds or prefixes
        (`mc|merchant|…` is the admin API's eviction, `pm|…` the payment methods') are not ours."""
        for item in payload.split(";"):
            parts = item.split("|")
            if len(parts) != 4 or parts[0] != "mc":
                continue
            kind, first, second = parts[1], parts[2], parts[3]
            try:
                if kind == "client":
                    self.service_clients.invalidate(first)
                elif kind == "grant":
                    self.service_grants.invalidate((uuid.UUID(first), uuid.UUID(second)))
                elif kind == "jti":
                    self.revoked_jtis.invalidate("live")
                elif kind == "api_key":
                    self.principals.invalidate(bytes.fromhex(first))
            except ValueError:
                log.warning("credential_invalidation_malformed", kind=kind)

    async def on_listener_connect(self) -> None:
        """The listener (re)connected: invalidations may have been missed while it was down, so
        every cached credential is dropped (they reload on next use)."""
        self.principals.clear()
        self.service_clients.clear()
        self.service_grants.clear()
        self.revoked_jtis.clear()

    async def get(self, merchant_id: uuid.UUID, *, bypass_cache: bool = False) -> Merchant | None:
        """The merchant, from the cache (stale-on-error, RES-9). `bypass_cache`: read the database
        and refresh the cache — only for an administrator's `X-Bypass-Cache: true`."""
        if bypass_cache:
            return await self.merchants.refresh(merchant_id, lambda: self.repo.get(merchant_id))
        return await self.merchants.get_or_load(merchant_id, lambda: self.repo.get(merchant_id))

    async def warm(
        self,
        top_n: int,
        *,
        window: float = WARM_WINDOW,
        cap: int = WARM_COUNT_CAP,
        timeout: float = WARM_TIMEOUT,
    ) -> int:
        """Load the `top_n` busiest merchants (most payments over the last `window` seconds) into
        the merchant cache (CACHE-1). Run as a background task at API start: bounded by `timeout`,
        a failure is only logged (the cache then fills on demand). Returns the merchants loaded."""
        if top_n <= 0 or not self.merchants.enabled:
            return 0
        started = time.monotonic()
        loaded = 0
        try:
            async with asyncio.timeout(timeout):
                ids = await self.repo.busiest(min(top_n, self.merchants.max_size), window=window, cap=cap)
                for merchant_id in ids:
                    if await self.get(merchant_id) is not None:  # single-flight, invalidation-safe
                        loaded += 1
        except Exception as exc:  # TimeoutError included; cancellation (shutdown) propagates
            log.warning(
                "merchant_cache_warmup_failed",
                error=type(exc).__name__,
                loaded=loaded,
                seconds=round(time.monotonic() - started, 3),
            )
            return loaded
        log.info("merchant_cache_warmed", loaded=loaded, seconds=round(time.monotonic() - started, 3))
        return loaded

    async def get_by_slug(self, slug: str) -> Merchant | None:
        return await self.repo.get_by_slug(slug)

    def evict(self, merchant_id: uuid.UUID) -> int:
        """Drop one merchant and every credential resolved for it from this process's caches (the
        admin API's eviction, ADR 0010); the next request loads them from the database. Returns the
        number of cached API-key principals dropped (its service grants are dropped too)."""
        self.merchants.invalidate(merchant_id)
        self.service_grants.invalidate_where(lambda key, _granted: key[1] == merchant_id)
        return self.principals.invalidate_where(lambda _k, p: p is not None and p.merchant.id == merchant_id)

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
            await self._publish(con, f"mc|api_key|{key_hash.hex()}|")
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

    # -- service clients, grants and revoked tokens (administration) -------------------------------
    async def _audit_failure(
        self, actor: str, action: str, object_type: str, object_id: str, reason: str
    ) -> None:
        await self.repo.audit(
            None, actor, action, object_type, object_id, None, None, None, "failure", {"reason": reason}
        )

    async def create_service_client(
        self, *, issuer: str, name: str, public_key_pem: str, actor: str = "admin-cli"
    ) -> ServiceClient:
        model.validate_issuer(issuer)
        key = model.load_rsa_public_key(public_key_pem)
        fingerprint = model.key_fingerprint(key)
        client_id = uuid7()
        async with self.db.transaction() as con:
            client = await self.repo.insert_service_client(
                con, client_id, issuer, name, model.public_key_pem(key), fingerprint
            )
            if client is not None:
                await self.repo.audit(
                    con,
                    actor,
                    "service_client.create",
                    "service_client",
                    str(client_id),
                    None,
                    None,
                    None,
                    "success",
                    {"issuer": issuer, "name": name, "key_fingerprint": fingerprint},
                )
                # an unknown issuer may be cached (negatively) by a process that saw its tokens
                await self._publish(con, f"mc|client|{issuer}|")
        if client is None:
            await self._audit_failure(
                actor, "service_client.create", "service_client", issuer, "issuer taken"
            )
            raise ValueError(f"issuer {issuer!r} is taken (issuers are never reused, even after revocation)")
        self.service_clients.invalidate(issuer)
        return client

    async def find_service_client(self, ref: str) -> ServiceClient | None:
        """By id (a UUID) or by issuer; never cached (administration)."""
        try:
            return await self.repo.get_service_client(uuid.UUID(ref))
        except ValueError:
            return await self.repo.get_service_client_by_issuer(ref)

    async def list_service_clients(self) -> list[dict[str, Any]]:
        return await self.repo.list_service_clients()

    async def revoke_service_client(self, client_id: uuid.UUID, *, actor: str = "admin-cli") -> bool:
        """Every token of the client is refused from now on (its grants stay, as history)."""
        async with self.db.transaction() as con:
            issuer = await self.repo.revoke_service_client(con, client_id)
            if issuer is not None:
                await self.repo.audit(
                    con,
                    actor,
                    "service_client.revoke",
                    "service_client",
                    str(client_id),
                    None,
                    None,
                    None,
                    "success",
                    {"issuer": issuer},
                )
                await self._publish(con, f"mc|client|{issuer}|")
        if issuer is None:
            await self._audit_failure(
                actor, "service_client.revoke", "service_client", str(client_id), "unknown or already revoked"
            )
            return False
        self.service_clients.invalidate(issuer)
        return True

    async def grant(
        self, client_id: uuid.UUID, merchant_id: uuid.UUID, *, actor: str = "admin-cli"
    ) -> uuid.UUID:
        """Allow a client to act for a merchant. Raises ValueError when it may already."""
        client = await self.repo.get_service_client(client_id)
        if client is None or not client.active:
            raise ValueError("no active service client with that id")
        if await self.repo.get(merchant_id) is None:
            raise PaycoreError(errors.NOT_FOUND, "No such merchant")
        async with self.db.transaction() as con:
            grant_id = await self.repo.insert_grant(con, uuid7(), client_id, merchant_id)
            if grant_id is not None:
                await self.repo.audit(
                    con,
                    actor,
                    "service_grant.create",
                    "service_grant",
                    str(grant_id),
                    merchant_id,
                    None,
                    None,
                    "success",
                    {"client_id": str(client_id), "issuer": client.issuer},
                )
                await self._publish(con, f"mc|grant|{client_id}|{merchant_id}")
        if grant_id is None:
            raise ValueError(f"{client.issuer} already holds an active grant for that merchant")
        self.service_grants.invalidate((client_id, merchant_id))
        return grant_id

    async def revoke_grant(
        self, client_id: uuid.UUID, merchant_id: uuid.UUID, *, actor: str = "admin-cli"
    ) -> bool:
        async with self.db.transaction() as con:
            grant_id = await self.repo.revoke_grant(con, client_id, merchant_id)
            if grant_id is not None:
                await self.repo.audit(
                    con,
                    actor,
                    "service_grant.revoke",
                    "service_grant",
                    str(grant_id),
                    merchant_id,
                    None,
                    None,
                    "success",
                    {"client_id": str(client_id)},
                )
                await self._publish(con, f"mc|grant|{client_id}|{merchant_id}")
        if grant_id is None:
            await self._audit_failure(
                actor,
                "service_grant.revoke",
                "service_grant",
                f"{client_id}/{merchant_id}",
                "no active grant",
            )
            return False
        self.service_grants.invalidate((client_id, merchant_id))
        return True

    async def list_grants(
        self, *, client_id: uuid.UUID | None = None, merchant_id: uuid.UUID | None = None
    ) -> list[dict[str, Any]]:
        return await self.repo.list_grants(client_id=client_id, merchant_id=merchant_id)

    async def purge_revoked_jtis(self, *, batch: int = 1000) -> int:
        """`merchants.revoked_jti_purge`: a revocation outlives its token by the leeway (plus a
        minute); after that the token fails its own `exp` check and the row is dead weight."""
        older_than = self.jwt_policy.leeway + 60.0
        total = 0
        while True:
            purged = await self.repo.purge_revoked_jtis(older_than, batch)
            total += purged
            if purged < batch:
                break
        if total:
            log.info("revoked_jtis_purged", count=total)
        return total

    async def revoke_jti(
        self, client_id: uuid.UUID, jti: str, expires_at: datetime, *, actor: str = "admin-cli"
    ) -> None:
        """Refuse one token (by its `jti`) until `expires_at` (its `exp`; later it is dead anyway)."""
        if not 1 <= len(jti) <= model.JTI_MAX_LENGTH:
            raise ValueError("jti must be 1-255 characters")
        if expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone (e.g. 2026-11-27T10:00:00Z)")
        if await self.repo.get_service_client(client_id) is None:
            raise ValueError("no service client with that id")
        async with self.db.transaction() as con:
            await self.repo.revoke_jti(con, client_id, jti, expires_at)
            await self.repo.audit(
                con,
                actor,
                "service_token.revoke",
                "service_token",
                jti,
                None,
                None,
                None,
                "success",
                {"client_id": str(client_id), "expires_at": expires_at.isoformat()},
            )
            await self._publish(con, "mc|jti||")
        self.revoked_jtis.invalidate("live")
