"""A quick load check of a running simulator: `python -m paycore.epx_sim.loadtest --url URL`.

Sends card sales (unique TRAN_NBRs) from N concurrent keep-alive connections for a few seconds and
prints one JSON line: requests/s and client-side latency percentiles. Not a benchmark of paycore.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from urllib.parse import urlencode

import aiohttp

_FIELDS = (
    ("CUST_NBR", "9001"),
    ("MERCH_NBR", "900300"),
    ("DBA_NBR", "2"),
    ("TERMINAL_NBR", "77"),
    ("TRAN_TYPE", "CCE1"),
    ("AMOUNT", "10.00"),
    ("BATCH_ID", "20260302"),
    ("LOCAL_DATE", "030226"),
    ("LOCAL_TIME", "100000"),
    ("ACCOUNT_NBR", "4111111111111111"),
    ("EXP_DATE", "3012"),
    ("CVV2", "123"),
    ("CARD_ENT_METH", "E"),
    ("INDUSTRY_TYPE", "E"),
    ("ZIP_CODE", "12345"),
)


async def _worker(
    session: aiohttp.ClientSession, url: str, base: str, numbers: list[int], stop_at: float, lat: list[float]
) -> int:
    errors = 0
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    while time.monotonic() < stop_at:
        tran_nbr = numbers.pop()
        body = f"{base}&TRAN_NBR={tran_nbr}".encode()
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as resp:
            text = await resp.read()
        lat.append(time.perf_counter() - started)
        if resp.status != 200 or b'"AUTH_RESP">00<' not in text:
            errors += 1
    return errors


async def run_load(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    base = urlencode(_FIELDS)
    start_nbr = random.SystemRandom().randrange(1_000_000_000, 8_000_000_000)
    numbers = list(range(start_nbr + 5_000_000, start_nbr, -1))
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm up the connections
        await asyncio.gather(
            *(_worker(session, url, base, numbers, time.monotonic() + 0.3, []) for _ in range(2))
        )
        stop_at = time.monotonic() + seconds
        started = time.monotonic()
        errors = await asyncio.gather(
            *(_worker(session, url, base, numbers, stop_at, latencies) for _ in range(concurrency))
        )
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3)

    return {
        "requests": len(latencies),
        "errors": sum(errors),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3),
        "concurrency": concurrency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paycore.epx_sim.loadtest")
    parser.add_argument("--url", required=True, help="Server Post URL of a running simulator")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run_load(args.url, args.concurrency, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
