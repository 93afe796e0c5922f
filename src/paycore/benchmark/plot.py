"""The latency plot (PNG), drawn only when matplotlib is importable: paycore does not depend on it."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from paycore.benchmark import stats


def _pyplot() -> Any | None:
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except Exception:  # ImportError, or a broken backend: the plot is optional
        return None


def write_plot(
    report: Mapping[str, Any], latencies_us: Sequence[int], statuses: Sequence[int], path: Path
) -> Path | None:
    """Per-second throughput and p50/p99 over the window, and the latency distribution of approved
    sales. Returns the PNG's path, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    timeline = report.get("timeline") or []
    ok_ms = sorted(
        lat / 1000.0 for lat, st in zip(latencies_us, statuses, strict=True) if st == stats.SUCCESS_STATUS
    )
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    try:
        seconds = [row["second"] for row in timeline]
        top.plot(seconds, [row["p50_ms"] for row in timeline], label="p50 (ms)")
        top.plot(seconds, [row["p99_ms"] for row in timeline], label="p99 (ms)")
        top.set_xlabel("second of the measured window")
        top.set_ylabel("latency (ms)")
        twin = top.twinx()
        twin.plot(seconds, [row["ok"] for row in timeline], color="grey", linestyle=":", label="approved/s")
        twin.set_ylabel("approved payments per second")
        top.legend(loc="upper left")
        twin.legend(loc="upper right")
        if ok_ms:
            n = len(ok_ms)
            bottom.plot(ok_ms, [(i + 1) / n * 100.0 for i in range(n)])
            bottom.set_xscale("log")
        bottom.set_xlabel("latency of approved sales (ms, log scale)")
        bottom.set_ylabel("percentile")
        bottom.grid(True, which="both", alpha=0.3)
        cfg = report.get("config") or {}
        res = report.get("results") or {}
        fig.suptitle(
            f"paycore bench: {res.get('tps')} TPS, {cfg.get('workers')} workers, "
            f"concurrency {cfg.get('concurrency')}, simulator {cfg.get('sim_latency_ms')} ms"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        with contextlib.suppress(Exception):
            plt.close(fig)
    return path
