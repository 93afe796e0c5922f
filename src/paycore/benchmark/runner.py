"""One benchmark run: start the stack, drive the load, watch the processes, write the report."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from paycore.benchmark import procfs, promtext
from paycore.benchmark.loadgen import LoadConfig, LoadResult
from paycore.benchmark.report import (
    LoadSummary,
    PoolSample,
    ProcessMemory,
    Resources,
    build_report,
    compare,
    find_previous,
    summarize_samples,
    summary_text,
)
from paycore.benchmark.stack import SALE_AMOUNT, Stack, StackOptions, _pdeathsig, start_stack

RSS_SAMPLE_INTERVAL = 0.5


class BenchError(RuntimeError):
    """The run could not be completed; the message says why."""


@dataclass
class BenchOptions:
    tool: str = "python"  # python | wrk
    workers: int = 2
    concurrency: int = 64
    rate: float | None = None
    duration: float = 20.0
    warmup: float = 3.0
    requests: int | None = None
    sim_latency_ms: float = 20.0
    db_max_conns: int | None = None  # None: budget // workers, at most 25
    db_conn_budget: int = 50
    timeout: float = 30.0
    scrape_interval: float = 1.0
    out: Path | None = None
    results_dir: Path = Path("bench/results")
    pg_dir: Path = Path(".paycore/bench")
    extra_env: dict[str, str] = field(default_factory=dict)
    plot: bool = True
    keep_logs: bool = False
    py_spy: str | None = None  # path of a py-spy binary: record the workers during the window
    overhead: float = 0.0  # seconds of the GET /healthz probe after the main run (0: none)
    wait_idle: float = 0.0  # seconds to wait at most for the machine to be quiet before starting
    idle_threshold_pct: float = 15.0
    command: str = ""

    def pool_size(self) -> int:
        if self.db_max_conns is not None:
            return self.db_max_conns
        return max(1, min(25, self.db_conn_budget // max(self.workers, 1)))


def _log(message: str) -> None:
    sys.stderr.write(f"paycore bench: {message}\n")
    sys.stderr.flush()


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        meminfo = Path("/proc/meminfo").read_text()
        kib = procfs.parse_status_kib(meminfo, "MemTotal")
        info["mem_total_mb"] = None if kib is None else round(kib / 1024)
    from paycore import __version__

    info["paycore_version"] = __version__
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if done.returncode == 0:
            info["git_commit"] = done.stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            # uncommitted changes to tracked files: the numbers are not those of git_commit alone
            info["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    return info


class Monitor:
    """CPU snapshots at the window's edges; RSS and pool samples in between."""

    def __init__(self, stack: Stack, session: aiohttp.ClientSession, scrape_interval: float) -> None:
        self.stack = stack
        self.session = session
        self.scrape_interval = scrape_interval
        self.loadgen_pid: int | None = None
        self.measuring = False
        self.rss_max: dict[int, int] = {}
        self.pool: list[PoolSample] = []
        self.route: str | None = None

    def roles(self) -> dict[str, list[int]]:
        server = self.stack.server_pids()
        roles = {
            "server_main": server[:1],
            "server_workers": server[1:],
            "simulator": [self.stack.sim.pid] if self.stack.sim is not None else [],
            "postgres": self.stack.postgres_pids(),
        }
        if self.loadgen_pid is not None:
            roles["loadgen"] = [self.loadgen_pid]
        return roles

    def snapshot(self) -> tuple[dict[str, dict[int, float]], procfs.MachineCpu | None]:
        return (
            {role: procfs.cpu_seconds(pids) for role, pids in self.roles().items()},
            procfs.read_machine_cpu(),
        )

    async def scrape(self) -> list[promtext.Sample]:
        try:
            async with self.session.get(self.stack.base_url + "/metrics") as resp:
                if resp.status != 200:
                    return []
                return promtext.parse(await resp.text())
        except (aiohttp.ClientError, TimeoutError):
            return []

    def http_histogram(self, samples: list[promtext.Sample]) -> promtext.Histogram | None:
        if self.route is None:
            for s in samples:
                route = s.labels.get("route", "")
                if (
                    s.name == "http_request_duration_seconds_bucket"
                    and route.startswith("/v1/payments")
                    and s.labels.get("method") == "POST"
                ):
                    self.route = route
                    break
        if self.route is None:
            return None
        return promtext.histogram(samples, "http_request_duration_seconds", route=self.route, method="POST")

    async def sample_rss(self) -> None:
        while True:
            for pids in self.roles().values():
                for pid in pids:
                    rss = procfs.read_status_kib(pid, "VmRSS")
                    if rss is not None and self.measuring:
                        self.rss_max[pid] = max(self.rss_max.get(pid, 0), rss)
            await asyncio.sleep(RSS_SAMPLE_INTERVAL)

    async def sample_pool(self) -> None:
        while True:
            await asyncio.sleep(self.scrape_interval)
            if not self.measuring:
                continue
            samples = await self.scrape()
            acquired = promtext.total(samples, "db_pool_acquired_connections")
            maximum = promtext.total(samples, "db_pool_max_connections")
            waiting = promtext.total(samples, "db_pool_waiting_acquires") or 0.0
            if acquired is not None and maximum:
                self.pool.append(PoolSample(acquired=acquired, maximum=maximum, waiting=waiting))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Window:
    """The CPU counters and the server's histogram at the two edges of the measured window."""

    cpu_before: dict[str, dict[int, float]] = field(default_factory=dict)
    cpu_after: dict[str, dict[int, float]] = field(default_factory=dict)
    machine_before: procfs.MachineCpu | None = None
    machine_after: procfs.MachineCpu | None = None
    http_before: promtext.Histogram | None = None
    http_after: promtext.Histogram | None = None
    threads_before: dict[int, dict[int, tuple[str, float]]] = field(default_factory=dict)
    threads_after: dict[int, dict[int, tuple[str, float]]] = field(default_factory=dict)
    metrics_before: list[promtext.Sample] = field(default_factory=list)
    metrics_after: list[promtext.Sample] = field(default_factory=list)
    loadgen_cpu_s: float | None = None  # when the generator's CPU is not read from /proc (wrk)
    own_cpu_before: float = 0.0
    own_cpu_after: float = 0.0
    loadavg_before: str = ""

    async def open(self, monitor: Monitor) -> None:
        self.loadavg_before = procfs.read_loadavg()
        self.own_cpu_before = _own_cpu()
        self.cpu_before, self.machine_before = monitor.snapshot()
        self.threads_before = {
            pid: procfs.thread_cpu_seconds(pid) for pid in self.cpu_before["server_workers"]
        }
        monitor.measuring = True
        self.metrics_before = await monitor.scrape()
        self.http_before = monitor.http_histogram(self.metrics_before)

    async def close(self, monitor: Monitor) -> None:
        self.cpu_after, self.machine_after = monitor.snapshot()
        self.own_cpu_after = _own_cpu()
        self.threads_after = {pid: procfs.thread_cpu_seconds(pid) for pid in self.cpu_after["server_workers"]}
        monitor.measuring = False
        self.metrics_after = await monitor.scrape()
        self.http_after = monitor.http_histogram(self.metrics_after)

    def worker_threads(self) -> dict[str, float]:
        """CPU seconds of the workers' threads in the window, by thread name (all workers)."""
        out: dict[str, float] = {}
        for pid, after in self.threads_after.items():
            for name, seconds in procfs.threads_by_name(self.threads_before.get(pid, {}), after).items():
                out[name] = out.get(name, 0.0) + seconds
        return out

    def counters(self, name: str, *labels: str) -> dict[str, float]:
        """How much the counter `name` grew in the window, by `labels`."""
        return promtext.counter_delta(
            promtext.by_label(self.metrics_before, name, *labels),
            promtext.by_label(self.metrics_after, name, *labels),
        )

    def cpu_by_role(self) -> tuple[dict[str, float], int]:
        out: dict[str, float] = {}
        lost = 0
        for role, after in self.cpu_after.items():
            before = self.cpu_before.get(role, {})
            out[role] = procfs.cpu_delta(before, after)
            lost += len(set(before) - set(after))
        if "server_main" in out or "server_workers" in out:
            out["server"] = out.get("server_main", 0.0) + out.get("server_workers", 0.0)
        if not self.cpu_after.get("postgres"):
            out.pop("postgres", None)
        if self.loadgen_cpu_s is not None:
            out["loadgen"] = self.loadgen_cpu_s
        out["coordinator"] = max(self.own_cpu_after - self.own_cpu_before, 0.0)
        return out, lost

    def machine_busy_pct(self) -> float | None:
        if self.machine_before is None or self.machine_after is None:
            return None
        total = self.machine_after.total - self.machine_before.total
        busy = self.machine_after.busy - self.machine_before.busy
        return busy / total * 100.0 if total > 0 else None

    def http_delta(self) -> promtext.Histogram | None:
        if self.http_after is None:
            return None
        if self.http_before is None:
            return self.http_after
        return self.http_after.minus(self.http_before)


