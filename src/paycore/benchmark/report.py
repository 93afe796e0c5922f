"""The bench report: figures from the raw measurements, the JSON document, the comparison with the
previous report and the human summary. Everything here is pure (no I/O but `find_previous`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from paycore.benchmark import stats
from paycore.benchmark.promtext import Histogram

SCHEMA: Final = "paycore-bench/1"
# roadmap §5.1, release column (the last milestone)
RELEASE_TARGETS: Final[Mapping[str, float]] = {
    "tps": 1200.0,
    "p50_ms": 25.0,
    "p99_ms": 80.0,
    "rss_mb_per_process": 300.0,
    "db_pool_utilisation": 0.25,
}
# the configuration keys that must match for two reports to be compared
COMPARABLE_KEYS: Final = ("tool", "workers", "concurrency", "rate", "sim_latency_ms", "db")


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What the client saw in the measured window."""

    window_s: float
    requests: int
    ok: int
    outcomes: dict[str, int]
    latency_ok: stats.LatencySummary | None
    latency_all: stats.LatencySummary | None
    warmup_requests: int = 0
    warmup_ok: int = 0
    behind_schedule: int = 0
    loadgen_cpu_s: float | None = None
    loadgen_rss_kib: int | None = None
    timeline: list[stats.Second] = field(default_factory=list)
    latency_source: str = "client, exact over all samples"

    @property
    def tps(self) -> float:
        return self.ok / self.window_s if self.window_s > 0 else 0.0

    @property
    def unfinished(self) -> int:
        return self.outcomes.get(stats.outcome_name(stats.UNFINISHED), 0)


def summarize_samples(
    *,
    window_s: float,
    start_offsets_us: Sequence[int],
    latencies_us: Sequence[int],
    statuses: Sequence[int],
    warmup_requests: int = 0,
    warmup_ok: int = 0,
    behind_schedule: int = 0,
    loadgen_cpu_s: float | None = None,
    loadgen_rss_kib: int | None = None,
) -> LoadSummary:
    """Client-side figures from the load generator's samples. Latency counts finished requests
    (`latency_ok` the approved ones only); requests cut off at the end count as `unfinished`."""
    finished = [lat for lat, st in zip(latencies_us, statuses, strict=True) if st != stats.UNFINISHED]
    ok_latencies = [lat for lat, st in zip(latencies_us, statuses, strict=True) if st == stats.SUCCESS_STATUS]
    return LoadSummary(
        window_s=window_s,
        requests=len(statuses),
        ok=len(ok_latencies),
        outcomes=stats.outcome_counts(statuses),
        latency_ok=stats.summarize(ok_latencies),
        latency_all=stats.summarize(finished),
        warmup_requests=warmup_requests,
        warmup_ok=warmup_ok,
        behind_schedule=behind_schedule,
        loadgen_cpu_s=loadgen_cpu_s,
        loadgen_rss_kib=loadgen_rss_kib,
        timeline=stats.timeline(start_offsets_us, latencies_us, statuses),
    )


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    role: str  # server_main | server_worker | simulator | loadgen
    pid: int
    peak_rss_kib: int | None  # VmHWM: the high-water mark since the process started
    sampled_max_rss_kib: int | None  # the largest VmRSS seen while sampling the window


@dataclass(frozen=True, slots=True)
class PoolSample:
    acquired: float
    maximum: float
    waiting: float = 0.0

    @property
    def utilisation(self) -> float:
        return self.acquired / self.maximum if self.maximum > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Resources:
    """Server-side measurements over the window."""

    cpu_s: Mapping[str, float]  # role → CPU seconds in the window (server, server_main, ...)
    cpus: int
    machine_busy_pct: float | None = None
    memory: Sequence[ProcessMemory] = ()
    pool: Sequence[PoolSample] = ()
    server_http: Histogram | None = None
    lost_processes: int = 0  # processes that exited during the window (their CPU is not counted)
    loadavg_before: str = ""  # /proc/loadavg when the window opened: other work on the machine
    worker_threads_cpu_s: Mapping[str, float] = field(default_factory=dict)  # thread name → CPU s
    db_queries: Mapping[str, float] = field(default_factory=dict)  # query name → count in the window
    outbound_connections: Mapping[str, float] = field(default_factory=dict)  # client/kind → count


def _mb(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024.0, 1)


