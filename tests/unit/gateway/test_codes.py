"""CACHE-5: the static response-code table, table-driven over every listed code plus unknown ones."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from paycore.gateway.epx import codes
from paycore.gateway.port import Category

pytestmark = pytest.mark.unit

A, S, H, E, U = (
    Category.APPROVED,
    Category.SOFT_DECLINE,
    Category.HARD_DECLINE,
    Category.ERROR,
    Category.UNKNOWN,
)

# (code, category on a financial type, category on a $0 type, breaker failure)
TABLE = [
    ("00", A, A, False),
    ("85", E, A, False),
    ("05", S, S, False),
    ("51", S, S, False),
    ("61", S, S, False),
    ("65", S, S, False),
    ("91", S, S, False),
    ("96", E, E, True),
    ("14", H, H, False),
    ("41", H, H, False),
    ("43", H, H, False),
    ("54", H, H, False),
    ("55", H, H, False),
    ("57", H, H, False),
    ("82", H, H, False),
    ("12", E, E, False),
    ("58", E, E, False),
]


@pytest.mark.parametrize(("code", "financial", "zero_dollar", "breaker_failure"), TABLE)
def test_listed_codes(code: str, financial: Category, zero_dollar: Category, breaker_failure: bool) -> None:
    info = codes.lookup(code)
    assert info.code == code
    assert info.meaning and info.meaning != "unknown response code"
    assert codes.categorize(code, zero_dollar=False) is financial
    assert codes.categorize(code, zero_dollar=True) is zero_dollar
    assert info.breaker_failure is breaker_failure
    assert codes.metric_code(code) == code


def test_table_covers_exactly_the_listed_codes() -> None:
    assert set(codes.RESPONSE_CODES) == {row[0] for row in TABLE}


@pytest.mark.parametrize("code", ["94", "04", "99", "ZZ", "", "000"])
def test_unknown_codes(code: str) -> None:
    info = codes.lookup(code)
    assert info.category is U
    assert info.meaning == "unknown response code"
    assert not info.breaker_failure
    assert codes.categorize(code, zero_dollar=False) is U
    assert codes.categorize(code, zero_dollar=True) is U
    assert codes.metric_code(code) == "other"


def test_entries_are_frozen_and_table_read_only() -> None:
    info = codes.lookup("05")
    with pytest.raises(AttributeError):
        info.category = Category.APPROVED  # type: ignore[misc]
    with pytest.raises(TypeError):
        codes.RESPONSE_CODES["05"] = info  # type: ignore[index]
    assert not dataclasses.is_dataclass(info) and isinstance(info, msgspec.Struct)


def test_only_91_and_soft_declines_may_be_retried_later() -> None:
    later = {code for code, info in codes.RESPONSE_CODES.items() if info.retry_later}
    assert later == {"05", "51", "61", "65", "91", "96"}


def test_zero_dollar_types() -> None:
    assert {"CCE8", "CKC8", "CCE0"} == codes.ZERO_DOLLAR_TRAN_TYPES
    assert "CCE1" not in codes.ZERO_DOLLAR_TRAN_TYPES


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("Invalid TRAN_NBR[LEN]", "TRAN_NBR"),
        ("Invalid BATCH_ID[LEN]", "BATCH_ID"),
        ("Invalid AUTH_GUID[LEN]", "AUTH_GUID"),
        ("Invalid AMOUNT format", "AMOUNT"),
        ("Invalid TRAN_TYPE", "TRAN_TYPE"),
        ("ERROR: Invalid EXP_DATE[FORMAT]", "EXP_DATE"),
        ("Invalid SOMETHING_NEW[X]", "SOMETHING_NEW"),
        ("Missing required field", "*"),
        ("MISSING REQUIRED FIELD: STD_ENTRY_CLASS", "*"),
    ],
)
def test_validation_texts(text: str, field: str) -> None:
    assert codes.validation_field(text) == field
    assert codes.is_validation_error(text)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "APPROVED",
        "EXACT MATCH",
        "INSUFF FUNDS",
        "INVALID CARD",
        "INVALID CARD NUMBER",
        "Invalid card",
    ],
)
def test_not_validation_texts(text: str | None) -> None:
    assert codes.validation_field(text) is None
    assert not codes.is_validation_error(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Duplicate TRAN_NBR", True),
        ("DUPLICATE TRAN_NBR 1234567890", True),
        ("Error: duplicate tran_nbr", True),
        ("APPROVED", False),
        (None, False),
        ("", False),
    ],
)
def test_duplicate_texts(text: str | None, expected: bool) -> None:
    assert codes.is_duplicate_tran_nbr(text) is expected
