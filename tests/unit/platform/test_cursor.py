from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from paycore.kernel.errors import PaycoreError
from paycore.platform.cursor import CursorCodec

pytestmark = pytest.mark.unit


def test_round_trip_is_exact_to_the_microsecond():
    codec = CursorCodec("k")
    merchant = uuid.uuid4()
    at = datetime(2026, 11, 27, 12, 30, 1, 123456, tzinfo=UTC)
    row = uuid.uuid4()
    assert codec.decode(codec.encode(at, row, merchant), merchant) == (at, row)


def test_cursor_is_scoped_to_the_merchant_and_tamper_proof():
    codec = CursorCodec("k")
    merchant = uuid.uuid4()
    cursor = codec.encode(datetime.now(UTC), uuid.uuid4(), merchant)
    with pytest.raises(PaycoreError) as info:
        codec.decode(cursor, uuid.uuid4())
    assert info.value.code == "invalid_cursor"
    tampered = ("A" if cursor[5] != "A" else "B").join([cursor[:5], cursor[6:]])
    with pytest.raises(PaycoreError):
        codec.decode(tampered, merchant)
    with pytest.raises(PaycoreError):
        codec.decode("not-a-cursor!", merchant)
    with pytest.raises(PaycoreError):
        CursorCodec("other").decode(cursor, merchant)
