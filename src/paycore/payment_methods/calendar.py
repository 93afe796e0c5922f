"""The US banking calendar for ACH verification (pure: no clock reads, no I/O).

A *banking day* is a Monday-Friday that is not a Federal Reserve holiday. The Federal Reserve's
observed-date rules:

* a holiday that falls on a **Sunday** is observed on the following **Monday**;
* a holiday that falls on a **Saturday** is *not* moved: the Reserve Banks are open on the Friday
  before, so that Friday stays a banking day (and New Year's Day on a Saturday closes nothing in
  the previous year);
* Juneteenth (June 19) is a Reserve Bank holiday from 2022 on.

The verification rule (conventions.md, roadmap FIX-2): a bank account whose pre-note was accepted
at instant `t` is verified at `due_at(t, n)`, `n` banking days later (`PAYCORE_ACH_VERIFICATION_DAYS`,
3 by default). The clock time is kept, so with no weekend or holiday in between it is exactly
`n × 24 h`. A pre-note accepted on a non-banking day counts from the start (00:00 UTC) of the next
banking day. `verification_cutoff(now, n)` is the inverse that the sweep's query uses: an account
is due at `now` if and only if its pre-note was accepted at or before the cutoff.

Everything is UTC (the ACH network's business day is taken as the UTC date: paycore convention).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final

__all__ = [
    "add_banking_days",
    "due_at",
    "federal_reserve_holidays",
    "is_banking_day",
    "next_banking_day",
    "previous_banking_day",
    "subtract_banking_days",
    "verification_cutoff",
]

_FRIDAY: Final = 4
_SATURDAY: Final = 5
_SUNDAY: Final = 6
_LAST_INSTANT: Final = time(23, 59, 59, 999_999)


class _Kind(enum.Enum):
    FIXED = "fixed"  # a calendar date (month, day)
    NTH = "nth"  # the n-th weekday of a month
    LAST = "last"  # the last weekday of a month


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    kind: _Kind
    month: int
    day: int = 0  # FIXED: day of month
    weekday: int = 0  # NTH / LAST: Monday = 0
    nth: int = 0  # NTH: 1-based
    since: int = 0  # first year the holiday is observed


_RULES: Final = (
    _Rule("New Year's Day", _Kind.FIXED, 1, day=1),
    _Rule("Birthday of Martin Luther King, Jr.", _Kind.NTH, 1, weekday=0, nth=3),
    _Rule("Washington's Birthday", _Kind.NTH, 2, weekday=0, nth=3),
    _Rule("Memorial Day", _Kind.LAST, 5, weekday=0),
    _Rule("Juneteenth National Independence Day", _Kind.FIXED, 6, day=19, since=2022),
    _Rule("Independence Day", _Kind.FIXED, 7, day=4),
    _Rule("Labor Day", _Kind.NTH, 9, weekday=0, nth=1),
    _Rule("Columbus Day", _Kind.NTH, 10, weekday=0, nth=2),
    _Rule("Veterans Day", _Kind.FIXED, 11, day=11),
    _Rule("Thanksgiving Day", _Kind.NTH, 11, weekday=3, nth=4),
    _Rule("Christmas Day", _Kind.FIXED, 12, day=25),
)


def _first_of_next_month(year: int, month: int) -> date:
    return date(year + (month == 12), month % 12 + 1, 1)


def _rule_date(rule: _Rule, year: int) -> date:
    if rule.kind is _Kind.FIXED:
        return date(year, rule.month, rule.day)
    if rule.kind is _Kind.NTH:
        first = date(year, rule.month, 1)
        return first + timedelta(days=(rule.weekday - first.weekday()) % 7 + 7 * (rule.nth - 1))
    last = _first_of_next_month(year, rule.month) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - rule.weekday) % 7)


def _observed(day: date) -> date | None:
    """The Federal Reserve's observed date of a holiday falling on `day` (None: not observed)."""
    weekday = day.weekday()
    if weekday == _SUNDAY:
        return day + timedelta(days=1)
    if weekday == _SATURDAY:
        return None
    return day


@lru_cache(maxsize=128)
def federal_reserve_holidays(year: int) -> frozenset[date]:
    """The weekdays of `year` on which the Federal Reserve Banks are closed."""
    closed: set[date] = set()
    for rule in _RULES:
        if year < rule.since:
            continue
        observed = _observed(_rule_date(rule, year))
        if observed is not None:
            closed.add(observed)
    return frozenset(closed)


def is_banking_day(day: date) -> bool:
    return day.weekday() <= _FRIDAY and day not in federal_reserve_holidays(day.year)


def next_banking_day(day: date) -> date:
    """The first banking day strictly after `day`."""
    candidate = day + timedelta(days=1)
    while not is_banking_day(candidate):
        candidate += timedelta(days=1)
    return candidate


def previous_banking_day(day: date) -> date:
    """The last banking day strictly before `day`."""
    candidate = day - timedelta(days=1)
    while not is_banking_day(candidate):
        candidate -= timedelta(days=1)
    return candidate


def add_banking_days(day: date, count: int) -> date:
    """The `count`-th banking day after `day` (Friday + 1 is Monday, Saturday + 1 is Monday too);
    `count` 0 gives `day` itself when it is a banking day, else the next one."""
    if count < 0:
        raise ValueError("count must not be negative")
    if count == 0:
        return day if is_banking_day(day) else next_banking_day(day)
    current = day
    for _ in range(count):
        current = next_banking_day(current)
    return current


def subtract_banking_days(day: date, count: int) -> date:
    """The `count`-th banking day before `day`; `count` 0 gives `day` itself when it is a banking
    day, else the previous one."""
    if count < 0:
        raise ValueError("count must not be negative")
    if count == 0:
        return day if is_banking_day(day) else previous_banking_day(day)
    current = day
    for _ in range(count):
        current = previous_banking_day(current)
    return current


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: pass an aware timestamp")
    return value.astimezone(UTC)


def due_at(accepted_at: datetime, days: int) -> datetime:
    """When an account whose pre-note was accepted at `accepted_at` becomes verified.

    `days` banking days later at the same UTC clock time; from a non-banking day, `days` banking
    days after 00:00 of the next banking day.
    """
    if days < 0:
        raise ValueError("days must not be negative")
    t = _aware_utc(accepted_at)
    if is_banking_day(t.date()):
        return datetime.combine(add_banking_days(t.date(), days), t.timetz())
    start = next_banking_day(t.date())
    return datetime.combine(add_banking_days(start, days), time(0, tzinfo=UTC))


def verification_cutoff(now: datetime, days: int) -> datetime:
    """The latest acceptance instant whose account is due at `now`: for every `t`,
    `due_at(t, days) <= now` exactly when `t <= verification_cutoff(now, days)`."""
    if days < 0:
        raise ValueError("days must not be negative")
    now = _aware_utc(now)
    today = now.date()
    if is_banking_day(today):
        # due dates are banking days: t is due when due_at(t) <= now. The latest such t keeps
        # now's clock time on the banking day `days` before today.
        return datetime.combine(subtract_banking_days(today, days), now.timetz())
    # On a weekend or holiday every account due by the end of the previous banking day is due.
    last_due_day = previous_banking_day(today)
    return datetime.combine(subtract_banking_days(last_due_day, days), _LAST_INSTANT, tzinfo=UTC)
