"""Billing dates: month ends, leap years, no drift, no skipped period (table tests + properties)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.subscriptions import calendar as cal
from paycore.subscriptions.calendar import Interval, billing_date, days_in_month

pytestmark = pytest.mark.unit

MONTHLY = Interval("month")


def d(y: int, m: int, day: int, h: int = 12, mi: int = 0) -> datetime:
    return datetime(y, m, day, h, mi, tzinfo=UTC)


def test_jan_31_monthly_clamps_to_feb_then_returns_to_the_31st():
    anchor = d(2026, 1, 31, 9, 30)
    dates = [billing_date(anchor, MONTHLY, n) for n in range(13)]
    assert [(x.month, x.day) for x in dates] == [
        (1, 31), (2, 28), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31),
        (8, 31), (9, 30), (10, 31), (11, 30), (12, 31), (1, 31),
    ]  # fmt: skip
    assert all((x.hour, x.minute) == (9, 30) for x in dates)


def test_jan_31_in_a_leap_year_gives_feb_29():
    assert billing_date(d(2028, 1, 31), MONTHLY, 1) == d(2028, 2, 29)
    assert billing_date(d(2028, 1, 31), MONTHLY, 2) == d(2028, 3, 31)


def test_feb_29_yearly_gives_feb_28_then_feb_29_again_in_leap_years():
    anchor = d(2028, 2, 29)
    yearly = Interval("year")
    assert [billing_date(anchor, yearly, n) for n in range(5)] == [
        d(2028, 2, 29), d(2029, 2, 28), d(2030, 2, 28), d(2031, 2, 28), d(2032, 2, 29),
    ]  # fmt: skip


def test_quarterly_from_the_30th_and_every_two_weeks_and_days():
    assert billing_date(d(2026, 11, 30), Interval("month", 3), 1) == d(2027, 2, 28)
    assert billing_date(d(2026, 11, 30), Interval("month", 3), 2) == d(2027, 5, 30)
    assert billing_date(d(2026, 12, 31), Interval("week", 2), 1) == d(2027, 1, 14)
    assert billing_date(d(2026, 2, 27), Interval("day", 3), 1) == d(2026, 3, 2)


def test_never_cumulative_clamping():
    """Stepping one month at a time from a clamped date would drift; the anchor does not."""
    anchor = d(2026, 1, 31)
    stepped = billing_date(billing_date(anchor, MONTHLY, 1), MONTHLY, 1)  # from Feb 28
    assert stepped == d(2026, 3, 28)
    assert billing_date(anchor, MONTHLY, 2) == d(2026, 3, 31)


def test_anchor_in_another_zone_is_converted_to_utc():
    anchor = datetime(2026, 1, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))  # Feb 1 04:00 UTC
    assert billing_date(anchor, MONTHLY, 1) == d(2026, 3, 1, 4, 0)


@pytest.mark.parametrize(
    ("unit", "count"),
    [("fortnight", 1), ("month", 0), ("month", 37), ("day", 1096), ("year", 4), ("week", True)],
)
def test_invalid_intervals(unit, count):
    with pytest.raises(ValueError):
        Interval(unit, count)


def test_naive_and_negative_are_refused():
    with pytest.raises(ValueError):
        billing_date(datetime(2026, 1, 1), MONTHLY, 1)
    with pytest.raises(ValueError):
        billing_date(d(2026, 1, 1), MONTHLY, -1)


def test_index_at_and_first_index_at_or_after():
    anchor = d(2026, 1, 31)
    assert cal.index_at(anchor, MONTHLY, d(2026, 1, 30)) == -1
    assert cal.index_at(anchor, MONTHLY, anchor) == 0
    assert cal.index_at(anchor, MONTHLY, d(2026, 2, 28, 11, 59)) == 0
    assert cal.index_at(anchor, MONTHLY, d(2026, 2, 28)) == 1
    assert cal.index_at(anchor, MONTHLY, d(2026, 3, 30)) == 1
    assert cal.first_index_at_or_after(anchor, MONTHLY, d(2026, 2, 28)) == 1
    assert cal.first_index_at_or_after(anchor, MONTHLY, d(2026, 2, 28, 12, 1)) == 2
    assert cal.first_index_at_or_after(anchor, MONTHLY, d(2025, 1, 1)) == 0


# --- properties ---------------------------------------------------------------------------------
anchors = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
intervals = st.sampled_from(cal.UNITS).flatmap(
    lambda unit: st.builds(Interval, st.just(unit), st.integers(1, cal.MAX_COUNT[unit]))
)


@settings(max_examples=120, deadline=None)
@given(anchor=anchors, interval=intervals, n=st.integers(0, 40))
def test_strictly_increasing_and_time_of_day_kept(anchor, interval, n):
    a, b = billing_date(anchor, interval, n), billing_date(anchor, interval, n + 1)
    assert a < b
    assert (a.hour, a.minute, a.second, a.microsecond) == (
        anchor.hour,
        anchor.minute,
        anchor.second,
        anchor.microsecond,
    )


@settings(max_examples=120, deadline=None)
@given(anchor=anchors, interval=intervals, n=st.integers(0, 40))
def test_never_skips_a_period(anchor, interval, n):
    """The n-th date lands exactly n intervals after the anchor: in the right month (month/year
    units, on the anchor's day or the month's last day) or exactly n × length (day/week units)."""
    got = billing_date(anchor, interval, n)
    if interval.unit in ("day", "week"):
        per = 1 if interval.unit == "day" else 7
        assert got - anchor == timedelta(days=per * interval.count * n)
        return
    months = interval.count * n * (12 if interval.unit == "year" else 1)
    assert got.year * 12 + got.month == anchor.year * 12 + anchor.month + months
    assert got.day == min(anchor.day, days_in_month(got.year, got.month))


@settings(max_examples=120, deadline=None)
@given(anchor=anchors, interval=intervals, offset=st.timedeltas(timedelta(0), timedelta(days=3000)))
def test_index_at_brackets_the_instant(anchor, interval, offset):
    at = anchor + offset
    n = cal.index_at(anchor, interval, at)
    assert billing_date(anchor, interval, n) <= at < billing_date(anchor, interval, n + 1)
    first = cal.first_index_at_or_after(anchor, interval, at)
    assert billing_date(anchor, interval, first) >= at
    assert first == 0 or billing_date(anchor, interval, first - 1) < at


@settings(max_examples=100, deadline=None)
@given(day=st.integers(29, 31), month=st.integers(1, 12), year=st.integers(2000, 2090), n=st.integers(0, 60))
def test_month_end_anchors_return_to_their_day_whenever_the_month_allows(day, month, year, n):
    if day > days_in_month(year, month):
        return
    anchor = d(year, month, day)
    got = billing_date(anchor, MONTHLY, n)
    if days_in_month(got.year, got.month) >= day:
        assert got.day == day
    else:
        assert got.day == days_in_month(got.year, got.month)
