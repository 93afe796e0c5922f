"""RES-M1: serving payments leaves no task behind (100 payments → tasks ≤ baseline + 5)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration


async def test_hundred_payments_leave_the_task_count_at_baseline(live_app, token) -> None:
    live = await live_app()
    tasks = live.container.tasks
    tasks.check_leaks(5)  # the baseline is taken once, after start-up
    baseline = tasks.baseline
    assert baseline is not None
    for batch in range(10):
        replies = await asyncio.gather(*(live.pay(3000 + batch, token) for _ in range(10)))
        assert [r.status for r in replies] == [201] * 10
    await asyncio.sleep(0.1)
    assert len(asyncio.all_tasks()) <= baseline + 5
    assert tasks.check_leaks(5) <= 5
    assert tasks.long_running(0.5) == {}
