"""Opaque, HMAC-signed keyset cursors scoped to a merchant (API-7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError

_SIG_BYTES = 16
T = TypeVar("T")
Key = tuple[datetime, uuid.UUID]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a keyset listing, newest first, with the cursors to move either way."""

    rows: list[T]
    has_more: bool
    next_cursor: str | None
    prev_cursor: str | None


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

    def bounds(
        self, starting_after: str | None, ending_before: str | None, merchant_id: uuid.UUID
    ) -> tuple[Key | None, Key | None]:
        """The decoded (after, before) keys of a listing request."""
        after = self.decode(starting_after, merchant_id) if starting_after else None
        before = self.decode(ending_before, merchant_id) if ending_before else None
        return after, before

    def page(
        self,
        rows: list[T],
        *,
        limit: int,
        merchant_id: uuid.UUID,
        after: Key | None,
        before: Key | None,
        key: Callable[[T], Key],
    ) -> Page[T]:
        """Turn the `limit + 1` rows a keyset query fetched into a page and its cursors."""
        has_more = len(rows) > limit
        if has_more:
            rows = rows[1:] if before is not None else rows[:limit]
        newer = after is not None or (before is not None and has_more)
        older = has_more or before is not None
        return Page(
            rows=rows,
            has_more=has_more,
            next_cursor=self.encode(*key(rows[-1]), merchant_id) if rows and older else None,
            prev_cursor=self.encode(*key(rows[0]), merchant_id) if rows and newer else None,
        )
