from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from paycore.platform.db.keyset import keyset, listing_name

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 27, tzinfo=UTC)
ID = uuid.UUID(int=7)


def test_first_page_newest_first_with_filters():
    args: list = ["m", 21]
    page = keyset(args, equals=(("status", "approved"), ("customer_id", None)), created_gte=AT)
    assert page.where == "AND status = $3 AND created_at >= $4"
    assert page.order == "created_at DESC, id DESC" and not page.reverse
    assert args == ["m", 21, "approved", AT]


def test_after_and_before_cursors():
    args: list = ["m", 21]
    page = keyset(args, after=(AT, ID), alias="e")
    assert page.where == "AND (e.created_at, e.id) < ($3, $4)" and not page.reverse
    args = ["m", 21]
    page = keyset(args, before=(AT, ID))
    assert page.where == "AND (created_at, id) > ($3, $4)"
    assert page.order == "created_at ASC, id ASC" and page.reverse
    assert args[2:] == [AT, ID]


def test_listing_names_are_static_per_filter_combination():
    assert listing_name("payments.list", (("status", "x"), ("customer_id", None))) == "payments.list.status"
    assert listing_name("payments.list", (("status", None),)) == "payments.list"