def _per(value: float | None, count: int, scale: float = 1000.0) -> float | None:
    if value is None or count <= 0:
        return None
    return round(value / count * scale, 4)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_section(load: LoadSummary, res: Resources) -> dict[str, Any]:
    cpu = res.cpu_s
    window_capacity = load.window_s * res.cpus if load.window_s > 0 else 0.0
    server = cpu.get("server")
    section: dict[str, Any] = {
        "server_s": _round(server),
        "server_ms_per_payment": _per(server, load.ok),
        "server_pct_of_machine": _round(server / window_capacity * 100.0, 1)
        if server is not None and window_capacity
        else None,
        "server_main_s": _round(cpu.get("server_main")),
        "server_workers_s": _round(cpu.get("server_workers")),
        "simulator_s": _round(cpu.get("simulator")),
        "simulator_ms_per_payment": _per(cpu.get("simulator"), load.ok),
        "postgres_s": _round(cpu.get("postgres")),
        "postgres_ms_per_payment": _per(cpu.get("postgres"), load.ok),
        "loadgen_s": _round(cpu.get("loadgen", load.loadgen_cpu_s)),
        "loadgen_ms_per_request": _per(cpu.get("loadgen", load.loadgen_cpu_s), load.requests),
        "coordinator_s": _round(cpu.get("coordinator")),
        "machine_busy_pct": _round(res.machine_busy_pct, 1),
        "other_pct_of_machine": _other_pct(cpu, res.machine_busy_pct, window_capacity),
        "loadavg_at_start": res.loadavg_before or None,
        "processes_lost_in_window": res.lost_processes,
        # the event loop runs in the thread named after the interpreter; granian's Rust runtime
        # threads (HTTP parsing, I/O) carry their own names
        "worker_threads_s": {k: round(v, 3) for k, v in sorted(res.worker_threads_cpu_s.items())},
    }
    return section


def _other_pct(cpu: Mapping[str, float], busy_pct: float | None, capacity: float) -> float | None:
    """The machine's busy time not spent by the bench's own processes (other work on the box)."""
    if busy_pct is None or capacity <= 0:
        return None
    ours = sum(v for k, v in cpu.items() if k not in ("server", "server_main", "server_workers"))
    ours += cpu.get("server", 0.0)
    return round(max(busy_pct - ours / capacity * 100.0, 0.0), 1)


def _memory_section(res: Resources) -> dict[str, Any]:
    workers = [
        {"pid": m.pid, "peak_rss_mb": _mb(m.peak_rss_kib), "sampled_max_rss_mb": _mb(m.sampled_max_rss_kib)}
        for m in res.memory
        if m.role == "server_worker"
    ]
    by_role = {m.role: m for m in res.memory if m.role != "server_worker"}

    def peak(role: str) -> float | None:
        m = by_role.get(role)
        return None if m is None else _mb(m.peak_rss_kib or m.sampled_max_rss_kib)

    worker_peaks = [w["peak_rss_mb"] for w in workers if w["peak_rss_mb"] is not None]
    return {
        "server_workers": workers,
        "worker_peak_rss_mb_max": max(worker_peaks) if worker_peaks else None,
        "server_main_peak_rss_mb": peak("server_main"),
        "simulator_peak_rss_mb": peak("simulator"),
        "loadgen_peak_rss_mb": peak("loadgen"),
    }


def _pool_section(res: Resources) -> dict[str, Any] | None:
    if not res.pool:
        return None
    utilisations = [s.utilisation for s in res.pool]
    return {
        "max_connections": max(s.maximum for s in res.pool),
        "acquired_max": max(s.acquired for s in res.pool),
        "utilisation_max": round(max(utilisations), 3),
        "utilisation_mean": round(sum(utilisations) / len(utilisations), 3),
        "waiting_max": max(s.waiting for s in res.pool),
        "samples": len(res.pool),
    }


def _db_queries_section(res: Resources, ok: int) -> dict[str, Any] | None:
    if not res.db_queries or ok <= 0:
        return None
    total_queries = sum(res.db_queries.values())
    return {
        "per_payment": round(total_queries / ok, 3),
        "by_query_per_payment": {
            name: round(count / ok, 3)
            for name, count in sorted(res.db_queries.items(), key=lambda kv: -kv[1])
        },
        "note": "from db_query_duration_seconds_count over the window (all routes and background tasks)",
    }


def _outbound_section(res: Resources) -> dict[str, Any] | None:
    if not res.outbound_connections:
        return None
    clients: dict[str, dict[str, float]] = {}
    for key, count in res.outbound_connections.items():
        client, _, kind = key.partition("/")
        clients.setdefault(client, {})[kind] = count
    out: dict[str, Any] = {}
    for client, kinds in sorted(clients.items()):
        new, reused = kinds.get("new", 0.0), kinds.get("reused", 0.0)
        out[client] = {
            "new": int(new),
            "reused": int(reused),
            "reuse_ratio": round(reused / (new + reused), 4) if new + reused else None,
        }
    return out


