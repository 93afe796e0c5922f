"""Retry policy: how many attempts, how long to wait, and whether a wait still fits the deadline.

The waiting itself is always a cancellable `await asyncio.sleep(delay)` in the caller (CRITICAL-1):
nothing here sleeps, shields or swallows cancellation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paycore.platform.resilience.backoff import backoff_delay

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = ["RetryPolicy", "retry_fits"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` in total (first try included); waits from `backoff_delay` (RES-3)."""

    max_attempts: int = 3
    base: float = 0.1
    multiplier: float = 2.0
    cap: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base < 0 or self.cap < 0 or self.multiplier < 1.0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError("invalid backoff parameters")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Wait before retry number `retry` (0 = the wait after the first attempt)."""
        return backoff_delay(
            retry, base=self.base, multiplier=self.multiplier, cap=self.cap, jitter=self.jitter, rand=rand
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.gateway_max_attempts,
            base=settings.retry_base,
            multiplier=settings.retry_multiplier,
            cap=settings.retry_cap,
            jitter=settings.retry_jitter,
        )


def retry_fits(delay: float, remaining: float | None, *, min_attempt: float = 0.0) -> bool:
    """True when waiting `delay` still leaves more than `min_attempt` seconds before the deadline.

    `remaining=None` means no deadline is known: the wait always fits.
    """
    if remaining is None:
        return True
    return remaining - delay > min_attempt