def sale_body(token: str) -> bytes:
    return json.dumps(
        {"amount": SALE_AMOUNT, "currency": "USD", "token": token}, separators=(",", ":")
    ).encode()


async def _drive_python(
    opts: BenchOptions,
    stack: Stack,
    monitor: Monitor,
    window: Window,
    config: LoadConfig | None = None,
    name: str = "loadgen",
) -> tuple[LoadSummary, LoadResult]:
    run_dir = stack.options.run_dir
    config = config or LoadConfig(
        base_url=stack.base_url,
        body=sale_body(stack.token),
        api_key=stack.api_key,
        key_prefix=f"bench-{uuid.uuid4().hex[:12]}",
        concurrency=opts.concurrency,
        rate=opts.rate,
        duration=opts.duration,
        warmup=opts.warmup,
        requests=opts.requests,
        timeout=opts.timeout,
        drain_timeout=min(opts.timeout, 10.0),
    )
    config_path = run_dir / f"{name}-config.json"
    result_path = run_dir / f"{name}-result.json"
    config_path.write_bytes(msgspec.json.encode(config))
    log = stack.log_file(f"{name}.log")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paycore.benchmark.loadgen",
        str(config_path),
        str(result_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        start_new_session=True,
        preexec_fn=_pdeathsig,
    )
    monitor.loadgen_pid = proc.pid
    bound = config.warmup + config.duration + config.drain_timeout + 60.0
    deadline = time.monotonic() + bound
    profiler: asyncio.subprocess.Process | None = None
    try:
        assert proc.stdout is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"the load generator did not finish within {bound:.0f} s")
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=remaining)
            if not line:
                break
            try:
                event = json.loads(line).get("event")
            except (ValueError, AttributeError):
                continue
            if event == "measure_start":
                await window.open(monitor)
                if name == "loadgen":
                    profiler = await _start_profiler(opts, stack, monitor)
                _log(f"warm-up done; measuring for {config.duration:g} s")
            elif event == "measure_end":
                await window.close(monitor)
                _log("window closed; draining in-flight requests")
        code = await asyncio.wait_for(proc.wait(), timeout=max(deadline - time.monotonic(), 1.0))
        if code != 0:
            raise BenchError(f"the load generator exited with {code} (see {run_dir / 'loadgen.log'})")
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=10)
        if profiler is not None:
            await _stop_profiler(profiler)
    result = msgspec.json.decode(result_path.read_bytes(), type=LoadResult)
    return summarize_samples(
        window_s=result.window_s,
        start_offsets_us=result.start_offsets_us,
        latencies_us=result.latencies_us,
        statuses=result.statuses,
        warmup_requests=result.warmup_requests,
        warmup_ok=result.warmup_ok,
        behind_schedule=result.behind_schedule,
        loadgen_cpu_s=result.cpu_s,
        loadgen_rss_kib=result.rss_peak_kib,
    ), result


