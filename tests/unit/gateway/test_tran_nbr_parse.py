from __future__ import annotations

import pytest

from paycore.gateway.epx.wire import parse_tran_nbr

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1234567890, 1234567890), ("1234567890", 1234567890), (" 42 ", 42), ("0042", 42)],
)
def test_report_tran_nbrs_parse(value, expected):
    assert parse_tran_nbr(value) == expected


@pytest.mark.parametrize("value", [None, "", "12a", "-5", -5, "1.5", "9" * 19])
def test_values_that_cannot_be_a_tran_nbr(value):
    assert parse_tran_nbr(value) is None