def _server_http_section(hist: Histogram | None) -> dict[str, Any] | None:
    if hist is None or hist.count <= 0:
        return None

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 2)

    return {
        "requests": int(hist.count),
        "mean_ms": ms(hist.mean()),
        "p50_ms_estimate": ms(hist.quantile(0.5)),
        "p90_ms_estimate": ms(hist.quantile(0.9)),
        "p99_ms_estimate": ms(hist.quantile(0.99)),
        "note": "from http_request_duration_seconds buckets (linear interpolation), POST /v1/payments",
    }


def _targets(
    results: Mapping[str, Any], memory: Mapping[str, Any], pool: Mapping[str, Any] | None
) -> dict[str, Any]:
    latency = results.get("latency_ms") or {}
    measured: dict[str, float | None] = {
        "tps": results.get("tps"),
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "rss_mb_per_process": memory.get("worker_peak_rss_mb_max"),
        "db_pool_utilisation": pool.get("utilisation_max") if pool else None,
    }
    out: dict[str, Any] = {}
    for key, target in RELEASE_TARGETS.items():
        value = measured[key]
        met = None if value is None else (value >= target if key == "tps" else value <= target)
        out[key] = {"measured": value, "release_target": target, "met": met}
    return out


def build_report(
    *,
    config: Mapping[str, Any],
    machine: Mapping[str, Any],
    load: LoadSummary,
    resources: Resources,
    started_at: str,
    finished_at: str,
    command: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "window_s": round(load.window_s, 3),
        "requests": load.requests,
        "ok": load.ok,
        "tps": round(load.tps, 1),
        "rps": round(load.requests / load.window_s, 1) if load.window_s > 0 else 0.0,
        "outcomes": load.outcomes,
        "error_rate": round(1.0 - load.ok / load.requests, 5) if load.requests else None,
        "latency_ms": load.latency_ok.as_dict() if load.latency_ok else None,
        "latency_all_ms": load.latency_all.as_dict() if load.latency_all else None,
        "latency_source": load.latency_source,
        "warmup": {"requests": load.warmup_requests, "ok": load.warmup_ok},
        "unfinished": load.unfinished,
        "behind_schedule": load.behind_schedule,
    }
    memory = _memory_section(resources)
    pool = _pool_section(resources)
    return {
        "schema": SCHEMA,
        "started_at": started_at,
        "finished_at": finished_at,
        "command": command,
        "machine": dict(machine),
        "config": dict(config),
        "results": results,
        "cpu": _cpu_section(load, resources),
        "memory": memory,
        "db_pool": pool,
        "server_http": _server_http_section(resources.server_http),
        "db_queries": _db_queries_section(resources, load.ok),
        "outbound_connections": _outbound_section(resources),
        "targets": _targets(results, memory, pool),
        "timeline": [
            {
                "second": s.second,
                "requests": s.requests,
                "ok": s.ok,
                "p50_ms": round(s.p50_ms, 2),
                "p99_ms": round(s.p99_ms, 2),
            }
            for s in load.timeline
        ],
        "notes": list(notes),
    }