async def _overhead_probe(opts: BenchOptions, stack: Stack, monitor: Monitor) -> dict[str, Any]:
    """GET /healthz under the same concurrency: the cost of the HTTP server, routing, the request
    envelope, the compression middleware and JSON encoding, without auth, database or gateway."""
    window = Window()
    config = LoadConfig(
        base_url=stack.base_url,
        path="/healthz",
        method="GET",
        key_prefix="overhead",
        concurrency=opts.concurrency,
        duration=opts.overhead,
        warmup=1.0,
        timeout=opts.timeout,
        drain_timeout=5.0,
    )
    _log(f"framework overhead probe: GET /healthz for 1 s warm-up + {opts.overhead:g} s")
    load, _ = await _drive_python(opts, stack, monitor, window, config, name="overhead")
    cpu, _lost = window.cpu_by_role()
    server = cpu.get("server")
    return {
        "route": "GET /healthz",
        "window_s": round(load.window_s, 3),
        "requests": load.requests,
        "rps": round(load.requests / load.window_s, 1) if load.window_s > 0 else None,
        "outcomes": load.outcomes,
        "server_cpu_ms_per_request": round(server / load.requests * 1000.0, 4)
        if server is not None and load.requests
        else None,
        "worker_threads_s": {k: round(v, 3) for k, v in sorted(window.worker_threads().items())},
        "latency_ms": load.latency_all.as_dict() if load.latency_all else None,
        "note": "HTTP server + routing + middleware + JSON encoding per request (no auth, DB or gateway); "
        "server CPU per request is the framework overhead of one request",
    }


