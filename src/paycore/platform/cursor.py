"""Opaque, HMAC-signed keyset cursors scoped to a merchant (API-7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError

_SIG_BYTES = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


class CursorCodec:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIG_BYTES]

    def encode(self, created_at: datetime, row_id: uuid.UUID, merchant_id: uuid.UUID) -> str:
        micros = (created_at - _EPOCH) // _MICRO
        payload = micros.to_bytes(8, "big", signed=True) + row_id.bytes + merchant_id.bytes
        token = payload[:24] + self._sign(payload)
        return base64.urlsafe_b64encode(token).decode().rstrip("=")

    def decode(self, cursor: str, merchant_id: uuid.UUID) -> tuple[datetime, uuid.UUID]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise PaycoreError(errors.INVALID_CURSOR, param="cursor") from None
        if len(raw) != 24 + _SIG_BYTES:
            raise PaycoreError(errors.INVALID_CURSOR, param="cursor")
        body, sig = raw[:24], raw[24:]
        expected = self._sign(body + merchant_id.bytes)
        if not hmac.compare_digest(sig, expected):
            raise PaycoreError(errors.INVALID_CURSOR, param="cursor")
        micros = int.from_bytes(body[:8], "big", signed=True)
        return _EPOCH + micros * _MICRO, uuid.UUID(bytes=body[8:24])
