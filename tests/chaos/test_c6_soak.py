"""Chaos C6: a bounded leak soak. Steady load for `PAYCORE_SOAK_SECONDS` (60 s in CI; `make soak`
runs 30 min), RSS of the worker sampled every 2 s: no growth trend over the last two thirds (a
least-squares slope over that window, bounded), tasks back to baseline, the pool idle, open file
descriptors back to their warm level (the pools keep their connections), and the ledger check at the end."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.chaos import ChaosStack, Load, metric, open_fds, rss_bytes, soak_seconds

pytestmark = [pytest.mark.chaos, pytest.mark.xdist_group("chaos")]

MB = 1024 * 1024


# RSS growth allowed over the last two thirds: the roadmap's 50 MB for the 30 min nightly soak,
# 10 MB for the short CI run (steady state shows well under 1 MB).
def growth_limit(duration: float) -> float:
    return 10 * MB if duration <= 300 else 50 * MB


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((t - mean_t) * (y - mean_y) for t, y in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den if den else 0.0


async def test_c6_bounded_soak(clean_db) -> None:
    duration = soak_seconds(60.0)
    async with ChaosStack(clean_db) as stack:
        assert stack.server is not None
        [worker] = stack.server.worker_pids()
        await asyncio.sleep(1.5)
        before = await stack.metrics()
        fds_before = open_fds(worker)
        fds_warm = 0
        load = Load(stack)
        load.start(concurrency=4)
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        while (now := time.monotonic()) - started < duration:
            samples.append((now - started, float(rss_bytes(worker))))
            if not fds_warm and now - started >= duration / 3:
                fds_warm = open_fds(worker)  # pools and keep-alive connections have grown by now
            await asyncio.sleep(2.0)
        report = await load.stop()
        await asyncio.sleep(2.5)  # idle: the monitors sample again
        idle = await stack.metrics()
        fds_after = open_fds(worker)
        assert await stack.stop_server() == 0
        await stack.reconcile()
        problems = await stack.ledger_problems(report.outcomes)

    window = [(t, y) for t, y in samples if t >= duration / 3]
    growth = slope(window) * (window[-1][0] - window[0][0])
    peak = max(y for _, y in samples)
    print(f"soak {duration:.0f}s: {len(report.outcomes)} sales, RSS peak {peak / MB:.1f} MB", end="")
    print(f", trend {growth / MB:+.2f} MB, fds {fds_before}/{fds_warm}/{fds_after}")
    assert growth < growth_limit(duration), f"RSS grew {growth / MB:.1f} MB over the last two thirds"
    assert peak < 450 * MB
    assert report.statuses()[201] >= duration * 10 and set(report.statuses()) == {201}
    assert metric(idle, "asyncio_tasks") <= metric(before, "asyncio_tasks") + 5
    assert metric(idle, "db_pool_acquired_connections") == 0
    assert metric(idle, "http_requests_in_flight") <= 1  # the scrape itself
    assert abs(fds_after - fds_warm) <= 5
    assert problems == [], problems
