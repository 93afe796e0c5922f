"""Hot-path cost of tracing (a micro-benchmark with loose bounds; numbers printed with `-s`).

One `Database._run` against an instant fake connection, 20,000 times, in four situations:
tracing off, in an unsampled request (the 90 % case), in a sampled request with no exporter, and
in a sampled request with an exporter."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paycore.platform.db.database import Database, Query, Tier, TierTimeouts
from paycore.platform.observability import tracing

pytestmark = pytest.mark.unit

Q = Query("bench.lookup", Tier.SIMPLE, "SELECT 1")
CALLS = 20_000


class _InstantConnection:
    async def fetchval(self, sql: str, *args: Any, timeout: float) -> int:
        return 1


async def _per_call(db: Database, con: Any) -> float:
    """Median of 5 rounds, seconds per `_run`."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(CALLS // 5):
            await db._run(con, Q, "fetchval", (), None)
        rounds.append((time.perf_counter() - started) / (CALLS // 5))
    return statistics.median(rounds)


async def test_tracing_overhead_per_query() -> None:
    db = Database(pool=None, tiers=TierTimeouts())  # type: ignore[arg-type]
    con = _InstantConnection()
    results: dict[str, float] = {}
    try:
        tracing.shutdown_tracing()
        results["tracing off"] = await _per_call(db, con)
        tracing.configure_tracing(0.1)
        with tracing.server_span("GET /x", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"):
            results["unsampled request"] = await _per_call(db, con)
        tracing.configure_tracing(1.0)
        with tracing.span("payment.sale"):
            results["sampled, no exporter"] = await _per_call(db, con)
        exporter = InMemorySpanExporter()
        tracing.configure_tracing(1.0, exporter=exporter)
        with tracing.span("payment.sale"):
            results["sampled, exported"] = await _per_call(db, con)
        assert len(exporter.get_finished_spans()) == CALLS + 1
    finally:
        tracing.shutdown_tracing()
    base = results["tracing off"]
    for name, seconds in results.items():
        print(f"{name:24s} {seconds * 1e6:7.2f} µs/query  (+{(seconds - base) * 1e6:6.2f} µs)")
    # loose bounds (a shared 2-core box is noisy): the unsampled path adds almost nothing, a
    # recorded span stays far below 1 ms
    assert results["unsampled request"] < 2 * base + 10e-6
    assert results["sampled, exported"] - base < 500e-6


async def test_server_span_cost() -> None:
    tracing.configure_tracing(0.1)
    try:
        started = time.perf_counter()
        for _ in range(CALLS):
            span, tokens = tracing.start_server_span("GET /v1/payments", None, {"http.request.method": "GET"})
            tracing.finish_server_span(span, tokens, 200, "/v1/payments")
        per_request = (time.perf_counter() - started) / CALLS
    finally:
        tracing.shutdown_tracing()
    print(f"server span at ratio 0.1: {per_request * 1e6:.2f} µs/request")
    assert per_request < 500e-6
    await asyncio.sleep(0)
