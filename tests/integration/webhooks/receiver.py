"""A real HTTP webhook receiver on 127.0.0.1 (aiohttp.web) that records what it gets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    statuses: list[int] = field(default_factory=list)  # consumed one per request; then `default`
    default: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.in_flight = 0
        self.peak = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.arrived = asyncio.Event()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def behave(self, path: str, **kw: Any) -> None:
        self.behaviours[path] = Behaviour(**kw)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            body = await request.read()
            behaviour = self.behaviours.get(request.path, Behaviour())
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            self.received.append(Received(request.path, dict(request.headers), body))
            self.arrived.set()
            status = behaviour.statuses.pop(0) if behaviour.statuses else behaviour.default
            return web.Response(status=status, text="ok", headers=behaviour.headers)
        finally:
            self.in_flight -= 1

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"receiver: condition not met; got {len(self.received)} requests")
            await asyncio.sleep(0.02)
