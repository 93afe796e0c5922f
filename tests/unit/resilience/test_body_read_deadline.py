"""API-3: the body-read deadline of the request envelope. From the app's first read of a body, the
whole body must arrive within `body_read_timeout`, else 408 `body_read_timeout` and the handler
never runs; requests without a body and the 413 cap are not affected."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from paycore.middleware import RequestEnvelope
from paycore.platform.shutdown import Lifecycle

pytestmark = pytest.mark.unit


def envelope(app: Any, *, body_read_timeout: float = 0.3, max_body_bytes: int = 1024) -> RequestEnvelope:
    lifecycle = Lifecycle()
    lifecycle.ready = True
    return RequestEnvelope(
        app,
        lifecycle=lifecycle,
        request_timeout=5.0,
        max_body_bytes=max_body_bytes,
        slow_request=10.0,
        max_queries=10,
        body_read_timeout=body_read_timeout,
    )


class BodyApp:
    """Reads the whole body, then answers 200 with its length; records whether it got that far."""

    def __init__(self, *, read: bool = True) -> None:
        self.read = read
        self.processed = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        if self.read:
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        self.processed = True
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def drive(
    app: Any,
    chunks: list[tuple[float, bytes]],
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes, float]:
    """One request whose body arrives as (delay before it, bytes) chunks."""
    total = sum(len(c) for _, c in chunks)
    hdrs = {"content-length": str(total), **(headers or {})} if chunks else dict(headers or {})
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": "/v1/payments",
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
    }
    pending = list(chunks)
    gone = asyncio.Event()
    reply: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}

    async def receive() -> dict[str, Any]:
        if pending:
            delay, data = pending.pop(0)
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": data, "more_body": bool(pending)}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply["status"] = message["status"]
            reply["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            reply["body"] += message.get("body", b"")

    started = time.perf_counter()
    await app(scope, receive, send)
    return reply["status"], reply["headers"], reply["body"], time.perf_counter() - started


async def test_a_slow_body_is_cut_with_408_and_never_processed() -> None:
    app = BodyApp()
    chunks = [(0.0, b'{"amount"'), (0.2, b": 1"), (0.2, b", "), (0.2, b'"x": 2}')]
    status, headers, body, elapsed = await drive(envelope(app, body_read_timeout=0.3), chunks)
    assert status == 408
    problem = json.loads(body)
    assert problem["code"] == "body_read_timeout" and problem["status"] == 408
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert not app.processed
    assert 0.3 <= elapsed < 1.5  # not before the deadline; the upper bound only catches a hang


async def test_a_client_that_never_starts_its_body_is_cut_too() -> None:
    app = BodyApp()
    status, _, _, elapsed = await drive(envelope(app, body_read_timeout=0.2), [(3600.0, b"{}")])
    assert status == 408 and not app.processed and elapsed < 0.5


async def test_the_deadline_covers_the_whole_body_not_each_chunk() -> None:
    app = BodyApp()
    chunks = [(0.0, b"a")] + [(0.08, b"b")] * 6  # every chunk on time, the whole not
    status, _, _, elapsed = await drive(envelope(app, body_read_timeout=0.3), chunks)
    assert status == 408 and not app.processed and elapsed < 0.5


async def test_a_body_within_the_deadline_is_served() -> None:
    app = BodyApp()
    chunks = [(0.0, b"{"), (0.05, b'"a": 1'), (0.05, b"}")]
    status, _, body, _ = await drive(envelope(app, body_read_timeout=1.0), chunks)
    assert status == 200 and body == b"8" and app.processed


async def test_requests_without_a_body_are_not_concerned() -> None:
    app = BodyApp()  # reads `receive` once: the envelope answers an empty body at once
    status, _, body, _ = await drive(envelope(app, body_read_timeout=0.05), [], method="GET")
    assert status == 200 and body == b"0"  # a 0.05 s body deadline would have answered 408
    slow_handler = BodyApp(read=False)

    async def handler_slower_than_the_body_deadline(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.2)  # the body deadline is not a request deadline
        await slow_handler(scope, receive, send)

    status, _, _, _ = await drive(
        envelope(handler_slower_than_the_body_deadline, body_read_timeout=0.05), [], method="GET"
    )
    assert status == 200


async def test_the_clock_starts_at_the_first_read_of_the_body() -> None:
    """A handler that works before reading (auth, say) does not eat the client's body budget."""
    inner = BodyApp()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.3)
        await inner(scope, receive, send)

    status, _, _, _ = await drive(envelope(app, body_read_timeout=0.2), [(0.0, b"{}")])
    assert status == 200 and inner.processed


async def test_the_413_cap_still_applies() -> None:
    app = BodyApp()
    status, _, body, _ = await drive(envelope(app, max_body_bytes=10), [(0.0, b"x" * 11)])
    assert status == 413 and json.loads(body)["code"] == "body_too_large" and not app.processed
    chunked = {"transfer-encoding": "chunked"}
    scope_chunks = [(0.0, b"x" * 8), (0.0, b"x" * 8)]
    app2 = BodyApp()
    status, _, body, _ = await drive(envelope(app2, max_body_bytes=10), scope_chunks, headers=chunked)
    assert status == 413 and not app2.processed