async def _start_profiler(
    opts: BenchOptions, stack: Stack, monitor: Monitor
) -> asyncio.subprocess.Process | None:
    """`py-spy record` of the first worker for the window (when --py-spy is given)."""
    if not opts.py_spy:
        return None
    workers = monitor.roles()["server_workers"]
    if not workers:
        return None
    out = stack.options.run_dir / f"profile-worker-{workers[0]}.speedscope.json"
    _log(f"profiling worker {workers[0]} with py-spy → {out}")
    return await asyncio.create_subprocess_exec(
        opts.py_spy,
        "record",
        "--pid",
        str(workers[0]),
        "--duration",
        str(max(int(opts.duration), 1)),
        "--rate",
        "200",
        "--format",
        "speedscope",
        "--output",
        str(out),
        "--nonblocking",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stack.log_file("py-spy.log"),
    )


async def _stop_profiler(proc: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=10)


def _memory(stack: Stack, monitor: Monitor, load: LoadSummary) -> list[ProcessMemory]:
    out: list[ProcessMemory] = []
    for role, pids in monitor.roles().items():
        if role == "postgres":
            continue
        for pid in pids:
            label = "server_worker" if role == "server_workers" else role
            out.append(
                ProcessMemory(
                    role=label,
                    pid=pid,
                    peak_rss_kib=procfs.read_status_kib(pid, "VmHWM"),
                    sampled_max_rss_kib=monitor.rss_max.get(pid),
                )
            )
    if monitor.loadgen_pid is not None and not any(m.role == "loadgen" for m in out):
        out.append(ProcessMemory("loadgen", monitor.loadgen_pid, load.loadgen_rss_kib, None))
    return out


def _config(opts: BenchOptions, stack: Stack) -> dict[str, Any]:
    return {
        "tool": opts.tool,
        "workers": opts.workers,
        "concurrency": opts.concurrency,
        "rate": opts.rate,
        "duration": opts.duration,
        "warmup": opts.warmup,
        "requests": opts.requests,
        "sim_latency_ms": opts.sim_latency_ms,
        "db": stack.db_kind,
        "db_max_conns_per_worker": opts.pool_size(),
        "db_conn_budget": opts.db_conn_budget,
        "request_timeout_s": opts.timeout,
        "sale": {"amount": SALE_AMOUNT, "currency": "USD", "method": "card token (Storage BRIC)"},
        "server_env": {k: v for k, v in sorted(opts.extra_env.items())},
    }


def _notes(opts: BenchOptions, load: LoadSummary, report_cpu: Mapping[str, Any], lost: int) -> list[str]:
    cpus = os.cpu_count() or 1
    notes = [
        f"Everything runs on this {cpus}-core machine: the load generator shares the cores with the server, "
        f"the simulator and PostgreSQL (it used {report_cpu.get('loadgen_s')} CPU-s in the window).",
        f"Every sale waits {opts.sim_latency_ms:g} ms in the EPX simulator: "
        "that is the floor of its latency.",
        "Server CPU is user+system time of the granian main process and its workers (/proc/<pid>/stat) "
        "over the measured window, divided by approved payments.",
        "The merchant rate limit is lifted for the run (one merchant sends all the load).",
        "DB pool gauges are refreshed by the server every 0.5 s and scraped from /metrics every "
        f"{opts.scrape_interval:g} s during the window (the scrape itself costs a little server CPU).",
    ]
    if load.unfinished:
        notes.append(
            f"{load.unfinished} requests were still unanswered after the drain timeout and were cut."
        )
    if lost:
        notes.append(f"{lost} processes exited during the window; their CPU time is not counted.")
    if opts.rate and load.behind_schedule:
        notes.append(
            f"{load.behind_schedule} sends started > 5 ms after their slot: the generator or the "
            "in-flight cap (--concurrency) could not keep the rate; latency counts from the scheduled time."
        )
    return notes


def _out_path(opts: BenchOptions) -> Path:
    if opts.out is not None:
        return opts.out
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = opts.results_dir / f"{stamp}.json"
    n = 1
    while path.exists():
        path = opts.results_dir / f"{stamp}-{n}.json"
        n += 1
    return path


async def wait_for_quiet_machine(
    max_wait: float, threshold_pct: float, sample_s: float = 2.0
) -> float | None:
    """Wait (at most `max_wait` s) until the machine's busy share over `sample_s` is under
    `threshold_pct`; returns the last busy share seen (None when /proc/stat is unreadable)."""
    deadline = time.monotonic() + max_wait
    busy: float | None = None
    while True:
        before = procfs.read_machine_cpu()
        await asyncio.sleep(sample_s)
        after = procfs.read_machine_cpu()
        if before is None or after is None or after.total <= before.total:
            return None
        busy = (after.busy - before.busy) / (after.total - before.total) * 100.0
        if busy < threshold_pct or time.monotonic() >= deadline:
            return busy
        _log(f"machine {busy:.0f} % busy with other work; waiting for it to quiet down")


