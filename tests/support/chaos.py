"""The chaos harness (roadmap §5.2): a real `paycore serve`, its own EPX simulator process, real
concurrent load, and the ledger check that every scenario ends with.

    async with ChaosStack(database_url, env={"PAYCORE_CB_OPEN_TIMEOUT": "2s"}) as stack:
        load = Load(stack)                        # unique Idempotency-Key per sale
        await load.run(seconds=3, concurrency=8)  # or: task = load.start(...); ...; await load.stop()
        ... break something: stack.sim.kill(), stack.server.proc.send_signal(SIGTERM), ...
        await stack.stop_server()
        await stack.reconcile()                  # `paycore reconcile`, PAYCORE_RECONCILE_AFTER=1ms
        problems = await stack.ledger_problems(load.outcomes)
        assert problems == []

The ledger check compares the simulator's ledger (processed sales by TRAN_NBR; the truth of what
the "gateway" charged) with paycore's `transactions` table:

* no TRAN_NBR processed twice;
* every processed sale has exactly one row, in the same state (approved/declined);
* no row is approved without a processed ledger entry;
* nothing is left `pending` or `unknown` (after reconciliation);
* every 201 answer is an approved row, every 202 answer a row reconciliation resolved.

The simulator is separate from the session one (killing it is safe). It keeps its ledger in memory
and loses it on a restart, so a scenario that restarts it snapshots the ledger first
(`snapshot_ledger()`), and the check uses every snapshot plus the live ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from paycore.bootstrap import build_merchant_directory
from paycore.config import load_settings
from paycore.platform.db.pool import create_database
from tests.support.sim import SimControl, SimProcess, start_simulator
from tests.support.stack import ServerProcess, stack_env
from tests.support.tokens import SANDBOX_KEY, mint_token

SALE = "CCE1"
# Scenarios run many requests against one merchant: its rate limit must not be what they test.
CHAOS_ENV = {
    "PAYCORE_MERCHANT_RATE_LIMIT_RPS": "1000000",
    "PAYCORE_MERCHANT_RATE_LIMIT_BURST": "1000000",
    "PAYCORE_TASK_LEAK_INTERVAL": "1s",
    "PAYCORE_DB_POOL_MONITOR_INTERVAL": "1s",
    "PAYCORE_SLOW_REQUEST": "30s",
}


# --- processes -------------------------------------------------------------------------------
class ChaosServer(ServerProcess):
    """`paycore serve` with its output (the JSON logs) in a file: a full pipe would stall a chatty
    server, and a failing scenario wants the logs."""

    def start(self, timeout: float = 30.0) -> ChaosServer:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()/stderr_text()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paycore.cli", "serve"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"paycore serve exited: {self.stderr_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"paycore serve did not become ready: {self.stderr_text()[-2000:]}")

    def log_events(self, level: str = "error") -> list[dict[str, Any]]:
        """The server's JSON log records at `level`."""
        out = []
        for line in self.stderr_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("level") == level:
                    out.append(record)
        return out

    def stderr_text(self) -> str:
        log = getattr(self, "_log", None)
        if log is None or log.closed:
            return ""
        log.seek(0)
        return log.read().decode(errors="replace")

    def worker_pids(self) -> list[int]:
        """The granian worker processes (the group minus the main process)."""
        assert self.proc is not None
        return [p for p in self.pids() if p != self.proc.pid]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- load --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    key: str
    started: float  # time.monotonic() when the request was sent
    elapsed: float
    status: int  # 0: no HTTP answer (connection refused/reset, client timeout)
    code: str | None = None  # problem `code`, or the payment's `status`
    payment_id: str | None = None
    error: str | None = None  # the client-side exception, or the problem's `detail`


@dataclass
class LoadReport:
    outcomes: list[Outcome]

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    def codes(self, status: int) -> Counter[str | None]:
        return Counter(o.code for o in self.outcomes if o.status == status)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.started < end]


