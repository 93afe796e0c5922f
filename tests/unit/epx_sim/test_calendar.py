"""Banking days: weekends and Federal Reserve holidays are skipped."""

from __future__ import annotations

from datetime import date

import pytest

from paycore.epx_sim.calendar import (
    add_banking_days,
    banking_days_between,
    federal_reserve_holidays,
    is_banking_day,
    next_banking_day,
)

pytestmark = pytest.mark.unit


def test_holidays_2026() -> None:
    assert federal_reserve_holidays(2026) == {
        date(2026, 1, 1),
        date(2026, 1, 19),
        date(2026, 2, 16),
        date(2026, 5, 25),
        date(2026, 6, 19),
        date(2026, 9, 7),
        date(2026, 10, 12),
        date(2026, 11, 11),
        date(2026, 11, 26),
        date(2026, 12, 25),
    }  # 4 July 2026 is a Saturday: not observed by the Federal Reserve


def test_sunday_holiday_moves_to_monday() -> None:
    assert date(2027, 7, 5) in federal_reserve_holidays(2027)  # 4 July 2027 is a Sunday
    assert date(2022, 12, 26) in federal_reserve_holidays(2022)


def test_banking_day_arithmetic() -> None:
    assert not is_banking_day(date(2026, 11, 28))  # Saturday
    assert not is_banking_day(date(2026, 11, 26))  # Thanksgiving
    assert next_banking_day(date(2026, 11, 25)) == date(2026, 11, 27)
    assert next_banking_day(date(2026, 11, 27)) == date(2026, 11, 30)
    assert add_banking_days(date(2026, 12, 24), 1) == date(2026, 12, 28)
    assert add_banking_days(date(2026, 11, 28), 0) == date(2026, 11, 30)
    assert banking_days_between(date(2026, 11, 25), date(2026, 12, 1)) == 3
    with pytest.raises(ValueError):
        add_banking_days(date(2026, 1, 1), -1)