# --- comparison with the previous report -----------------------------------------------------------
def comparable(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    ca, cb = a.get("config") or {}, b.get("config") or {}
    return a.get("schema") == b.get("schema") and all(ca.get(k) == cb.get(k) for k in COMPARABLE_KEYS)


def _change_pct(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0:
        return None
    return round((new - old) / old * 100.0, 1)


def compare(current: Mapping[str, Any], previous: Mapping[str, Any], previous_name: str) -> dict[str, Any]:
    """Relative change of the headline figures against an earlier comparable report."""

    def pick(report: Mapping[str, Any], *path: str) -> float | None:
        node: Any = report
        for key in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(key)
        return float(node) if isinstance(node, int | float) else None

    figures = {
        "tps": ("results", "tps"),
        "p50_ms": ("results", "latency_ms", "p50"),
        "p99_ms": ("results", "latency_ms", "p99"),
        "server_cpu_ms_per_payment": ("cpu", "server_ms_per_payment"),
        "worker_peak_rss_mb": ("memory", "worker_peak_rss_mb_max"),
    }
    return {
        "file": previous_name,
        "started_at": previous.get("started_at"),
        "change_pct": {
            name: _change_pct(pick(current, *path), pick(previous, *path)) for name, path in figures.items()
        },
        "previous": {name: pick(previous, *path) for name, path in figures.items()},
    }


def find_previous(
    directory: Path, current: Mapping[str, Any], exclude: Path | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest earlier report in `directory` with a comparable configuration."""
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("*.json"), reverse=True):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and comparable(current, report):
            return path, report
    return None


# --- the human summary -----------------------------------------------------------------------------
def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def summary_text(report: Mapping[str, Any]) -> str:
    cfg = report["config"]
    res = report["results"]
    cpu = report["cpu"]
    mem = report["memory"]
    lat = res.get("latency_ms") or {}
    pool = report.get("db_pool") or {}
    http = report.get("server_http") or {}
    load_shape = f"rate {cfg.get('rate')}/s" if cfg.get("rate") else f"concurrency {cfg.get('concurrency')}"
    lines = [
        f"paycore bench — {cfg.get('tool')} load, {load_shape}, {cfg.get('workers')} worker(s), "
        f"simulator {cfg.get('sim_latency_ms')} ms, db {cfg.get('db')}, "
        f"{res['window_s']:.1f} s measured after {cfg.get('warmup')} s warm-up",
        f"  throughput   {res['tps']:,.1f} payments/s  ({res['ok']} approved of {res['requests']} requests)",
        f"  latency      p50 {_fmt(lat.get('p50'), ' ms', 2)}  p90 {_fmt(lat.get('p90'), ' ms', 2)}  "
        f"p99 {_fmt(lat.get('p99'), ' ms', 2)}  max {_fmt(lat.get('max'), ' ms', 2)}  "
        "(approved, client side)",
    ]
    errors = {k: v for k, v in res["outcomes"].items() if k != str(stats.SUCCESS_STATUS)}
    lines.append(f"  errors       {errors if errors else 'none'}")
    lines.append(
        f"  server CPU   {_fmt(cpu.get('server_ms_per_payment'), ' ms', 3)}/payment, "
        f"{_fmt(cpu.get('server_pct_of_machine'), ' %')} of the machine "
        f"(simulator {_fmt(cpu.get('simulator_ms_per_payment'), ' ms', 3)}/payment, "
        f"postgres {_fmt(cpu.get('postgres_ms_per_payment'), ' ms', 3)}/payment, "
        f"load generator {_fmt(cpu.get('loadgen_ms_per_request'), ' ms', 3)}/request); "
        f"machine busy {_fmt(cpu.get('machine_busy_pct'), ' %')} "
        f"(other work {_fmt(cpu.get('other_pct_of_machine'), ' %')})"
    )
    workers = ", ".join(_fmt(w["peak_rss_mb"], " MB") for w in mem.get("server_workers", []))
    lines.append(
        f"  memory       worker peak RSS {workers or 'n/a'}; "
        f"main {_fmt(mem.get('server_main_peak_rss_mb'), ' MB')}; "
        f"simulator {_fmt(mem.get('simulator_peak_rss_mb'), ' MB')}"
    )
    if pool:
        lines.append(
            f"  db pool      max utilisation {pool['utilisation_max']:.0%} "
            f"({_fmt(pool['acquired_max'])} of {_fmt(pool['max_connections'])}), "
            f"mean {pool['utilisation_mean']:.0%}, "
            f"max waiting {_fmt(pool['waiting_max'])}"
        )
    if http:
        lines.append(
            f"  server-side  mean {_fmt(http.get('mean_ms'), ' ms', 2)}, "
            f"p50≈{_fmt(http.get('p50_ms_estimate'), ' ms', 2)}, "
            f"p99≈{_fmt(http.get('p99_ms_estimate'), ' ms', 2)} (http_request_duration_seconds)"
        )
    queries = report.get("db_queries") or {}
    if queries:
        top = ", ".join(f"{k} {v}" for k, v in list(queries["by_query_per_payment"].items())[:4])
        lines.append(f"  db queries   {queries['per_payment']} per payment ({top})")
    overhead = report.get("framework_overhead") or {}
    if overhead:
        olat = overhead.get("latency_ms") or {}
        lines.append(
            f"  overhead     {overhead['route']}: "
            f"{_fmt(overhead.get('server_cpu_ms_per_request'), ' ms', 3)} "
            f"server CPU/request at {_fmt(overhead.get('rps'))} req/s, p50 {_fmt(olat.get('p50'), ' ms', 2)}"
        )
    targets = report.get("targets") or {}
    met = [f"{k} {'✓' if v['met'] else '✗'}" for k, v in targets.items() if v.get("met") is not None]
    if met:
        lines.append(f"  release targets (roadmap §5.1): {', '.join(met)}")
    previous = report.get("previous")
    if previous:
        changes = ", ".join(f"{k} {v:+.1f} %" for k, v in previous["change_pct"].items() if v is not None)
        lines.append(f"  vs previous  {previous['file']}: {changes or 'no comparable figures'}")
    return "\n".join(lines)
