"""Billing dates of a subscription (pure: no clock reads, no I/O).

A schedule is an **anchor** (an instant, UTC) and an **interval** (`count` × day, week, month or
year). The n-th billing date is computed from the anchor, never by stepping from the previous date:

    billing_date(anchor, interval, n) = anchor + n × interval

with month and year arithmetic clamped to the last day of the target month. Clamping from the
anchor (not cumulatively) is what keeps a schedule on its day: Jan 31 monthly gives Feb 28 (Feb 29
in a leap year), then Mar 31, Apr 30, May 31, … — stepping month by month from Feb 28 would drift
to the 28th for ever. Feb 29 yearly gives Feb 28 in common years and Feb 29 in leap years. The time
of day of the anchor is kept. Days and weeks are exact multiples of 24 h (UTC has no DST).

There are no "30-day months" anywhere (roadmap §6, CACHE-11).
"""

from __future__ import annotations

import calendar as _stdlib_calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

__all__ = [
    "MAX_COUNT",
    "UNITS",
    "Interval",
    "Unit",
    "billing_date",
    "check_interval",
    "days_in_month",
    "first_index_at_or_after",
    "index_at",
]

Unit = Literal["day", "week", "month", "year"]
UNITS: Final[tuple[str, ...]] = get_args(Unit)

# The longest interval paycore bills: three years, whatever the unit.
MAX_COUNT: Final[dict[str, int]] = {"day": 1095, "week": 156, "month": 36, "year": 3}


@dataclass(frozen=True, slots=True)
class Interval:
    """`count` × `unit`, validated on construction."""

    unit: str
    count: int = 1

    def __post_init__(self) -> None:
        check_interval(self.unit, self.count)


def check_interval(unit: str, count: int) -> None:
    if unit not in MAX_COUNT:
        raise ValueError(f"interval unit must be one of {', '.join(UNITS)}")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT[unit]:
        raise ValueError(f"interval count must be 1-{MAX_COUNT[unit]} for unit {unit}")


def days_in_month(year: int, month: int) -> int:
    return _stdlib_calendar.monthrange(year, month)[1]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: billing dates are timezone-aware UTC")
    return value.astimezone(UTC)


def _add_months(anchor: datetime, months: int) -> datetime:
    total = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(total, 12)
    month = month0 + 1
    day = min(anchor.day, days_in_month(year, month))
    return anchor.replace(year=year, month=month, day=day)


def billing_date(anchor: datetime, interval: Interval, n: int) -> datetime:
    """The n-th billing date (n ≥ 0) of the schedule anchored at `anchor` (UTC)."""
    if n < 0:
        raise ValueError("period index must be >= 0")
    anchor = _utc(anchor)
    steps = interval.count * n
    if interval.unit == "day":
        return anchor + timedelta(days=steps)
    if interval.unit == "week":
        return anchor + timedelta(weeks=steps)
    if interval.unit == "month":
        return _add_months(anchor, steps)
    return _add_months(anchor, 12 * steps)


def _estimate(anchor: datetime, interval: Interval, at: datetime) -> int:
    if interval.unit in ("day", "week"):
        length = timedelta(days=interval.count * (1 if interval.unit == "day" else 7))
        return (at - anchor) // length
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    per = interval.count * (12 if interval.unit == "year" else 1)
    return months // per


def index_at(anchor: datetime, interval: Interval, at: datetime) -> int:
    """The index of the period containing `at`: the largest n with billing_date(n) <= at.

    -1 when `at` is before the anchor."""
    anchor, at = _utc(anchor), _utc(at)
    if at < anchor:
        return -1
    n = max(_estimate(anchor, interval, at), 0)
    # the estimate is within one period of the answer; settle it exactly
    while n > 0 and billing_date(anchor, interval, n) > at:
        n -= 1
    while billing_date(anchor, interval, n + 1) <= at:
        n += 1
    return n


def first_index_at_or_after(anchor: datetime, interval: Interval, at: datetime) -> int:
    """The smallest n >= 0 with billing_date(n) >= at."""
    n = index_at(anchor, interval, at)
    if n < 0:
        return 0
    return n if billing_date(anchor, interval, n) == _utc(at) else n + 1