class Load:
    """Concurrent sales (unique Idempotency-Keys) against the stack's server; every answer kept."""

    def __init__(self, stack: ChaosStack, *, amounts: range = range(2000, 2999)) -> None:
        self.stack = stack
        self.amounts = amounts
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._n = 0

    async def one(self, session: aiohttp.ClientSession, amount: int | None = None) -> Outcome:
        self._n += 1
        key = uuid.uuid4().hex
        amount = amount or self.amounts[self._n % len(self.amounts)]
        started = time.monotonic()
        outcome = Outcome(key, started, 0.0, 0)
        try:
            async with session.post(
                self.stack.url + "/v1/payments",
                json={"amount": amount, "currency": "USD", "token": self.stack.token},
                headers={"Authorization": f"Bearer {self.stack.api_key}", "Idempotency-Key": key},
            ) as resp:
                outcome.status = resp.status
                body = await resp.json(content_type=None)
                if isinstance(body, dict):
                    outcome.code = body.get("code") or body.get("status")
                    outcome.payment_id = body.get("id") or body.get("payment_id")
                    if resp.status >= 400:
                        outcome.error = body.get("detail")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            outcome.error = type(exc).__name__
        outcome.elapsed = time.monotonic() - started
        self.outcomes.append(outcome)
        return outcome

    async def _worker(self, session: aiohttp.ClientSession, pause: float) -> None:
        while not self._stop.is_set():
            outcome = await self.one(session)
            if outcome.status == 0 or pause:
                await asyncio.sleep(pause or 0.05)  # do not spin on a closed port

    def start(self, *, concurrency: int = 8, pause: float = 0.0) -> None:
        self._stop.clear()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=20),
        )
        self._workers = [
            asyncio.get_running_loop().create_task(self._worker(self._session, pause), name=f"load-{i}")
            for i in range(concurrency)
        ]

    async def stop(self) -> LoadReport:
        self._stop.set()
        if self._workers:
            await asyncio.gather(*self._workers)
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        return LoadReport(self.outcomes)

    async def run(self, seconds: float, *, concurrency: int = 8) -> LoadReport:
        self.start(concurrency=concurrency)
        await asyncio.sleep(seconds)
        return await self.stop()


