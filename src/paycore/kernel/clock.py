"""Time in UTC. Pure code receives a Clock; only the system clock reads the real time."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real clock; always timezone-aware UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A settable clock for tests and for the simulator."""

    def __init__(self, at: datetime) -> None:
        self._at = ensure_utc(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = ensure_utc(at)

    def advance(self, delta: timedelta) -> None:
        self._at += delta


def now_utc() -> datetime:
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Reject naive datetimes; convert aware ones to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: every timestamp in paycore is timezone-aware UTC")
    return value.astimezone(UTC)


def start_of_day(value: datetime) -> datetime:
    value = ensure_utc(value)
    return datetime.combine(value.date(), time.min, tzinfo=UTC)


def next_day_start(value: datetime) -> datetime:
    return start_of_day(value) + timedelta(days=1)


def day_range(day: date) -> tuple[datetime, datetime]:
    """Half-open UTC range [start, next_start) of a calendar day."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def rfc3339(value: datetime) -> str:
    """RFC 3339 UTC with a Z suffix and millisecond precision."""
    value = ensure_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
