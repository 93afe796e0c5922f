"""What a benchmark run needs, started and stopped: the EPX simulator, PostgreSQL (a fresh
`paycore_bench` database), migrations, a seeded merchant with an API key and a card token, and
`paycore serve` with N workers. Every wait is bounded; `close()` stops everything in reverse order
(SIGTERM, wait, SIGKILL) and is safe to call more than once or after a partial start."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from paycore.benchmark import procfs

BENCH_DB: Final = "paycore_bench"
SALE_AMOUNT: Final = 1050  # approved by the simulator for the sandbox test card


class StackError(RuntimeError):
    """The stack could not be started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at database `name` (query parameters such as host= kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def is_local_dsn(dsn: str) -> bool:
    """True when the DSN names this machine: a Unix socket, localhost or a loopback address."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qs(parts.query)
    hosts = [h for h in (parts.hostname or "").split(",") if h] + query.get("host", [])
    if not hosts:
        return True  # libpq default: the local Unix socket
    for host in hosts:
        if host.startswith("/") or host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host.strip("[]")).is_loopback:
                return False
        except ValueError:
            return False
    return True


def server_env(
    base: Mapping[str, str],
    *,
    database_url: str,
    sim_urls: Mapping[str, str],
    workers: int,
    port: int,
    db_max_conns: int,
    db_conn_budget: int,
    data_dir: Path,
    metrics_dir: Path,
    extra: Mapping[str, str] = {},
) -> dict[str, str]:
    """The environment of `paycore serve` for a run (pure). `extra` (from `--env`) wins."""
    env = dict(base)
    env.update(
        {
            "PAYCORE_ENV": "development",
            "DATABASE_URL": database_url,
            "PAYCORE_HTTP_HOST": "127.0.0.1",
            "PAYCORE_HTTP_PORT": str(port),
            "PAYCORE_WORKERS": str(workers),
            "PAYCORE_LOG_LEVEL": "warning",
            "PAYCORE_DATA_DIR": str(data_dir),
            "PAYCORE_EPX_SERVER_POST_URL": sim_urls["server_post_url"],
            "PAYCORE_EPX_KEY_EXCHANGE_URL": sim_urls.get("key_exchange_url", ""),
            "PAYCORE_EPX_BROWSER_POST_URL": sim_urls.get("browser_post_url", ""),
            "PAYCORE_EPX_REPORTING_URL": sim_urls.get("reporting_url", ""),
            "PAYCORE_NORTH_API_URL": sim_urls.get("reporting_url", ""),
            "PAYCORE_DB_CONN_BUDGET": str(db_conn_budget),
            "PAYCORE_DB_MAX_CONNS": str(db_max_conns),
            "PAYCORE_DB_MIN_CONNS": str(min(5, db_max_conns)),
            # the pool gauges scraped from /metrics are refreshed by this monitor
            "PAYCORE_DB_POOL_MONITOR_INTERVAL": "500ms",
            # one merchant sends all the load: its rate limit must not be what is measured
            "PAYCORE_MERCHANT_RATE_LIMIT_RPS": "1000000",
            "PAYCORE_MERCHANT_RATE_LIMIT_BURST": "1000000",
            "PAYCORE_SHUTDOWN_TIMEOUT": "15s",
            "PAYCORE_SHUTDOWN_PRESTOP_DELAY": "0s",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    env.update(extra)
    return env


def _pdeathsig() -> None:
    """In the child: die with SIGTERM if the bench process dies first (Linux), so an abrupt end of
    the bench leaves nothing running."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(argv: list[str], env: Mapping[str, str], log: IO[bytes], *, stdout_pipe: bool = False) -> Any:
    """A child in its own session (Ctrl-C reaches the bench only; it stops children in order)."""
    return subprocess.Popen(
        argv,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_pipe else log,
        stderr=log,
        start_new_session=True,
        preexec_fn=_pdeathsig,  # noqa: PLW1509 - only prctl, no locks taken
    )


def read_json_line(proc: Any, want: str, timeout: float) -> dict[str, Any]:
    """The first JSON line on `proc`'s stdout whose `event` is `want`, within `timeout` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StackError(f"no {want!r} line within {timeout:.0f} s")
        readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if not readable:
            if proc.poll() is not None:
                raise StackError(f"the process exited with {proc.returncode} before {want!r}")
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise StackError(f"the process closed its output before {want!r}")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == want:
                    return event


def stop_process(proc: Any, *, timeout: float, group: bool = False) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL (the whole process group when `group`)."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    return int(proc.returncode) if proc.returncode is not None else None


def wait_ready(url: str, proc: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"paycore serve exited with {proc.returncode} during start-up")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise StackError(f"{url} did not answer 200 within {timeout:.0f} s")


@dataclass
class StackOptions:
    workers: int = 2
    sim_latency_ms: float = 20.0
    db_max_conns: int = 25
    db_conn_budget: int = 50
    pg_dir: Path = Path(".paycore/bench")
    run_dir: Path = Path(".paycore/bench/run")
    extra_env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0


@dataclass
class Stack:
    """The running pieces of one run. Build with `start_stack`; always `close()`."""

    options: StackOptions
    env: dict[str, str] = field(default_factory=dict)
    sim: Any = None
    sim_urls: dict[str, str] = field(default_factory=dict)
    pg_server: Any = None
    db_kind: str = ""
    database_url: str = ""
    postmaster_pid: int | None = None
    server: Any = None
    base_url: str = ""
    api_key: str = ""
    token: str = ""
    logs: list[IO[bytes]] = field(default_factory=list)
    closed: bool = False

    def log_file(self, name: str) -> IO[bytes]:
        handle = open(self.options.run_dir / name, "ab")  # noqa: SIM115 - closed in close()
        self.logs.append(handle)
        return handle

    def server_pids(self) -> list[int]:
        """The granian main process and its descendants (workers)."""
        if self.server is None:
            return []
        return [self.server.pid, *procfs.descendants(self.server.pid, procfs.parent_map())]

    def postgres_pids(self) -> list[int]:
        """The postmaster and its children (backends, background processes), when local."""
        if self.postmaster_pid is None or procfs.read_stat(self.postmaster_pid) is None:
            return []
        return [self.postmaster_pid, *procfs.descendants(self.postmaster_pid, procfs.parent_map())]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        stop_process(self.server, timeout=30, group=True)
        stop_process(self.sim, timeout=10, group=True)
        if self.pg_server is not None:
            with contextlib.suppress(Exception):
                self.pg_server.cleanup()
        for handle in self.logs:
            with contextlib.suppress(OSError):
                handle.close()


async def _fresh_database(admin_dsn: str, name: str) -> int | None:
    """Drop and create `name`; returns the postmaster's pid when the server runs on this machine."""
    import asyncpg

    con = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        await con.execute(f'CREATE DATABASE "{name}"', timeout=30)
        # read while the backend lives: its parent is the postmaster (when it runs here)
        stat = procfs.read_stat(int(await con.fetchval("SELECT pg_backend_pid()")))
    finally:
        await con.close()
    return stat.ppid if stat is not None and stat.comm.startswith("postgres") else None


def _log(message: str) -> None:
    sys.stderr.write(f"paycore bench: {message}\n")
    sys.stderr.flush()


def start_simulator(stack: Stack) -> None:
    opts = stack.options
    argv = [sys.executable, "-m", "paycore.cli", "epx-sim", "--port", "0", "--keyexch-port", "0"]
    argv += ["--control-port", "0", "--latency-ms", str(opts.sim_latency_ms)]
    sim_env = {**os.environ, "PAYCORE_ENV": "development"}
    stack.sim = spawn(argv, sim_env, stack.log_file("epx-sim.log"), stdout_pipe=True)
    ready = read_json_line(stack.sim, "epx_sim_ready", opts.start_timeout)
    stack.sim_urls = {k: str(v) for k, v in ready.items() if isinstance(v, str)}


async def prepare_database(stack: Stack) -> None:
    """A fresh `paycore_bench` database on DATABASE_URL's server, or on an embedded one."""
    opts = stack.options
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        if not is_local_dsn(configured):
            raise StackError("DATABASE_URL is not on this machine; the bench only talks to loopback")
        stack.db_kind = "external"
        admin_dsn = configured
    else:
        stack.db_kind = "embedded"
        opts.pg_dir.mkdir(parents=True, exist_ok=True)
        from paycore.up import _start_embedded_postgres

        admin_dsn, stack.pg_server = await asyncio.to_thread(_start_embedded_postgres, opts.pg_dir)
    stack.postmaster_pid = await _fresh_database(admin_dsn, BENCH_DB)
    stack.database_url = with_database(admin_dsn, BENCH_DB)

    from paycore.platform.db.migrate import migrate

    await asyncio.wait_for(migrate(stack.database_url), timeout=120)


async def seed(stack: Stack) -> None:
    """A merchant, its API key and a Storage BRIC for the sandbox card (as `paycore up` does)."""
    from paycore.up import _seed

    env = {
        **os.environ,
        "PAYCORE_ENV": "development",
        "DATABASE_URL": stack.database_url,
        "PAYCORE_DATA_DIR": str(stack.options.run_dir),
        "PAYCORE_LOG_LEVEL": "warning",
        "PAYCORE_EPX_SERVER_POST_URL": stack.sim_urls["server_post_url"],
        "PAYCORE_EPX_KEY_EXCHANGE_URL": stack.sim_urls.get("key_exchange_url", ""),
        "PAYCORE_EPX_BROWSER_POST_URL": stack.sim_urls.get("browser_post_url", ""),
        "PAYCORE_EPX_REPORTING_URL": stack.sim_urls.get("reporting_url", ""),
        "PAYCORE_NORTH_API_URL": stack.sim_urls.get("reporting_url", ""),
    }
    api_key, token = await asyncio.wait_for(_seed(env), timeout=60)
    if not token:
        raise StackError("the simulator did not store the sandbox card (no token)")
    stack.api_key, stack.token = api_key, token


def start_server(stack: Stack) -> None:
    opts = stack.options
    port = free_port()
    metrics_dir = opts.run_dir / "prometheus"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(
        os.environ,
        database_url=stack.database_url,
        sim_urls=stack.sim_urls,
        workers=opts.workers,
        port=port,
        db_max_conns=opts.db_max_conns,
        db_conn_budget=opts.db_conn_budget,
        data_dir=opts.run_dir,
        metrics_dir=metrics_dir,
        extra=opts.extra_env,
    )
    stack.env.update(env)
    argv = [sys.executable, "-m", "paycore.cli", "serve"]
    stack.server = spawn(argv, env, stack.log_file("serve.log"))
    stack.base_url = f"http://127.0.0.1:{port}"
    wait_ready(stack.base_url + "/readyz", stack.server, opts.start_timeout)
    # granian starts its workers before the first one answers; wait until all of them are up
    deadline = time.monotonic() + opts.start_timeout
    while len(stack.server_pids()) < 1 + opts.workers and time.monotonic() < deadline:
        time.sleep(0.2)


async def start_stack(options: StackOptions) -> Stack:
    """Start every piece; on failure whatever was started is stopped before the error propagates."""
    options.run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(options)
    try:
        _log(f"starting the EPX simulator (latency {options.sim_latency_ms:g} ms)")
        await asyncio.to_thread(start_simulator, stack)
        _log("preparing PostgreSQL (fresh database paycore_bench) and applying migrations")
        await prepare_database(stack)
        _log("seeding a merchant, an API key and a card token")
        await seed(stack)
        _log(f"starting paycore serve with {options.workers} worker(s)")
        await asyncio.to_thread(start_server, stack)
    except BaseException:
        await asyncio.to_thread(stack.close)
        raise
    return stack
