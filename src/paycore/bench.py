"""`paycore bench`: the load benchmark (roadmap §5.1, docs/benchmarks.md).

Starts the EPX simulator, PostgreSQL (a fresh `paycore_bench` database on DATABASE_URL's server, or
an embedded one), migrations, a seeded merchant, and `paycore serve`; drives card sales from a
separate load-generator process; writes a JSON report (bench/results/<timestamp>.json) and prints a
summary. Everything it started is stopped at the end, on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MAX_DURATION_S = 1800.0


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return value


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument(
        "--tool", choices=("python", "wrk"), default="python", help="load generator (default python)"
    )
    load.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        help="closed loop: requests in flight (default 64); with --rate: the in-flight cap",
    )
    load.add_argument(
        "--rate", type=_positive_float, default=None, help="open loop: sales per second on a fixed schedule"
    )
    load.add_argument(
        "--duration",
        type=_positive_float,
        default=20.0,
        help="measured seconds after the warm-up (default 20)",
    )
    load.add_argument(
        "--warmup",
        type=_non_negative_float,
        default=3.0,
        help="seconds of load left out of the stats (default 3)",
    )
    load.add_argument(
        "--requests", type=_positive_int, default=None, help="stop after this many measured requests"
    )
    load.add_argument(
        "--overhead",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="after the sales, probe GET /healthz for SECONDS: framework overhead per request (default off)",
    )
    load.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="client timeout of one request (default 30 s)"
    )
    stack = parser.add_argument_group("stack")
    stack.add_argument(
        "--workers", type=_positive_int, default=2, help="paycore serve worker processes (default 2)"
    )
    stack.add_argument(
        "--sim-latency-ms",
        type=_non_negative_float,
        default=20.0,
        help="EPX simulator answer delay (default 20; 0 measures paycore's own cost)",
    )
    stack.add_argument(
        "--db-max-conns",
        type=_positive_int,
        default=None,
        help="pool size per worker (default: budget / workers, at most 25)",
    )
    stack.add_argument(
        "--db-conn-budget", type=_positive_int, default=50, help="connections across workers (default 50)"
    )
    stack.add_argument(
        "--pg-dir",
        type=Path,
        default=Path(".paycore/bench"),
        help="embedded PostgreSQL's folder when DATABASE_URL is unset (default .paycore/bench)",
    )
    stack.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for paycore serve (repeatable), e.g. PAYCORE_COMPRESSION_ENABLED=false",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, default=None, help="report path (default bench/results/<UTC time>.json)"
    )
    output.add_argument(
        "--results-dir",
        type=Path,
        default=Path("bench/results"),
        help="where reports go (default bench/results)",
    )
    output.add_argument("--no-plot", action="store_true", help="no PNG even when matplotlib is installed")
    output.add_argument(
        "--keep-logs", action="store_true", help="keep the run folder with the processes' logs"
    )
    output.add_argument(
        "--scrape-interval", type=_positive_float, default=1.0, help="/metrics scrape period (default 1 s)"
    )
    output.add_argument(
        "--wait-idle",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the machine to be < 15 %% busy (shared machines)",
    )
    output.add_argument(
        "--py-spy", default=None, metavar="PATH", help="py-spy binary: record one worker during the window"
    )


def run(args: argparse.Namespace) -> int:
    from paycore.benchmark.runner import BenchOptions
    from paycore.benchmark.runner import run as run_bench

    opts = BenchOptions(
        tool=args.tool,
        workers=args.workers,
        concurrency=args.concurrency,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        requests=args.requests,
        sim_latency_ms=args.sim_latency_ms,
        db_max_conns=args.db_max_conns,
        db_conn_budget=args.db_conn_budget,
        timeout=args.timeout,
        scrape_interval=args.scrape_interval,
        out=args.out,
        results_dir=args.results_dir,
        pg_dir=args.pg_dir,
        extra_env=dict(args.env),
        plot=not args.no_plot,
        keep_logs=args.keep_logs,
        py_spy=args.py_spy,
        wait_idle=args.wait_idle,
        overhead=args.overhead,
    )
    if opts.duration + opts.warmup > MAX_DURATION_S:
        print(f"paycore bench: warm-up + duration must stay under {MAX_DURATION_S:.0f} s")
        return 2
    if opts.workers * opts.pool_size() > opts.db_conn_budget:
        print(
            f"paycore bench: {opts.workers} workers × {opts.pool_size()} connections exceed "
            f"--db-conn-budget {opts.db_conn_budget}"
        )
        return 2
    if opts.tool == "wrk" and (opts.requests is not None or opts.rate is not None):
        print("paycore bench: --tool wrk supports neither --requests nor --rate (use the python generator)")
        return 2
    return run_bench(opts)
