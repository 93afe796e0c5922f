"""Banking days on the simulated calendar (pure; no clock reads).

A banking day is a weekday that is not a Federal Reserve holiday. The Federal Reserve observes a
holiday that falls on a Sunday on the following Monday; one that falls on a Saturday is not moved
(the Friday before stays a banking day).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

_SATURDAY = 5
_SUNDAY = 6


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based) `weekday` (Mon=0) of a month."""
    first = date(year, month, 1)
    offset = (weekday - first.weekday()) % 7
    return first + timedelta(days=offset + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


@lru_cache(maxsize=64)
def federal_reserve_holidays(year: int) -> frozenset[date]:
    """The days the Federal Reserve is closed in `year` (observed dates)."""
    fixed = [
        date(year, 1, 1),  # New Year's Day
        date(year, 6, 19),  # Juneteenth National Independence Day (since 2022)
        date(year, 7, 4),  # Independence Day
        date(year, 11, 11),  # Veterans Day
        date(year, 12, 25),  # Christmas Day
    ]
    if year < 2022:
        fixed.remove(date(year, 6, 19))
    days = {d + timedelta(days=1) if d.weekday() == _SUNDAY else d for d in fixed}
    days.update(
        {
            _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
            _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
            _last_weekday(year, 5, 0),  # Memorial Day
            _nth_weekday(year, 9, 0, 1),  # Labor Day
            _nth_weekday(year, 10, 0, 2),  # Columbus Day
            _nth_weekday(year, 11, 3, 4),  # Thanksgiving Day
        }
    )
    # A Saturday holiday is not observed by the Federal Reserve.
    return frozenset(d for d in days if d.weekday() != _SATURDAY)


def is_banking_day(day: date) -> bool:
    return day.weekday() < _SATURDAY and day not in federal_reserve_holidays(day.year)


def next_banking_day(day: date) -> date:
    """The first banking day strictly after `day`."""
    return add_banking_days(day, 1)


def add_banking_days(day: date, count: int) -> date:
    """`count` banking days after `day` (count 0: `day` itself if it is a banking day, else the next)."""
    if count < 0:
        raise ValueError("count must not be negative")
    current = day
    if count == 0:
        while not is_banking_day(current):
            current += timedelta(days=1)
        return current
    remaining = count
    while remaining:
        current += timedelta(days=1)
        if is_banking_day(current):
            remaining -= 1
    return current


def banking_days_between(start: date, end: date) -> int:
    """Banking days in (start, end]: how many banking days have passed since `start`."""
    if end <= start:
        return 0
    count = 0
    current = start
    while current < end:
        current += timedelta(days=1)
        if is_banking_day(current):
            count += 1
    return count
