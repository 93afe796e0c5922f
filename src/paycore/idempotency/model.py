"""Idempotency rules, pure."""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from typing import Any

import msgspec

from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, 1-255 chars
RETENTION_HOURS = 24

_canonical = msgspec.json.Encoder(order="sorted")


class IdempotencyRequest(msgspec.Struct, frozen=True):
    """The key and the request's fingerprint (method, path, canonical body)."""

    key: str
    fingerprint: bytes
    method: str
    path: str


class StoredOutcome(msgspec.Struct, frozen=True):
    status: str  # in_flight | completed
    fingerprint: bytes
    response_status: int | None
    response_body: bytes | None
    resource_id: uuid.UUID | None


class Decision(enum.Enum):
    REPLAY = "replay"


def validate_key(raw: str | None, *, required: bool) -> str | None:
    if raw is None or raw == "":
        if required:
            raise PaycoreError(errors.IDEMPOTENCY_KEY_MISSING, param="Idempotency-Key")
        return None
    if not KEY_PATTERN.match(raw):
        raise PaycoreError(
            errors.IDEMPOTENCY_KEY_INVALID,
            "Idempotency-Key must be 1-255 visible ASCII characters",
            param="Idempotency-Key",
        )
    return raw


def fingerprint(method: str, path: str, body: Any) -> bytes:
    """SHA-256 over method, path and the canonical (key-sorted) JSON of the decoded body."""
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(_canonical.encode(body))
    return digest.digest()


def request_for(key: str, method: str, path: str, body: Any) -> IdempotencyRequest:
    return IdempotencyRequest(key=key, fingerprint=fingerprint(method, path, body), method=method, path=path)


def decide(stored: StoredOutcome, request: IdempotencyRequest) -> StoredOutcome:
    """For a key already on record: replay it, or raise 422 (reused) / 409 (in flight)."""
    if stored.fingerprint != request.fingerprint:
        raise PaycoreError(errors.IDEMPOTENCY_KEY_REUSED, param="Idempotency-Key")
    if stored.status != "completed" or stored.response_status is None:
        raise PaycoreError(errors.IDEMPOTENCY_IN_FLIGHT, headers={"Retry-After": "1"})
    return stored


class Replay(Exception):
    """Raised by a service when the request is a replay; the API answers the stored response."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__("idempotent replay")
        self.status = status
        self.body = body
