from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from paycore.benchmark import report, stats
from paycore.benchmark.promtext import Histogram

pytestmark = pytest.mark.unit

CONFIG = {
    "tool": "python",
    "workers": 2,
    "concurrency": 64,
    "rate": None,
    "sim_latency_ms": 20.0,
    "db": "embedded",
}


def _load() -> report.LoadSummary:
    # 10 requests over a 2 s window: 8 approved, one decline, one cut off at the end
    statuses = [201] * 8 + [402, stats.UNFINISHED]
    latencies = [10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 5_000, 9_000_000]
    starts = [0, 100_000, 400_000, 900_000, 1_000_000, 1_200_000, 1_500_000, 1_900_000, 1_950_000, 1_990_000]
    return report.summarize_samples(
        window_s=2.0,
        start_offsets_us=starts,
        latencies_us=latencies,
        statuses=statuses,
        warmup_requests=5,
        warmup_ok=5,
        loadgen_cpu_s=0.5,
        loadgen_rss_kib=40_000,
    )


def _resources(**overrides: Any) -> report.Resources:
    base: dict[str, Any] = {
        "cpu_s": {
            "server": 2.0,
            "server_main": 0.1,
            "server_workers": 1.9,
            "simulator": 0.4,
            "postgres": 0.8,
            "loadgen": 0.5,
        },
        "cpus": 2,
        "machine_busy_pct": 100.0,
        "memory": [
            report.ProcessMemory("server_main", 10, 40_960, 40_000),
            report.ProcessMemory("server_worker", 11, 102_400, 100_000),
            report.ProcessMemory("server_worker", 12, 81_920, None),
            report.ProcessMemory("simulator", 20, 51_200, 50_000),
        ],
        "pool": [report.PoolSample(5, 50, 0), report.PoolSample(20, 50, 2), report.PoolSample(10, 50, 0)],
        "server_http": Histogram(((0.01, 2.0), (0.1, 9.0), (math.inf, 9.0)), 0.45, 9.0),
        "loadavg_before": "0.10 0.20 0.30",
        "worker_threads_cpu_s": {"python": 1.5, "granian-rt": 0.4},
        "db_queries": {"payments.begin": 8.0, "payments.finish": 8.0, "api_keys.touch": 4.0},
        "outbound_connections": {"epx/new": 2.0, "epx/reused": 6.0},
    }
    base.update(overrides)
    return report.Resources(**base)


def _report(**resource_overrides: Any) -> dict[str, Any]:
    return report.build_report(
        config=CONFIG,
        machine={"cpus": 2},
        load=_load(),
        resources=_resources(**resource_overrides),
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:00:30+00:00",
        command="paycore bench",
        notes=["a note"],
    )


def test_summarize_samples_separates_approved_finished_and_unfinished() -> None:
    load = _load()
    assert load.requests == 10
    assert load.ok == 8
    assert load.tps == 4.0
    assert load.unfinished == 1
    assert load.outcomes == {"201": 8, "402": 1, "unfinished": 1}
    assert load.latency_ok is not None and load.latency_ok.count == 8
    assert load.latency_ok.max == 80.0
    assert load.latency_all is not None and load.latency_all.count == 9  # the cut-off one is left out
    assert load.latency_all.min == 5.0


def test_report_results_and_cpu_per_payment() -> None:
    doc = _report()
    assert doc["schema"] == report.SCHEMA
    res = doc["results"]
    assert res["tps"] == 4.0
    assert res["rps"] == 5.0
    assert res["error_rate"] == 0.2
    assert res["latency_ms"]["p50"] == 40.0
    assert res["warmup"] == {"requests": 5, "ok": 5}
    cpu = doc["cpu"]
    assert cpu["server_ms_per_payment"] == 250.0  # 2 s / 8 payments
    assert cpu["server_pct_of_machine"] == 50.0  # 2 s of 2 s × 2 cores
    assert cpu["simulator_ms_per_payment"] == 50.0
    assert cpu["postgres_ms_per_payment"] == 100.0
    assert cpu["loadgen_ms_per_request"] == 50.0
    # 100 % busy, ours: (2 + 0.4 + 0.8 + 0.5) / 4 = 92.5 %
    assert cpu["other_pct_of_machine"] == 7.5
    assert cpu["loadavg_at_start"] == "0.10 0.20 0.30"


