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


def test_page_trims_and_sets_cursors_both_ways():
    codec = CursorCodec("k")
    merchant = uuid.uuid4()
    rows = [(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()) for _ in range(4)]

    def key(r):
        return r

    first = codec.page(rows, limit=3, merchant_id=merchant, after=None, before=None, key=key)
    assert first.rows == rows[:3] and first.has_more
    assert codec.decode(first.next_cursor, merchant) == rows[2] and first.prev_cursor is None
    last = codec.page(rows[:2], limit=3, merchant_id=merchant, after=rows[0], before=None, key=key)
    assert not last.has_more and last.next_cursor is None
    assert codec.decode(last.prev_cursor, merchant) == rows[0]
    # an ending_before page reads oldest first: the extra row is dropped from the front
    back = codec.page(rows, limit=3, merchant_id=merchant, after=None, before=rows[0], key=key)
    assert back.rows == rows[1:] and back.has_more
    assert back.next_cursor is not None and back.prev_cursor is not None
    empty = codec.page([], limit=3, merchant_id=merchant, after=None, before=None, key=key)
    assert empty.rows == [] and empty.next_cursor is None and empty.prev_cursor is None
