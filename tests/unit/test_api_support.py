from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paycore.api_support import check_listing, page_limit
from paycore.kernel.errors import PaycoreError

pytestmark = pytest.mark.unit


def test_listing_takes_one_cursor_direction_and_aware_bounds():
    check_listing("a", None, created_gte=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(PaycoreError) as info:
        check_listing("a", "b")
    problem = (info.value.code, info.value.param, info.value.status)
    assert problem == ("invalid_parameter", "ending_before", 400)
    with pytest.raises(PaycoreError) as info:
        check_listing(None, None, created_lt=datetime(2026, 1, 1))
    assert info.value.param == "created_lt"


@pytest.mark.parametrize(("given", "expected"), [(None, 20), (1, 1), (100, 100)])
def test_page_limit(given, expected):
    assert page_limit(given) == expected


@pytest.mark.parametrize("bad", [0, 101, -1])
def test_page_limit_bounds(bad):
    with pytest.raises(PaycoreError) as info:
        page_limit(bad)
    assert info.value.param == "limit"
