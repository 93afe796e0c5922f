"""The load generator: POST /v1/payments sales from one aiohttp session, in its own process.

Run as `python -m paycore.benchmark.loadgen CONFIG.json RESULT.json`. It prints one JSON line per
phase change on stdout so the coordinator can read the server's CPU counters exactly at the edges of
the measured window:

    {"event": "loadgen_started"}
    {"event": "measure_start"}      warm-up over: samples are kept from here on
    {"event": "measure_end"}        no request is started after this
    {"event": "loadgen_done"}       RESULT.json is written

Two shapes of load:
- closed loop (`concurrency` workers, each sends its next request when the previous one answers);
- open loop (`rate` requests per second on a fixed schedule, at most `concurrency` in flight). Its
  latency counts from the scheduled send time, so a server that falls behind is charged for the
  queueing it causes (no coordinated omission).

Every request carries a unique `Idempotency-Key` (a per-run prefix and a counter). Traffic goes to
the loopback address the coordinator passes in, nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgspec

from paycore.benchmark import stats


class LoadConfig(msgspec.Struct, kw_only=True, frozen=True):
    base_url: str  # http://127.0.0.1:PORT
    path: str = "/v1/payments"
    method: str = "POST"
    body: bytes = b""
    api_key: str = ""
    key_prefix: str = "bench"
    concurrency: int = 64
    rate: float | None = None
    duration: float = 20.0
    warmup: float = 3.0
    requests: int | None = None  # measured requests at most
    timeout: float = 30.0  # one request, client side
    drain_timeout: float = 10.0  # wait for in-flight requests after the window


class LoadResult(msgspec.Struct, kw_only=True):
    mode: str  # closed | open
    window_s: float  # from measure_start to measure_end
    measure_start_unix: float
    start_offsets_us: list[int]  # request start (scheduled start in open loop) from measure_start
    latencies_us: list[int]
    statuses: list[int]  # HTTP status, or a negative client-side outcome (stats.OUTCOME_NAMES)
    warmup_requests: int
    warmup_ok: int
    cpu_s: float  # this process, user+system, during the window
    rss_peak_kib: int
    behind_schedule: int = 0  # open loop: sends that started > 5 ms after their slot


Emit = Callable[[str], None]


def _emit_stdout(event: str) -> None:
    sys.stdout.write(msgspec.json.encode({"event": event}).decode() + "\n")
    sys.stdout.flush()


def _cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Recorder:
    """Samples of the measured window; counts of the warm-up."""

    def __init__(self) -> None:
        self.starts = array("q")
        self.latencies = array("q")
        self.statuses = array("i")
        self.warmup_requests = 0
        self.warmup_ok = 0

    def add(self, start_ns: int, measure_start_ns: int, latency_ns: int, status: int) -> None:
        if start_ns < measure_start_ns:
            self.warmup_requests += 1
            self.warmup_ok += status == stats.SUCCESS_STATUS
            return
        self.starts.append((start_ns - measure_start_ns) // 1000)
        self.latencies.append(latency_ns // 1000)
        self.statuses.append(status)


class LoadGenerator:
    def __init__(self, config: LoadConfig, emit: Emit = _emit_stdout) -> None:
        self.cfg = config
        self.emit = emit
        self.rec = _Recorder()
        self._counter = 0
        self._measured = 0
        self._stop = asyncio.Event()
        self._behind = 0

    def _headers(self, index: int) -> dict[str, str]:
        headers = {"Idempotency-Key": f"{self.cfg.key_prefix}-{index}"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        if self.cfg.body:
            headers["Content-Type"] = "application/json"
        return headers

    async def _send(self, session: aiohttp.ClientSession, url: str, index: int) -> int:
        try:
            async with session.request(
                self.cfg.method, url, data=self.cfg.body or None, headers=self._headers(index)
            ) as resp:
                await resp.read()
                return resp.status
        except TimeoutError:
            return stats.TIMEOUT
        except aiohttp.ClientConnectionError:
            return stats.CONNECTION_ERROR
        except aiohttp.ClientError:
            return stats.CLIENT_ERROR

    def _next_index(self, now_ns: int, measure_start_ns: int) -> int | None:
        """The next request's number, or None when the request budget is spent."""
        if now_ns >= measure_start_ns:
            if self.cfg.requests is not None and self._measured >= self.cfg.requests:
                self._stop.set()
                return None
            self._measured += 1
        self._counter += 1
        return self._counter

    async def _timed(
        self, session: aiohttp.ClientSession, url: str, index: int, start_ns: int, measure_start_ns: int
    ) -> None:
        status = stats.UNFINISHED
        try:
            status = await self._send(session, url, index)
        finally:
            self.rec.add(start_ns, measure_start_ns, time.perf_counter_ns() - start_ns, status)

    async def _closed_worker(
        self, session: aiohttp.ClientSession, url: str, measure_start_ns: int, stop_ns: int
    ) -> None:
        while not self._stop.is_set():
            start = time.perf_counter_ns()
            if start >= stop_ns:
                self._stop.set()
                return
            index = self._next_index(start, measure_start_ns)
            if index is None:
                return
            await self._timed(session, url, index, start, measure_start_ns)

    async def _open_scheduler(
        self,
        session: aiohttp.ClientSession,
        url: str,
        t0_ns: int,
        measure_start_ns: int,
        stop_ns: int,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        assert self.cfg.rate is not None and self.cfg.rate > 0
        interval_ns = int(1e9 / self.cfg.rate)
        slots = asyncio.Semaphore(self.cfg.concurrency)
        slot = 0
        while not self._stop.is_set():
            scheduled = t0_ns + slot * interval_ns
            if scheduled >= stop_ns:
                self._stop.set()
                return
            delay = (scheduled - time.perf_counter_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            index = self._next_index(scheduled, measure_start_ns)
            if index is None:
                return
            await slots.acquire()
            if time.perf_counter_ns() - scheduled > 5_000_000:
                self._behind += scheduled >= measure_start_ns
            task = asyncio.create_task(self._timed(session, url, index, scheduled, measure_start_ns))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda _t: slots.release())
            slot += 1

    async def run(self) -> LoadResult:
        cfg = self.cfg
        url = cfg.base_url.rstrip("/") + cfg.path
        connector = aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=0, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        self.emit("loadgen_started")
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            t0 = time.perf_counter_ns()
            measure_start = t0 + int(cfg.warmup * 1e9)
            stop_at = measure_start + int(cfg.duration * 1e9)
            edges: dict[str, float] = {}

            async def mark_start() -> None:
                await asyncio.sleep(max((measure_start - time.perf_counter_ns()) / 1e9, 0.0))
                edges["cpu"] = _cpu_now()
                edges["unix"] = time.time()
                edges["start"] = time.perf_counter_ns()
                self.emit("measure_start")

            marker = asyncio.create_task(mark_start())
            tasks: set[asyncio.Task[None]] = set()
            if cfg.rate:
                workers = [
                    asyncio.create_task(self._open_scheduler(session, url, t0, measure_start, stop_at, tasks))
                ]
            else:
                workers = [
                    asyncio.create_task(self._closed_worker(session, url, measure_start, stop_at))
                    for _ in range(cfg.concurrency)
                ]
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop_wait], timeout=max((stop_at - time.perf_counter_ns()) / 1e9, 0.0) + 0.05)
            self._stop.set()
            await marker  # the window has started before it can end
            end_ns = time.perf_counter_ns()
            cpu_end = _cpu_now()
            self.emit("measure_end")
            # drain what is in flight, bounded; what is left is recorded as unfinished
            pending = [*workers, *tasks]
            _done, still = await asyncio.wait(pending, timeout=cfg.drain_timeout) if pending else ((), ())
            for task in still:
                task.cancel()
            for task in still:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stop_wait.cancel()
        rusage = resource.getrusage(resource.RUSAGE_SELF)
        return LoadResult(
            mode="open" if cfg.rate else "closed",
            window_s=(end_ns - int(edges["start"])) / 1e9,
            measure_start_unix=edges["unix"],
            start_offsets_us=list(self.rec.starts),
            latencies_us=list(self.rec.latencies),
            statuses=list(self.rec.statuses),
            warmup_requests=self.rec.warmup_requests,
            warmup_ok=self.rec.warmup_ok,
            cpu_s=cpu_end - edges["cpu"],
            rss_peak_kib=int(rusage.ru_maxrss),
            behind_schedule=self._behind,
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m paycore.benchmark.loadgen CONFIG.json RESULT.json\n")
        return 2
    config = msgspec.json.decode(Path(args[0]).read_bytes(), type=LoadConfig)
    if not config.base_url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        sys.stderr.write("loadgen: only loopback targets are allowed\n")
        return 2
    result = asyncio.run(LoadGenerator(config).run())
    Path(args[1]).write_bytes(msgspec.json.encode(result))
    _emit_stdout("loadgen_done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
