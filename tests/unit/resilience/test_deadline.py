"""RES-7: the deadline context variable and the budgets nested inside it."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.platform.resilience import deadline as dl
from paycore.platform.tasks import TaskSupervisor

pytestmark = pytest.mark.unit


def test_no_deadline_outside_a_request() -> None:
    assert dl.current_deadline() is None


async def test_remaining_without_deadline_is_the_default() -> None:
    assert dl.remaining() is None
    assert dl.remaining(3.0) == 3.0
    assert dl.bounded(2.5) == 2.5


@settings(max_examples=200, deadline=None)
# `left` of at least 0.5 s: a loaded machine must not spend the whole budget between two lines
@given(own=st.floats(0.001, 120.0), left=st.floats(0.5, 120.0))
def test_inner_timeout_never_exceeds_remaining(own: float, left: float) -> None:
    async def check() -> None:
        now = asyncio.get_running_loop().time()
        token = dl.set_deadline(now + left)
        try:
            inner = dl.bounded(own)
            assert inner <= own
            assert inner <= left + 1e-6
            async with dl.budget(own) as inner_deadline:
                assert inner_deadline <= now + left + 1e-6
                assert dl.current_deadline() == inner_deadline
                nested_left = dl.remaining()
                assert nested_left is not None and nested_left <= min(own, left) + 1e-6
        finally:
            dl.reset_deadline(token)

    asyncio.run(check())


async def test_bounded_refuses_when_nothing_remains() -> None:
    token = dl.set_deadline(asyncio.get_running_loop().time() - 0.01)
    try:
        assert dl.remaining(5.0) == 0.0
        with pytest.raises(dl.DeadlineExceeded):
            dl.bounded(5.0)
    finally:
        dl.reset_deadline(token)


async def test_budget_expiry_cancels_the_block_and_raises_deadline_exceeded() -> None:
    cancelled = False
    started = asyncio.get_running_loop().time()
    with pytest.raises(dl.DeadlineExceeded):
        async with dl.budget(0.05):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled = True
                raise
    assert cancelled
    assert asyncio.get_running_loop().time() - started < 1.0
    assert dl.current_deadline() is None  # restored after the block


async def test_inner_budget_cannot_outlive_the_outer_one() -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        async with dl.budget(0.1), dl.budget(30.0) as inner:
            assert inner <= started + 0.1 + 1e-3
            await asyncio.sleep(10)
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_deadline_is_per_task() -> None:
    """Concurrent requests never see each other's deadlines (context copies per task)."""
    seen: dict[str, float | None] = {}

    async def request(name: str, budget: float) -> None:
        async with dl.budget(budget):
            await asyncio.sleep(0.01)
            seen[name] = dl.remaining()

    await asyncio.gather(request("short", 0.5), request("long", 5.0))
    assert seen["short"] is not None and seen["short"] <= 0.5
    assert seen["long"] is not None and 0.5 < seen["long"] <= 5.0


async def test_detached_context_drops_only_the_deadline() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="-")
    marker.set("kept")
    async with dl.budget(0.5):
        context = dl.detached_context()
    assert context.run(dl.current_deadline) is None
    assert context.run(marker.get) == "kept"


async def test_supervised_task_does_not_inherit_a_spent_request_deadline() -> None:
    """Work spawned by a request (e.g. marking a cancelled payment `unknown`) must outlive the
    request's deadline; inheriting it would make its first query fail at once."""
    tasks = TaskSupervisor()
    seen: list[float | None] = []

    async def background() -> None:
        await asyncio.sleep(0.05)
        seen.append(dl.current_deadline())

    token = dl.set_deadline(asyncio.get_running_loop().time() + 0.01)
    try:
        task = tasks.spawn("test.background", background())
    finally:
        dl.reset_deadline(token)
    await task
    assert seen == [None]
    await tasks.cancel_all()
