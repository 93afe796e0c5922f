"""The timeout hierarchy (RES-7): one absolute deadline per request, carried in a context variable.

Every layer (service, gateway call, attempt, query) takes `min(its own budget, what remains)`.
Deadlines are absolute `loop.time()` values so they survive awaits unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("paycore_deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The request's budget is spent; nothing more may be started."""


def _now() -> float:
    return asyncio.get_running_loop().time()


def current_deadline() -> float | None:
    return _deadline.get()


def remaining(default: float | None = None) -> float | None:
    """Seconds left before the current deadline (None when no deadline and no default)."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    left = deadline - _now()
    if default is not None:
        left = min(left, default)
    return max(left, 0.0)


def bounded(own: float) -> float:
    """`min(own, remaining)`: the timeout an inner call may use. Raises when nothing remains."""
    left = remaining(own)
    assert left is not None
    if left <= 0:
        raise DeadlineExceeded("deadline exceeded")
    return left


@contextlib.asynccontextmanager
async def budget(seconds: float) -> AsyncIterator[float]:
    """Run the block under `min(seconds, remaining)`; the inner deadline is visible to callees.

    On expiry the block is cancelled and `DeadlineExceeded` (a TimeoutError) is raised.
    """
    now = _now()
    deadline = now + seconds
    outer = _deadline.get()
    if outer is not None:
        deadline = min(deadline, outer)
    token = _deadline.set(deadline)
    try:
        try:
            async with asyncio.timeout_at(deadline):
                yield deadline
        except TimeoutError as exc:
            if isinstance(exc, DeadlineExceeded):
                raise
            raise DeadlineExceeded(f"budget of {seconds:.3f}s exceeded") from exc
    finally:
        _deadline.reset(token)


def set_deadline(deadline: float | None) -> object:
    """Install an absolute deadline (middleware); returns a token for `reset_deadline`."""
    return _deadline.set(deadline)


def reset_deadline(token: object) -> None:
    _deadline.reset(token)  # type: ignore[arg-type]


def detached_context() -> contextvars.Context:
    """A copy of the current context without the deadline, for work that outlives the request
    (background tasks): a task spawned by a request that is being cancelled at its deadline must
    not inherit the spent budget, or its own queries would fail at once."""
    context = contextvars.copy_context()
    context.run(_deadline.set, None)
    return context
