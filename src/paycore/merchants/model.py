"""Merchant records, API-key rules and the service-JWT rules (pure)."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

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
    # set when the caller is another service authenticated with an RS256 JWT (service_clients.id)
    service_client_id: uuid.UUID | None = None

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


def mode_for_environment(environment: str) -> KeyMode:
    """A service JWT acts in the merchant's own mode: sandbox → test, production → live."""
    return "test" if environment == "sandbox" else "live"


# --- service-to-service JWTs (conventions.md "Authentication and tenancy") ----------------------
MIN_RSA_BITS = 2048
ISSUER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,254}$")
JTI_MAX_LENGTH = 255
TOKEN_MAX_LENGTH = 8192  # bytes of a compact JWT we are willing to parse at all


class InvalidClaims(ValueError):
    """A verified token whose claims break paycore's rules (rendered as 401)."""


class ServiceClient(msgspec.Struct, frozen=True, kw_only=True):
    """A client service: its issuer (`iss`) selects its one RSA public key."""

    id: uuid.UUID
    issuer: str
    name: str
    status: str
    public_key: RSAPublicKey
    key_fingerprint: str

    @property
    def active(self) -> bool:
        return self.status == "active"

    def __repr__(self) -> str:
        return f"ServiceClient(id={self.id}, issuer={self.issuer!r}, status={self.status!r})"


class ServiceClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The claims paycore acts on, after the signature and paycore's rules were checked."""

    issuer: str
    merchant_id: uuid.UUID
    jti: str
    expires_at: int


def validate_issuer(issuer: str) -> str:
    if not ISSUER_PATTERN.match(issuer):
        raise ValueError(
            "issuer must be 1-255 characters of letters, digits and . _ : / @ - (no spaces, | or ;)"
        )
    return issuer


def load_rsa_public_key(pem: str | bytes) -> RSAPublicKey:
    """Parse a PEM public key; only RSA keys of at least 2048 bits are accepted."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        raise ValueError("that is a private key: register the client's public key only")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError("the public key is not a valid PEM public key") from exc
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the public key must be an RSA key (RS256)")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required")
    return key


def public_key_pem(key: RSAPublicKey) -> str:
    """The canonical PEM (SubjectPublicKeyInfo) stored for a client."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_fingerprint(key: RSAPublicKey) -> str:
    """SHA-256 of the DER public key, hex: what listings and the audit log show."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return "sha256:" + digest.finalize().hex()


def looks_like_jwt(token: str) -> bool:
    """Three non-empty base64url segments (a compact JWS); an API key never has dots."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def _int_claim(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClaims(f"{name} must be a NumericDate")
    return int(value)


def check_claims(
    claims: Mapping[str, Any], *, now: float, max_lifetime: float, leeway: float
) -> ServiceClaims:
    """paycore's rules on a token whose signature was verified.

    Required: `iss` (text), `exp`, `merchant_id` (a UUID), `jti` (1-255 characters). Optional: `iat`
    and `nbf`. A token may live at most `max_lifetime`: `exp - iat` when `iat` is present, and
    `exp - now` always (a token without `iat` cannot be minted for a year either). `exp` in the
    past beyond `leeway`, or `iat`/`nbf` in the future beyond it, are refused.
    """
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise InvalidClaims("iss is required")
    exp = _int_claim(claims, "exp")
    if exp is None:
        raise InvalidClaims("exp is required")
    iat = _int_claim(claims, "iat")
    nbf = _int_claim(claims, "nbf")
    if exp < now - leeway:
        raise InvalidClaims("expired")
    if iat is not None and iat > now + leeway:
        raise InvalidClaims("iat is in the future")
    if nbf is not None and nbf > now + leeway:
        raise InvalidClaims("not valid yet")
    if iat is not None and exp - iat > max_lifetime:
        raise InvalidClaims("the token lives longer than allowed")
    if exp - now > max_lifetime + leeway:
        raise InvalidClaims("the token lives longer than allowed")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= JTI_MAX_LENGTH:
        raise InvalidClaims("jti is required (1-255 characters)")
    raw_merchant = claims.get("merchant_id")
    if not isinstance(raw_merchant, str):
        raise InvalidClaims("merchant_id is required")
    try:
        merchant_id = uuid.UUID(raw_merchant)
    except ValueError:
        raise InvalidClaims("merchant_id must be a UUID") from None
    return ServiceClaims(issuer=issuer, merchant_id=merchant_id, jti=jti, expires_at=exp)
