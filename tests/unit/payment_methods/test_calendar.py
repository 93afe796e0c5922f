"""The banking calendar of ACH verification: Federal Reserve holidays with their observed-date
rules, banking-day arithmetic, and the verification due time / sweep cutoff (property-tested)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.epx_sim import calendar as sim_calendar
from paycore.payment_methods import calendar as cal

pytestmark = pytest.mark.unit


def d(text: str) -> date:
    return date.fromisoformat(text)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Published Federal Reserve holiday schedules (observed weekdays the Reserve Banks are closed).
PUBLISHED = {
    2021: ["2021-01-01", "2021-01-18", "2021-02-15", "2021-05-31", "2021-07-05", "2021-09-06",
           "2021-10-11", "2021-11-11", "2021-11-25"],  # Christmas on a Saturday: not moved
    2022: ["2022-01-17", "2022-02-21", "2022-05-30", "2022-06-20", "2022-07-04", "2022-09-05",
           "2022-10-10", "2022-11-11", "2022-11-24", "2022-12-26"],  # New Year on a Saturday
    2023: ["2023-01-02", "2023-01-16", "2023-02-20", "2023-05-29", "2023-06-19", "2023-07-04",
           "2023-09-04", "2023-10-09", "2023-11-23", "2023-12-25"],  # Veterans Day on a Saturday
    2024: ["2024-01-01", "2024-01-15", "2024-02-19", "2024-05-27", "2024-06-19", "2024-07-04",
           "2024-09-02", "2024-10-14", "2024-11-11", "2024-11-28", "2024-12-25"],
    2025: ["2025-01-01", "2025-01-20", "2025-02-17", "2025-05-26", "2025-06-19", "2025-07-04",
           "2025-09-01", "2025-10-13", "2025-11-11", "2025-11-27", "2025-12-25"],
    2026: ["2026-01-01", "2026-01-19", "2026-02-16", "2026-05-25", "2026-06-19", "2026-09-07",
           "2026-10-12", "2026-11-11", "2026-11-26", "2026-12-25"],  # July 4 on a Saturday
    2027: ["2027-01-01", "2027-01-18", "2027-02-15", "2027-05-31", "2027-07-05", "2027-09-06",
           "2027-10-11", "2027-11-11", "2027-11-25"],  # Juneteenth and Christmas on Saturdays
}  # fmt: skip


@pytest.mark.parametrize("year", sorted(PUBLISHED))
def test_holidays_match_the_published_schedule(year):
    assert cal.federal_reserve_holidays(year) == frozenset(d(x) for x in PUBLISHED[year])


def test_observed_date_rules():
    assert not cal.is_banking_day(d("2023-01-02"))  # New Year's Day on a Sunday → Monday
    assert cal.is_banking_day(d("2021-12-31"))  # New Year's Day 2022 on a Saturday: Friday open
    assert cal.is_banking_day(d("2026-07-03"))  # July 4 on a Saturday: Friday open
    assert not cal.is_banking_day(d("2027-07-05"))  # July 4 on a Sunday → Monday
    assert cal.is_banking_day(d("2021-06-18"))  # Juneteenth not observed before 2022
    assert not cal.is_banking_day(d("2022-06-20"))  # Juneteenth 2022 on a Sunday → Monday
    assert not cal.is_banking_day(d("2026-11-28"))  # Saturday
    assert not cal.is_banking_day(d("2026-11-29"))  # Sunday


def test_banking_day_arithmetic_across_weekends_and_holidays():
    assert cal.next_banking_day(d("2026-11-25")) == d("2026-11-27")  # over Thanksgiving
    assert cal.next_banking_day(d("2026-11-27")) == d("2026-11-30")  # over the weekend
    assert cal.add_banking_days(d("2026-11-25"), 3) == d("2026-12-01")
    assert cal.add_banking_days(d("2026-11-28"), 0) == d("2026-11-30")
    assert cal.add_banking_days(d("2026-11-28"), 1) == d("2026-11-30")
    assert cal.subtract_banking_days(d("2026-12-01"), 3) == d("2026-11-25")
    assert cal.subtract_banking_days(d("2026-11-29"), 0) == d("2026-11-27")
    assert cal.previous_banking_day(d("2027-01-04")) == d("2026-12-31")
    with pytest.raises(ValueError, match="negative"):
        cal.add_banking_days(d("2026-01-05"), -1)


@pytest.mark.parametrize(
    ("accepted", "due"),
    [
        # no weekend or holiday in range: exactly 72 hours (FIX-2)
        ("2026-03-02T10:15:00", "2026-03-05T10:15:00"),
        # across a weekend: Thursday → Tuesday
        ("2026-03-05T10:15:00", "2026-03-10T10:15:00"),
        # across a holiday: Wednesday before Thanksgiving → the Tuesday after
        ("2026-11-25T10:15:00", "2026-12-01T10:15:00"),
        # across Christmas and New Year's Day
        ("2026-12-24T23:59:00", "2026-12-30T23:59:00"),
        ("2026-12-30T08:00:00", "2027-01-05T08:00:00"),
        # accepted on a weekend: counted from 00:00 of Monday
        ("2026-03-07T15:00:00", "2026-03-12T00:00:00"),
        # accepted on a holiday (Thanksgiving): counted from Friday 00:00
        ("2026-11-26T12:00:00", "2026-12-02T00:00:00"),
    ],
)
def test_due_at_cases(accepted, due):
    assert cal.due_at(at(accepted), 3) == at(due)


def test_due_at_without_weekend_is_exactly_72_hours():
    start = at("2026-03-02T06:30:00")
    assert cal.due_at(start, 3) - start == timedelta(hours=72)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        cal.due_at(datetime(2026, 3, 2, 10, 0), 3)
    with pytest.raises(ValueError, match="naive"):
        cal.verification_cutoff(datetime(2026, 3, 2, 10, 0), 3)


def test_cutoff_on_a_banking_day_and_on_a_weekend():
    assert cal.verification_cutoff(at("2026-03-05T10:15:00"), 3) == at("2026-03-02T10:15:00")
    # Saturday: everything due by the end of Friday is due
    assert cal.verification_cutoff(at("2026-03-07T09:00:00"), 3) == datetime.combine(
        d("2026-03-03"), time(23, 59, 59, 999_999), tzinfo=UTC
    )


def test_cutoff_is_utc_whatever_the_offset_of_now():
    from zoneinfo import ZoneInfo

    ny = datetime(2026, 3, 5, 5, 15, tzinfo=ZoneInfo("America/New_York"))  # 10:15 UTC
    assert cal.verification_cutoff(ny, 3) == at("2026-03-02T10:15:00")


_instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2031, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=400, deadline=None)
@given(accepted=_instants, now=_instants, days=st.integers(min_value=0, max_value=6))
def test_cutoff_is_the_exact_inverse_of_due_at(accepted, now, days):
    """The sweep's SQL predicate `created_at <= cutoff` selects exactly the accounts that are due."""
    assert (cal.due_at(accepted, days) <= now) == (accepted <= cal.verification_cutoff(now, days))


