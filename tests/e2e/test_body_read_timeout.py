"""API-3 against a real `paycore serve` (PAYCORE_BODY_READ_TIMEOUT=1s): a client that sends its
body a byte at a time gets 408 `body_read_timeout` within the deadline and nothing is processed;
a normal body and a request without one are served as usual."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import _seed_merchant
from tests.support.sim import SimProcess
from tests.support.stack import ServerProcess, stack_env

pytestmark = pytest.mark.e2e

DEADLINE = 1.0


@pytest.fixture
async def slow_body_server(clean_db: str, epx_sim: SimProcess) -> AsyncIterator[tuple[ServerProcess, str]]:
    env = stack_env(clean_db, epx_sim, PAYCORE_BODY_READ_TIMEOUT=f"{DEADLINE:g}s")
    _, api_key = await _seed_merchant(env)
    server = ServerProcess(env)
    await asyncio.to_thread(server.start)
    yield server, api_key
    server.kill()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_a_slow_body_gets_408_within_the_deadline_and_is_not_processed(
    slow_body_server: tuple[ServerProcess, str], clean_db: str, token: str
) -> None:
    server, api_key = slow_body_server
    body = json.dumps({"amount": 4321, "currency": "USD", "token": token}).encode()
    head = (
        "POST /v1/payments HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {api_key}\r\n"
        "Content-Type: application/json\r\n"
        f"Idempotency-Key: {uuid.uuid4().hex}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            for i in range(len(body)):  # ~60 bytes at 4 bytes/s: 15 s for the whole body
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.25)

    try:
        writer.write(head)
        await writer.drain()
        started = time.monotonic()
        sender = asyncio.ensure_future(trickle())
        status, headers, payload = await asyncio.wait_for(read_response(reader), DEADLINE + 5)
        elapsed = time.monotonic() - started
        closed = await asyncio.wait_for(reader.read(), 5) == b""  # the rest is not parsed as a request
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    finally:
        writer.close()
    assert status == 408, payload
    assert DEADLINE * 0.9 <= elapsed < DEADLINE + 1.5, elapsed
    assert headers["content-type"] == "application/problem+json"
    assert headers.get("connection") == "close" and closed, headers
    problem = json.loads(payload)
    assert problem["code"] == "body_read_timeout" and problem["status"] == 408
    assert problem["request_id"] == headers["x-request-id"]
    con = await asyncpg.connect(clean_db)
    try:
        assert await con.fetchval("SELECT count(*) FROM transactions WHERE amount = 4321") == 0
    finally:
        await con.close()


async def test_normal_bodies_and_bodyless_requests_still_work(
    slow_body_server: tuple[ServerProcess, str], token: str
) -> None:
    server, api_key = slow_body_server
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.url + "/v1/payments",
            json={"amount": 1200, "currency": "USD", "token": token},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        ) as r:
            assert r.status == 201, await r.text()
        async with http.get(server.url + "/v1/payments", headers=headers) as r:
            assert r.status == 200
        big = b'{"amount": 1, "currency": "USD", "token": "' + b"A" * (2 * 1024 * 1024) + b'"}'
        async with http.post(
            server.url + "/v1/payments", data=big, headers={**headers, "Idempotency-Key": "big"}
        ) as r:
            assert r.status == 413 and (await r.json())["code"] == "body_too_large"