def test_report_memory_pool_and_server_histogram() -> None:
    doc = _report()
    mem = doc["memory"]
    assert [w["peak_rss_mb"] for w in mem["server_workers"]] == [100.0, 80.0]
    assert mem["worker_peak_rss_mb_max"] == 100.0
    assert mem["server_main_peak_rss_mb"] == 40.0
    assert mem["simulator_peak_rss_mb"] == 50.0
    pool = doc["db_pool"]
    assert pool["acquired_max"] == 20
    assert pool["utilisation_max"] == 0.4
    assert pool["utilisation_mean"] == pytest.approx((0.1 + 0.4 + 0.2) / 3, abs=1e-3)
    assert pool["waiting_max"] == 2
    http = doc["server_http"]
    assert http["requests"] == 9
    assert http["mean_ms"] == 50.0
    assert doc["timeline"][0]["second"] == 0
    assert sum(row["requests"] for row in doc["timeline"]) == 10
    json.dumps(doc)  # serialisable as is


def test_report_without_pool_or_histogram() -> None:
    doc = _report(pool=[], server_http=None, machine_busy_pct=None)
    assert doc["db_pool"] is None
    assert doc["server_http"] is None
    assert doc["cpu"]["other_pct_of_machine"] is None
    assert doc["targets"]["db_pool_utilisation"]["met"] is None


def test_targets_against_the_release_column() -> None:
    targets = _report()["targets"]
    assert targets["tps"] == {"measured": 4.0, "release_target": 1200.0, "met": False}
    assert targets["rss_mb_per_process"]["met"] is True
    assert targets["p50_ms"]["met"] is False


def test_compare_with_a_previous_report() -> None:
    current = _report()
    previous = json.loads(json.dumps(current))
    previous["results"]["tps"] = 2.0
    previous["results"]["latency_ms"]["p99"] = 160.0
    diff = report.compare(current, previous, "old.json")
    assert diff["file"] == "old.json"
    assert diff["change_pct"]["tps"] == 100.0
    assert diff["change_pct"]["p99_ms"] == -50.0
    assert diff["change_pct"]["server_cpu_ms_per_payment"] == 0.0


def test_find_previous_skips_other_configurations(tmp_path: Path) -> None:
    current = _report()
    other = json.loads(json.dumps(current))
    other["config"]["workers"] = 1
    same = json.loads(json.dumps(current))
    (tmp_path / "20260101T000000Z.json").write_text(json.dumps(same))
    (tmp_path / "20260102T000000Z.json").write_text(json.dumps(other))
    (tmp_path / "20260103T000000Z.json").write_text("not json")
    out = tmp_path / "20260104T000000Z.json"
    out.write_text(json.dumps(current))
    found = report.find_previous(tmp_path, current, exclude=out)
    assert found is not None
    assert found[0].name == "20260101T000000Z.json"
    assert report.find_previous(tmp_path / "missing", current) is None


def test_summary_text_mentions_the_headline_figures() -> None:
    doc = _report()
    doc["previous"] = report.compare(doc, doc, "old.json")
    text = report.summary_text(doc)
    assert "4.0 payments/s" in text
    assert "p50 40.00 ms" in text
    assert "'402': 1" in text
    assert "250.000 ms/payment" in text
    assert "db pool" in text
    assert "old.json" in text


def test_report_db_queries_outbound_and_threads() -> None:
    doc = _report()
    queries = doc["db_queries"]
    assert queries["per_payment"] == 2.5
    assert list(queries["by_query_per_payment"]) == ["payments.begin", "payments.finish", "api_keys.touch"]
    assert queries["by_query_per_payment"]["api_keys.touch"] == 0.5
    assert doc["outbound_connections"] == {"epx": {"new": 2, "reused": 6, "reuse_ratio": 0.75}}
    assert doc["cpu"]["worker_threads_s"] == {"granian-rt": 0.4, "python": 1.5}
    assert "2.5 per payment" in report.summary_text(doc)
    empty = _report(db_queries={}, outbound_connections={})
    assert empty["db_queries"] is None
    assert empty["outbound_connections"] is None