@settings(max_examples=300, deadline=None)
@given(accepted=_instants, days=st.integers(min_value=0, max_value=6))
def test_due_at_counts_banking_days_and_lands_on_one(accepted, days):
    due = cal.due_at(accepted, days)
    assert due >= accepted
    assert cal.is_banking_day(due.date())
    start = accepted.date() if cal.is_banking_day(accepted.date()) else cal.next_banking_day(accepted.date())
    between = [
        start + timedelta(days=i)
        for i in range(1, (due.date() - start).days + 1)
        if cal.is_banking_day(start + timedelta(days=i))
    ]
    assert len(between) == days


@settings(max_examples=300, deadline=None)
@given(a=_instants, b=_instants, days=st.integers(min_value=0, max_value=6))
def test_due_at_is_monotone(a, b, days):
    first, second = sorted((a, b))
    assert cal.due_at(first, days) <= cal.due_at(second, days)


@settings(max_examples=300, deadline=None)
@given(day=st.dates(min_value=date(2020, 1, 1), max_value=date(2031, 12, 31)), n=st.integers(0, 30))
def test_add_and_subtract_are_inverse_on_banking_days(day, n):
    banking = cal.add_banking_days(day, 0)
    assert cal.subtract_banking_days(cal.add_banking_days(banking, n), n) == banking


def test_agrees_with_an_independent_implementation_for_fifteen_years():
    """The simulator's calendar (written separately) as an oracle, day by day."""
    day = date(2020, 1, 1)
    while day < date(2035, 1, 1):
        assert cal.is_banking_day(day) == sim_calendar.is_banking_day(day), day
        day += timedelta(days=1)
