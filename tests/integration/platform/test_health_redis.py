"""RES-10 `/health`: the Redis check when the rate limits live in Redis — a real `redis-server`
answers PING (healthy), then is stopped (degraded: the limits fail open)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from paycore.config import load_settings
from paycore.platform.health import RedisCheck, Status
from paycore.platform.ratelimit import RateLimits, RedisWindows
from tests.support.stack import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_port() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _pong(port):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield port, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


async def test_redis_check_follows_the_server(redis_port: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = redis_port
    limits = RateLimits.from_settings(
        load_settings({"PAYCORE_ENV": "test", "PAYCORE_RATE_LIMIT_STORAGE": f"redis://127.0.0.1:{port}/0"})
    )
    try:
        assert isinstance(limits.backend, RedisWindows)
        check = RedisCheck(limits.backend)
        assert (await check.probe()).status is Status.HEALTHY
        proc.kill()
        proc.wait(5)
        started = time.monotonic()
        down = await check.probe()
        assert down.status is Status.DEGRADED and str(port) not in down.message
        assert time.monotonic() - started < 2.0  # the storage's socket timeouts bound it
    finally:
        await limits.aclose()
