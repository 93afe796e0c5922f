"""`paycore bench` end to end, small: the real command starts its simulator and a one-worker server on
the test database, drives a few seconds of sales and writes its JSON report.

Speed is not asserted here; the numbers belong to the benchmark (README, docs/benchmarks.md). What is
asserted is that the measurement works and that the hot path's shape holds: every sale approved,
nothing lost, and about two database round trips per payment (the pending insert with its idempotency
claim, then the outcome with its response and event: design.md §4)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("chaos")]  # runs alone: it measures the machine


async def test_bench_runs_and_reports(clean_db, tmp_path) -> None:
    report_path = tmp_path / "bench.json"
    paycore = Path(sys.executable).parent / "paycore"
    command = [
        str(paycore), "bench", "--duration", "3", "--warmup", "1", "--concurrency", "4", "--workers", "1",
        "--out", str(report_path), "--no-plot", "--results-dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": clean_db}
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())

    assert report["schema"] == "paycore-bench/1"
    results = report["results"]
    assert results["requests"] >= 20 and results["ok"] == results["requests"]
    assert results["outcomes"] == {"201": results["requests"]} and results["error_rate"] == 0.0
    assert results["unfinished"] == 0
    latency = results["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert report["cpu"]["server_ms_per_payment"] > 0
    assert report["memory"]["worker_peak_rss_mb_max"] > 0
    per_payment = report["db_queries"]["by_query_per_payment"]
    assert per_payment["payments.begin"] == pytest.approx(1.0, abs=0.05)
    assert report["db_queries"]["per_payment"] < 2.5, report["db_queries"]
    assert set(report["targets"]) >= {"tps", "p50_ms", "p99_ms", "rss_mb_per_process"}
    assert "throughput" in result.stdout and "payments/s" in result.stdout
