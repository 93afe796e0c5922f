"""A minimal in-process ASGI driver: one HTTP request with exact control over when the client
goes away (`disconnect_after`), plus the lifespan of a whole app. No sockets, no server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0
    completed: bool = False  # the final body chunk was sent

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    body: bytes | None = None,
    disconnect_after: float | None = None,
    send_content_length: bool = True,
) -> Reply:
    """Drive one request through `app`; `disconnect_after` seconds in, the client leaves."""
    raw = body if body is not None else (json.dumps(json_body).encode() if json_body is not None else b"")
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    if json_body is not None:
        hdrs.setdefault("content-type", "application/json")
    if raw and send_content_length:
        hdrs["content-length"] = str(len(raw))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.partition("?")[0],
        "raw_path": path.partition("?")[0].encode(),
        "query_string": path.partition("?")[2].encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    reply = Reply()
    gone = asyncio.Event()
    body_sent = False
    loop = asyncio.get_running_loop()
    timer = loop.call_later(disconnect_after, gone.set) if disconnect_after is not None else None

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            raise OSError("client disconnected")
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")
            if not message.get("more_body", False):
                reply.completed = True

    started = time.perf_counter()
    try:
        await app(scope, receive, send)
    finally:
        reply.elapsed = time.perf_counter() - started
        if timer is not None:
            timer.cancel()
    return reply


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[Any]:
    """Run the app's ASGI lifespan: startup before the block, shutdown after it."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": {}}
    runner = asyncio.ensure_future(app(scope, receive, send))
    try:
        await inbox.put({"type": "lifespan.startup"})
        started = await asyncio.wait_for(outbox.get(), 30)
        if started["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {started}")
        yield app
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(outbox.get(), 30)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(runner, 5)
