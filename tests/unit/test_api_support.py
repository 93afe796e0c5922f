from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from paycore.api_support import RFC3339, check_listing, page_limit
from paycore.kernel.errors import PaycoreError

pytestmark = pytest.mark.unit


def test_listing_takes_one_cursor_direction_and_rfc3339_bounds():
    got = check_listing(
        "a", None, created_gte="2026-01-01T00:00:00Z", created_lt="2026-01-02T01:00:00.5+01:00"
    )
    assert got == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 0, 0, 0, 500000, tzinfo=UTC))
    assert check_listing(None, None) == (None, None)
    assert check_listing(None, None, created_gte="2026-01-01t00:00:00z")[0] == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    with pytest.raises(PaycoreError) as info:
        check_listing("a", "b")
    problem = (info.value.code, info.value.param, info.value.status)
    assert problem == ("invalid_parameter", "ending_before", 400)


@pytest.mark.parametrize("bad", ["2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "0", "2026-01-01"])
def test_a_created_bound_is_an_aware_rfc3339_date_time(bad):
    with pytest.raises(PaycoreError) as info:
        check_listing(None, None, created_lt=bad)
    assert (info.value.param, info.value.status) == ("created_lt", 400)


@pytest.mark.parametrize(
    ("value", "matches"),
    [("2026-11-27T10:00:00Z", True), ("2026-11-27t10:00:00.123456-05:00", True), ("0", False),
     ("2026-11-27T10:00:00", False), ("2026-11-27 10:00:00Z", False), ("1700000000", False)],
)  # fmt: skip
def test_the_documented_pattern(value, matches):
    assert (re.fullmatch(RFC3339, value) is not None) is matches


@pytest.mark.parametrize(("given", "expected"), [(None, 20), (1, 1), (100, 100)])
def test_page_limit(given, expected):
    assert page_limit(given) == expected


@pytest.mark.parametrize("bad", [0, 101, -1])
def test_page_limit_bounds(bad):
    with pytest.raises(PaycoreError) as info:
        page_limit(bad)
    assert info.value.param == "limit"
