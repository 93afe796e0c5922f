"""Engine fixtures: a simulator engine on a frozen clock (Monday 2 March 2026, 10:00 UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paycore.epx_sim.engine import Engine
from paycore.epx_sim.model import Settings, SimClock

START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> SimClock:
    c = SimClock()
    c.freeze(True)
    c.set(START)
    return c


@pytest.fixture
def engine(clock: SimClock) -> Engine:
    e = Engine(Settings(), seed=1, clock=clock)
    e.last_close = START
    return e
