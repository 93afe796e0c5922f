"""A TCP proxy on the test's event loop, to take a dependency away from a real server process:

proxy = await TcpProxy("127.0.0.1", 5432).start()     # point the server at proxy.port
await proxy.refuse()      # every connection reset, new ones refused: "the database is down"
proxy.blackhole()         # connections stay open but nothing moves: "the database hangs"
await proxy.restore()     # forwarding again, on the same port
await proxy.close()
"""

from __future__ import annotations

import asyncio
from typing import Any, Self


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._flowing.wait()  # blackholed: the client's connect "succeeds", then nothing
            if writer.transport.is_closing():  # refused meanwhile
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except asyncio.CancelledError:
            writer.transport.abort()  # ends quietly (asyncio's stream callback would log it)
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    def blackhole(self) -> None:
        self._flowing.clear()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._abort_all()
        self._flowing.set()

    async def restore(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        """Stop: every connection aborted, then their handlers end by themselves."""
        await self.refuse()
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=2.0)
            for task in stuck:
                task.cancel()
