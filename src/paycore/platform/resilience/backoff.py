"""One pure backoff function (RES-3): exponential, capped, with ± uniform jitter."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.1,
    multiplier: float = 2.0,
    cap: float = 30.0,
    jitter: float = 0.1,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number `attempt` (0 = first retry).

    `min(cap, base * multiplier**attempt)`, then ± uniform `jitter × delay`, never negative.
    A negative attempt is treated as 0.
    """
    attempt = max(attempt, 0)
    try:
        raw = base * (multiplier**attempt)
    except OverflowError:
        raw = cap
    delay = min(cap, raw)
    if jitter:
        delay += delay * jitter * (2.0 * rand() - 1.0)
    return max(delay, 0.0)


def schedule_with_jitter(
    delays: tuple[float, ...], *, jitter: float = 0.1, rand: Callable[[], float] = random.random
) -> list[float]:
    """A fixed schedule (webhooks) with ± jitter applied to each step."""
    return [max(d + d * jitter * (2.0 * rand() - 1.0), 0.0) for d in delays]
