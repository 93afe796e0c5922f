"""Admin rules (pure): admin tokens, flag and breaker commands, the control-channel payloads,
heap-snapshot bounds."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Final, Literal

import msgspec

from paycore.kernel import errors
from paycore.merchants.model import API_KEY_PATTERN, hash_api_key

TOKEN_PREFIX: Final = "ak_"
TOKEN_PATTERN: Final = re.compile(r"^ak_[A-Za-z0-9]{40}$")
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$")
_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# NOTIFY channels: kill switches and breaker commands on the control channel; merchant evictions
# on the cache channel every cache listener reads (`mc|merchant|<id>|` items of the credential cache).
CONTROL_CHANNEL: Final = "paycore_admin"
CACHE_CHANNEL: Final = "paycore_cache_invalidate"
FLAGS_CHANGED: Final = "flags"

BreakerAction = Literal["reset", "open", "close"]
BREAKER_ACTIONS: Final[tuple[BreakerAction, ...]] = ("reset", "open", "close")

SNAPSHOT_LIMIT_DEFAULT: Final = 10
SNAPSHOT_LIMIT_MAX: Final = 50

ADMIN_TOKEN_INVALID = errors.register("admin_token_invalid", 401, "Missing or invalid admin token")
ADMIN_ONLY = errors.register("admin_credentials_required", 403, "These routes need an admin token")
UNKNOWN_FLAG = errors.register("feature_flag_not_found", 404, "No such feature flag")
UNKNOWN_BREAKER = errors.register("circuit_breaker_not_found", 404, "No such circuit breaker")
UNKNOWN_MERCHANT = errors.register("merchant_not_found", 404, "No such merchant")
BYPASS_CACHE_HEADER: Final = "x-bypass-cache"


def bypass_requested(value: str | None) -> bool:
    """`X-Bypass-Cache: true` (any case). Read on admin routes only, after the admin token was
    checked: merchant credentials never bypass a cache, whatever they send."""
    return value is not None and value.strip().lower() == "true"


TRACEMALLOC_DISABLED = errors.register(
    "tracemalloc_disabled", 409, "Allocation tracing is off (PAYCORE_TRACEMALLOC_ENABLED=false)"
)


class AdminActor(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling the admin API: one admin token."""

    token_id: uuid.UUID
    name: str

    @property
    def actor(self) -> str:
        """The audit log's `actor`."""
        return f"admin:{self.name}"


def generate_admin_token() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(40))


def hash_admin_token(token: str, server_secret: str) -> bytes:
    """The merchant API keys' keyed hash (HMAC-SHA256 with the server key)."""
    return hash_api_key(token, server_secret)


def display_prefix(token: str) -> str:
    return token[:7] + "…" + token[-4:]


CredentialKind = Literal["admin", "merchant", "invalid"]


def credential_kind(bearer: str) -> CredentialKind:
    """What an `Authorization: Bearer` value looks like, before any lookup."""
    if TOKEN_PATTERN.match(bearer):
        return "admin"
    if API_KEY_PATTERN.match(bearer) or bearer.count(".") == 2:  # an API key or a (service) JWT
        return "merchant"
    return "invalid"


def valid_token_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name))


def breaker_command(name: str, action: BreakerAction, origin: str) -> str:
    return f"breaker|{name}|{action}|{origin}"


def parse_breaker_command(payload: str) -> tuple[str, BreakerAction, str] | None:
    parts = payload.split("|")
    if len(parts) != 4 or parts[0] != "breaker":
        return None
    name, action, origin = parts[1], parts[2], parts[3]
    for known in BREAKER_ACTIONS:
        if action == known:
            return name, known, origin
    return None


def merchant_eviction(merchant_id: uuid.UUID) -> str:
    return f"mc|merchant|{merchant_id}|"


def parse_merchant_evictions(payload: str) -> list[uuid.UUID]:
    """The merchant ids of every `mc|merchant|<id>|` item of a cache-channel payload."""
    found: list[uuid.UUID] = []
    for item in payload.split(";"):
        parts = item.split("|")
        if len(parts) == 4 and parts[0] == "mc" and parts[1] == "merchant":
            try:
                found.append(uuid.UUID(parts[2]))
            except ValueError:
                continue
    return found


def snapshot_limit(requested: int | None) -> int | None:
    """Sites returned by a heap snapshot: 1-50, default 10; None when out of range."""
    if requested is None:
        return SNAPSHOT_LIMIT_DEFAULT
    if 1 <= requested <= SNAPSHOT_LIMIT_MAX:
        return requested
    return None


def audit_outcome(status: int) -> Literal["success", "failure"]:
    return "success" if status < 400 else "failure"
