"""The request envelope (middleware.RequestEnvelope) around raw ASGI apps: the request deadline
(RES-7), `X-Request-Timeout-Ms`, client-disconnect cancellation (CRITICAL-1) and draining."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from paycore.middleware import RequestEnvelope
from paycore.platform.resilience import deadline as dl
from paycore.platform.shutdown import Lifecycle
from tests.integration.resilience.asgi import call

pytestmark = pytest.mark.unit


def envelope(app: Any, *, timeout: float = 60.0, lifecycle: Lifecycle | None = None) -> RequestEnvelope:
    if lifecycle is None:
        lifecycle = Lifecycle()
        lifecycle.ready = True
    return RequestEnvelope(
        app,
        lifecycle=lifecycle,
        request_timeout=timeout,
        max_body_bytes=1024,
        slow_request=10.0,
        max_queries=10,
    )


class Endless:
    """An app whose handler never finishes; records how it ended and what deadline it saw."""

    def __init__(self, *, read_body: bool = True) -> None:
        self.read_body = read_body
        self.cancelled = asyncio.Event()
        self.remaining: float | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.read_body:
            await receive()
        self.remaining = dl.remaining()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_handler_deadline() -> None:
    app = Endless()
    reply = await call(envelope(app, timeout=0.2), "POST", "/v1/payments", json_body={"a": 1})
    assert reply.status == 504
    assert reply.json()["code"] == "deadline_exceeded"
    assert app.cancelled.is_set()
    assert 0.15 <= reply.elapsed < 2.0


async def test_client_deadline_overrides() -> None:
    app = Endless()
    reply = await call(
        envelope(app, timeout=60.0), "POST", "/x", json_body={}, headers={"X-Request-Timeout-Ms": "1000"}
    )
    assert reply.status == 504 and reply.json()["code"] == "deadline_exceeded"
    assert app.remaining is not None and app.remaining <= 1.0
    assert 0.9 <= reply.elapsed < 5.0


async def test_client_deadline_never_extends_the_server_budget() -> None:
    app = Endless()
    reply = await call(
        envelope(app, timeout=0.2), "POST", "/x", json_body={}, headers={"X-Request-Timeout-Ms": "60000"}
    )
    assert reply.status == 504
    assert reply.elapsed < 2.0


@pytest.mark.parametrize("value", ["soon", "", "1e3"])
async def test_malformed_client_deadline_is_ignored(value: str) -> None:
    app = Endless()
    task = asyncio.ensure_future(
        call(envelope(app, timeout=0.3), "POST", "/x", json_body={}, headers={"X-Request-Timeout-Ms": value})
    )
    reply = await task
    assert reply.status == 504
    assert app.remaining is not None and 0.0 < app.remaining <= 0.3


async def test_deadline_is_visible_to_the_handler_and_cleared_after() -> None:
    seen: list[float | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dl.remaining())
        await ok_app(scope, receive, send)

    reply = await call(envelope(app, timeout=5.0), "GET", "/x")
    assert reply.status == 200
    assert seen[0] is not None and 4.0 < seen[0] <= 5.0
    assert dl.current_deadline() is None


async def test_client_disconnect_cancels_the_handler_at_once() -> None:
    app = Endless()
    reply = await call(envelope(app), "POST", "/v1/payments", json_body={"a": 1}, disconnect_after=0.2)
    assert app.cancelled.is_set()
    assert reply.status == 0  # nothing was answered: nobody is listening
    assert 0.15 <= reply.elapsed < 0.5


async def test_client_disconnect_cancels_a_bodyless_request() -> None:
    """A GET whose handler never reads `receive` is still cancelled when the client leaves."""
    app = Endless(read_body=False)
    reply = await call(envelope(app), "GET", "/v1/payments", disconnect_after=0.2)
    assert app.cancelled.is_set()
    assert reply.elapsed < 0.5


async def test_app_waiting_on_receive_after_the_body_is_cancelled_when_the_client_leaves() -> None:
    """After the body the watcher is the only reader of `receive`; an app waiting there too ends."""
    messages: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        messages.append((await receive())["type"])
        try:
            messages.append((await receive())["type"])
        finally:
            messages.append("end")

    reply = await call(envelope(app), "POST", "/x", json_body={}, disconnect_after=0.1)
    assert messages[0] == "http.request" and messages[-1] == "end"
    assert reply.elapsed < 0.5


async def test_disconnect_after_the_response_cancels_nothing() -> None:
    finished = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await ok_app(scope, receive, send)
        await asyncio.sleep(0.1)  # e.g. the server flushes; the client has already left
        finished.set()

    reply = await call(envelope(app), "POST", "/x", json_body={}, disconnect_after=0.0)
    assert reply.status == 200 or finished.is_set()
    assert finished.is_set()


async def test_fast_request_leaves_no_watcher_behind() -> None:
    before = len(asyncio.all_tasks())
    for _ in range(20):
        assert (await call(envelope(ok_app), "POST", "/x", json_body={})).status == 200
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) <= before


async def test_draining_answers_503_with_retry_after() -> None:
    lifecycle = Lifecycle()
    lifecycle.ready = True
    lifecycle.start_draining()
    reply = await call(envelope(ok_app, lifecycle=lifecycle), "POST", "/v1/payments", json_body={})
    assert reply.status == 503 and reply.json()["code"] == "shutting_down"
    assert reply.headers["retry-after"] == "1"
    health = await call(envelope(ok_app, lifecycle=lifecycle), "GET", "/healthz")
    assert health.status == 200
