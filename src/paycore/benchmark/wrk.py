"""`--tool wrk`: drive the load with wrk (Debian's `wrk`) and the Lua script `sale.lua`.

wrk has no warm-up, so it runs twice: once for the warm-up (ignored), then for the measured window.
Its latency comes from wrk's own histogram over all responses (the Python generator keeps every
sample). The script ships inside the package (`paycore/benchmark/sale.lua`) so an installed paycore
can run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import uuid
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from paycore.benchmark import stats
from paycore.benchmark.report import LoadSummary
from paycore.benchmark.stack import _pdeathsig

if TYPE_CHECKING:
    from paycore.benchmark.runner import BenchOptions, Monitor, Window
    from paycore.benchmark.stack import Stack

SALE_LUA: Final = (resources.files("paycore.benchmark") / "sale.lua").read_text()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _duration_arg(seconds: float) -> str:
    return f"{max(math.ceil(seconds), 1)}s"


def parse_done_line(output: str) -> dict[str, Any]:
    """The script's `wrk_done` JSON line in wrk's output."""
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("{") and '"wrk_done"' in line:
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                return parsed
    raise ValueError("wrk printed no wrk_done line")


def summary_from_wrk(done: dict[str, Any], *, cpu_s: float | None = None) -> LoadSummary:
    """Client-side figures from the `wrk_done` line (latency over all responses)."""
    statuses: dict[str, int] = {str(k): int(v) for k, v in (done.get("statuses") or {}).items()}
    errors = done.get("errors") or {}
    outcomes = dict(statuses)
    timeouts = int(errors.get("timeout", 0))
    broken = int(errors.get("connect", 0)) + int(errors.get("read", 0)) + int(errors.get("write", 0))
    if timeouts:
        outcomes[stats.outcome_name(stats.TIMEOUT)] = timeouts
    if broken:
        outcomes[stats.outcome_name(stats.CONNECTION_ERROR)] = broken
    lat = done.get("latency_us") or {}
    requests = int(done.get("requests", 0))
    latency = (
        stats.LatencySummary(
            count=requests,
            min=lat["min"] / 1000.0,
            mean=lat["mean"] / 1000.0,
            stdev=lat["stdev"] / 1000.0,
            p50=lat["p50"] / 1000.0,
            p90=lat["p90"] / 1000.0,
            p99=lat["p99"] / 1000.0,
            p999=lat["p999"] / 1000.0,
            max=lat["max"] / 1000.0,
        )
        if requests and lat
        else None
    )
    return LoadSummary(
        window_s=int(done.get("duration_us", 0)) / 1e6,
        requests=requests + timeouts + broken,
        ok=statuses.get(str(stats.SUCCESS_STATUS), 0),
        outcomes=dict(sorted(outcomes.items())),
        latency_ok=latency,
        latency_all=latency,
        loadgen_cpu_s=cpu_s,
        latency_source="wrk HdrHistogram over all responses",
    )


async def _wrk(
    opts: BenchOptions,
    stack: Stack,
    seconds: float,
    prefix: str,
    monitor: Monitor | None,
    window: Window | None,
) -> str:
    script = stack.options.run_dir / "sale.lua"
    script.write_text(SALE_LUA)
    argv = [
        "wrk",
        "-t1",
        f"-c{opts.concurrency}",
        f"-d{_duration_arg(seconds)}",
        "--timeout",
        f"{max(math.ceil(opts.timeout), 1)}s",
        "-s",
        str(script),
        stack.base_url,
        "--",
        stack.api_key,
        stack.token,
        prefix,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stack.log_file("wrk.log"),
        start_new_session=True,
        preexec_fn=_pdeathsig,
    )
    try:
        if monitor is not None and window is not None:
            # wrk is gone when its counters could be read: its CPU is taken from the children's rusage
            children_cpu = _children_cpu()
            await window.open(monitor)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=seconds + opts.timeout + 30.0)
        if monitor is not None and window is not None:
            # wrk prints after its window: the counters are read as soon as it is over
            await window.close(monitor)
            window.loadgen_cpu_s = _children_cpu() - children_cpu
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}")
    return out.decode(errors="replace")


async def drive_wrk(opts: BenchOptions, stack: Stack, monitor: Monitor, window: Window) -> LoadSummary:
    run_id = uuid.uuid4().hex[:12]
    if opts.warmup > 0:
        await _wrk(opts, stack, opts.warmup, f"warm-{run_id}", None, None)
    output = await _wrk(opts, stack, opts.duration, f"run-{run_id}", monitor, window)
    return summary_from_wrk(parse_done_line(output), cpu_s=window.loadgen_cpu_s)
