"""OPS: with several server workers, /metrics aggregates every worker (prometheus_client
multiprocess mode), stale files are cleaned at start and a worker's live gauges go with it."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.stack import ServerProcess, stack_env

pytestmark = pytest.mark.e2e

HEALTHZ = re.compile(r'^http_requests_total\{code="200",method="GET",route="/healthz"\} (\S+)$', re.M)
RSS = re.compile(r'^process_resident_memory_bytes\{pid="(\d+)"\} (\S+)$', re.M)


def _healthz_count(text: str) -> float:
    return sum(float(v) for v in HEALTHZ.findall(text))


def _per_worker_counts(directory: Path) -> dict[int, float]:
    """Each worker's own counter file, read on its own."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        alone = Path(tempfile.mkdtemp(prefix="paycore-one-worker-"))
        try:
            shutil.copy(path, alone / path.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, str(alone))
            counts[pid] = _healthz_count(generate_latest(registry).decode())
        finally:
            shutil.rmtree(alone)
    return counts


async def test_metrics_aggregate_two_workers(clean_db, epx_sim, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale garbage from an earlier run")
    env = stack_env(clean_db, epx_sim, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PAYCORE_DB_MAX_CONNS="5")
    server = ServerProcess(env, workers=2)
    await asyncio.to_thread(server.start)
    try:
        assert not (metrics_dir / "counter_999999.db").exists()  # cleaned before workers started
        sent = 0
        per_worker: dict[int, float] = {}
        for _ in range(20):  # fresh connections, concurrently, until both workers served some
            connector = aiohttp.TCPConnector(force_close=True, limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def hit(session: aiohttp.ClientSession = http) -> int:
                    async with session.get(server.url + "/healthz") as r:
                        return r.status

                statuses = await asyncio.gather(*(hit() for _ in range(40)))
            assert set(statuses) == {200}
            sent += len(statuses)
            per_worker = {pid: n for pid, n in _per_worker_counts(metrics_dir).items() if n > 0}
            if len(per_worker) >= 2:
                break
        assert len(per_worker) == 2, per_worker  # both workers answered

        async with aiohttp.ClientSession() as http:
            scrapes = []
            for _ in range(6):  # whichever worker answers the scrape, it reports the sum
                async with http.get(server.url + "/metrics") as r:
                    scrapes.append(await r.text())
        for text in scrapes:
            assert _healthz_count(text) == sent == sum(per_worker.values())
            pids = {int(pid) for pid, _ in RSS.findall(text)}
            assert set(per_worker) <= pids  # process gauges of each worker, labelled by pid
    finally:
        assert server.terminate(timeout=40) == 0
    # each worker removed its live gauges when it stopped
    assert [p.name for p in metrics_dir.glob("gauge_live*.db")] == []