async def run_bench(opts: BenchOptions) -> tuple[dict[str, Any], Path]:
    """Run one benchmark; returns the report and where it was written."""
    idle_busy = None
    if opts.wait_idle > 0:
        idle_busy = await wait_for_quiet_machine(opts.wait_idle, opts.idle_threshold_pct)
    started_at = _now_iso()
    run_dir = Path(tempfile.mkdtemp(prefix="paycore-bench-"))
    stack_opts = StackOptions(
        workers=opts.workers,
        sim_latency_ms=opts.sim_latency_ms,
        db_max_conns=opts.pool_size(),
        db_conn_budget=opts.db_conn_budget,
        pg_dir=opts.pg_dir,
        run_dir=run_dir,
        extra_env=dict(opts.extra_env),
    )
    failed = True
    stack: Stack | None = None
    samples: LoadResult | None = None
    overhead: dict[str, Any] | None = None
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    if current is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, current.cancel)
    try:
        stack = await start_stack(stack_opts)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            monitor = Monitor(stack, session, opts.scrape_interval)
            window = Window()
            background = [
                asyncio.create_task(monitor.sample_rss()),
                asyncio.create_task(monitor.sample_pool()),
            ]
            try:
                _log(f"driving load with {opts.tool} for {opts.warmup:g} s warm-up + {opts.duration:g} s")
                if opts.tool == "wrk":
                    from paycore.benchmark.wrk import drive_wrk

                    load = await drive_wrk(opts, stack, monitor, window)
                else:
                    load, samples = await _drive_python(opts, stack, monitor, window)
                memory = _memory(stack, monitor, load)
                pool_samples = list(monitor.pool)
                if opts.overhead > 0:
                    overhead = await _overhead_probe(opts, stack, monitor)
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
        cpu, lost = window.cpu_by_role()
        resources = Resources(
            loadavg_before=window.loadavg_before,
            cpu_s=cpu,
            cpus=os.cpu_count() or 1,
            machine_busy_pct=window.machine_busy_pct(),
            memory=memory,
            pool=pool_samples,
            server_http=window.http_delta(),
            worker_threads_cpu_s=window.worker_threads(),
            db_queries=window.counters("db_query_duration_seconds_count", "query"),
            outbound_connections=window.counters("outbound_connections_total", "client", "kind"),
            lost_processes=lost,
        )
        config = _config(opts, stack)
        report = build_report(
            config=config,
            machine=machine_info(),
            load=load,
            resources=resources,
            started_at=started_at,
            finished_at=_now_iso(),
            command=opts.command,
        )
        report["notes"] = _notes(opts, load, report["cpu"], lost)
        report["framework_overhead"] = overhead
        if idle_busy is not None:
            report["cpu"]["machine_busy_pct_before_start"] = round(idle_busy, 1)
        failed = False
    finally:
        if stack is not None:
            _log("stopping the stack")
            await asyncio.to_thread(stack.close)
        if failed or opts.keep_logs:
            _log(f"logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    out = _out_path(opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = find_previous(out.parent, report, exclude=out)
    if previous is not None:
        report["previous"] = compare(report, previous[1], previous[0].name)
    if opts.plot and samples is not None:
        from paycore.benchmark.plot import write_plot

        png = write_plot(report, samples.latencies_us, samples.statuses, out.with_suffix(".png"))
        report["plot"] = str(png) if png else None
    if opts.keep_logs:
        report["logs"] = str(run_dir)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report, out


def run(opts: BenchOptions) -> int:
    if opts.tool == "wrk" and shutil.which("wrk") is None:
        _log("--tool wrk: wrk is not installed (apt-get install wrk)")
        return 2
    opts.command = opts.command or shlex.join(["paycore", "bench", *sys.argv[2:]])
    from paycore.platform.observability.logging import configure_logging, flush_logs

    # the library code the bench calls (migrations, seeding) logs to stderr, warnings only
    configure_logging("warning", 1000, stream=sys.stderr)
    try:
        report, out = asyncio.run(run_bench(opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _log("interrupted; everything was stopped")
        return 130
    except (BenchError, RuntimeError, OSError) as exc:
        _log(f"failed: {exc}")
        return 1
    finally:
        flush_logs()
    sys.stdout.write(summary_text(report) + "\n")
    sys.stdout.write(f"report: {out}\n")
    if report.get("plot"):
        sys.stdout.write(f"plot: {report['plot']}\n")
    sys.stdout.flush()
    return 0
