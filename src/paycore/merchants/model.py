"""Merchant records and API-key rules (pure)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from typing import Literal

import msgspec

from paycore.gateway.port import MerchantKey

KeyMode = Literal["test", "live"]
API_KEY_PATTERN = re.compile(r"^sk_(test|live)_[A-Za-z0-9]{32}$")
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
EPX_NUMBER = re.compile(r"^[0-9]{1,16}$")


class Merchant(msgspec.Struct, frozen=True, kw_only=True):
    """The credential record every capability uses (cached by the merchant directory)."""

    id: uuid.UUID
    slug: str
    name: str
    environment: Literal["sandbox", "production"]
    status: str
    epx: MerchantKey
    multi_capture: bool
    timezone: str
    return_urls: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: the merchant and the key mode it authenticated with."""

    merchant: Merchant
    mode: KeyMode
    api_key_id: uuid.UUID | None = None

    @property
    def livemode(self) -> bool:
        return self.mode == "live"


def generate_api_key(mode: KeyMode) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    body = "".join(secrets.choice(alphabet) for _ in range(32))
    return f"sk_{mode}_{body}"


def hash_api_key(api_key: str, server_secret: str) -> bytes:
    """Keyed hash (HMAC-SHA256 with a server key): a leaked table does not reveal keys."""
    return hmac.new(server_secret.encode(), api_key.encode(), hashlib.sha256).digest()


def key_mode(api_key: str) -> KeyMode | None:
    match = API_KEY_PATTERN.match(api_key)
    if match is None:
        return None
    return "live" if match.group(1) == "live" else "test"


def display_prefix(api_key: str) -> str:
    return api_key[:12] + "…" + api_key[-4:]


def validate_epx_key(key: MerchantKey) -> None:
    for name in ("cust_nbr", "merch_nbr", "dba_nbr", "terminal_nbr"):
        if not EPX_NUMBER.match(getattr(key, name)):
            raise ValueError(f"{name} must be 1-16 digits")


def mode_allowed(mode: KeyMode, environment: str) -> bool:
    """Test keys reach only the sandbox gateway; live keys only production."""
    return (mode == "test") == (environment == "sandbox")