async def disconnecting_sale(stack: ChaosStack, amount: int, after: float) -> None:
    """A raw HTTP/1.1 sale whose client closes the socket `after` seconds in (no answer read)."""
    body = json.dumps({"amount": amount, "currency": "USD", "token": stack.token}).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", stack.server.port)
    head = (
        "POST /v1/payments HTTP/1.1\r\nHost: paycore\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {stack.api_key}\r\nIdempotency-Key: {uuid.uuid4().hex}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    await asyncio.sleep(after)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# --- the stack ---------------------------------------------------------------------------------
@dataclass
class ChaosStack:
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    sim_args: tuple[str, ...] = ()
    workers: int = 1

    def __post_init__(self) -> None:
        self.sim: SimProcess | None = None
        self.server: ChaosServer | None = None  # type: ignore[assignment]
        self.api_key = ""
        self.token = ""
        self.full_env: dict[str, str] = {}
        self._ledger_snapshots: list[list[dict[str, Any]]] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def __aenter__(self) -> Self:
        self.sim = await asyncio.to_thread(start_simulator, latency_ms=0, seed=7, extra_args=self.sim_args)
        self.full_env = stack_env(self.database_url, self.sim, **{**CHAOS_ENV, **self.env})
        self.api_key = await seed_merchant(self.full_env)
        self.token = await mint_token(self.sim.server_post_url)
        self.server = ChaosServer(self.full_env, workers=self.workers)
        await asyncio.to_thread(self.server.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.server is not None:
            self.server.kill()
            log = getattr(self.server, "_log", None)
            if log is not None:
                log.close()
        if self.sim is not None:
            await asyncio.to_thread(self.sim.close)

    def control(self) -> SimControl:
        assert self.sim is not None
        return SimControl(self.sim.control_url)

    # --- process control ---------------------------------------------------------------------
    async def start_server(self) -> ChaosServer:
        """A fresh server process on a new port (the previous one must be gone)."""
        if self.server is not None:
            log = getattr(self.server, "_log", None)
            if log is not None:
                log.close()
        self.server = ChaosServer(self.full_env, workers=self.workers)
        await asyncio.to_thread(self.server.start)
        return self.server

    async def stop_server(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.server is not None and self.server.proc is not None
        if self.server.proc.poll() is not None:
            return self.server.proc.returncode
        return await asyncio.to_thread(self.server.terminate, timeout)

    async def restart_simulator(self) -> None:
        """After a kill: the same ports, a fresh process (its state is gone: mint a new token)."""
        assert self.sim is not None
        await asyncio.to_thread(self.sim.restart)
        self.token = await mint_token(self.sim.server_post_url)

    # --- observation -------------------------------------------------------------------------
    async def metrics(self) -> dict[str, float]:
        """`/metrics` flattened: 'name{label="v",...}' → value (labels sorted)."""
        async with aiohttp.ClientSession() as session, session.get(self.url + "/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    async def snapshot_ledger(self) -> None:
        """Keep the simulator's ledger before it is lost (kill/restart)."""
        async with self.control() as ctl:
            self._ledger_snapshots.append(await ctl.ledger(endpoint="server_post"))

    async def ledger(self) -> list[dict[str, Any]]:
        entries = [e for snap in self._ledger_snapshots for e in snap]
        assert self.sim is not None
        if self.sim.alive():
            async with self.control() as ctl:
                entries += await ctl.ledger(endpoint="server_post")
        seen: set[tuple[Any, ...]] = set()
        unique = []
        for entry in entries:  # a snapshot and the live ledger overlap when nothing restarted
            ident = (entry.get("seq"), entry.get("tran_nbr"), entry.get("wall_received_at"))
            if ident not in seen:
                seen.add(ident)
                unique.append(entry)
        return unique

    async def rows(self) -> list[asyncpg.Record]:
        con = await asyncpg.connect(self.database_url)
        try:
            return await con.fetch("SELECT id, tran_nbr, status, type, failure_code FROM transactions")
        finally:
            await con.close()

    # --- the verdict -------------------------------------------------------------------------
    async def reconcile(self, rounds: int = 10) -> dict[str, int]:
        """`paycore reconcile` until nothing is left to resolve; the summed counts."""
        total: Counter[str] = Counter()
        for _ in range(rounds):
            run = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "paycore.cli", "reconcile"],
                env={**os.environ, **self.full_env, "PAYCORE_RECONCILE_AFTER": "1ms"},
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            counts: dict[str, int] = json.loads(run.stdout.strip().splitlines()[-1])
            total.update(counts)
            if sum(v for k, v in counts.items() if k != "skipped") == 0:
                break
        return dict(total)

    async def ledger_problems(self, outcomes: list[Outcome]) -> list[str]:
        return check_ledger(await self.ledger(), await self.rows(), outcomes)


def check_ledger(
    entries: list[dict[str, Any]], rows: list[asyncpg.Record] | list[dict[str, Any]], outcomes: list[Outcome]
) -> list[str]:
    """The agreement rules of the module docstring; returns the violations (empty = agreement)."""
    problems: list[str] = []
    processed = [e for e in entries if e.get("tran_type") == SALE and e.get("processed")]
    charged = Counter(int(e["tran_nbr"]) for e in processed)
    outcome_of = {int(e["tran_nbr"]): e.get("outcome") for e in processed}
    problems += [f"TRAN_NBR {n} processed {c} times" for n, c in charged.items() if c > 1]
    by_nbr: dict[int, Any] = {}
    for row in rows:
        if row["tran_nbr"] in by_nbr:
            problems.append(f"TRAN_NBR {row['tran_nbr']} has two rows")
        by_nbr[row["tran_nbr"]] = row
    for nbr in charged:
        row = by_nbr.get(nbr)
        if row is None:
            problems.append(f"TRAN_NBR {nbr} charged without a record")
        elif row["status"] != outcome_of[nbr]:
            problems.append(f"TRAN_NBR {nbr}: gateway {outcome_of[nbr]}, database {row['status']}")
    for row in rows:
        if row["status"] == "approved" and row["tran_nbr"] not in charged:
            problems.append(f"TRAN_NBR {row['tran_nbr']} approved without a processed ledger entry")
        if row["status"] in ("pending", "unknown"):
            problems.append(f"TRAN_NBR {row['tran_nbr']} left {row['status']}")
    by_id = {str(row["id"]): row for row in rows}
    for o in outcomes:
        if o.status not in (201, 202):
            continue
        row = by_id.get(o.payment_id or "")
        if row is None:
            problems.append(f"a {o.status} answer ({o.payment_id}) has no row")
        elif o.status == 201 and row["status"] != "approved":
            problems.append(f"a 201 answer ({o.payment_id}) is {row['status']} in the database")
    return problems


async def seed_merchant(env: dict[str, str]) -> str:
    """One sandbox merchant and its API key in the stack's database."""
    settings = load_settings(env)
    db = await create_database(settings, env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await directory.create_merchant(
            slug="chaos", name="Chaos", environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
        )
        return (await directory.create_api_key(merchant.id)).secret
    finally:
        await db.pool.close()


def metric(values: dict[str, float], name: str, /, **labels: str) -> float:
    """One sample of `ChaosStack.metrics()` (0 when absent); labels must match exactly."""
    key = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return values.get(f"{name}{{{key}}}" if key else name, 0.0)


def metric_sum(values: dict[str, float], name: str, /, **labels: str) -> float:
    """The sum of every sample of `name` whose labels include `labels`."""
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    pattern = re.compile(rf"^{re.escape(name)}(\{{.*\}})?$")
    for key, value in values.items():
        if pattern.match(key) and all(w in key for w in wanted):
            total += value
    return total


def soak_seconds(default: float) -> float:
    return float(os.environ.get("PAYCORE_SOAK_SECONDS", default))


__all__ = [
    "CHAOS_ENV",
    "ChaosServer",
    "ChaosStack",
    "Load",
    "LoadReport",
    "Outcome",
    "check_ledger",
    "disconnecting_sale",
    "metric",
    "metric_sum",
    "open_fds",
    "rss_bytes",
    "soak_seconds",
]
