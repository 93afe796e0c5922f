"""One dedicated `LISTEN` connection per process, dispatching NOTIFY payloads by channel.

The pool is created with a no-op reset, so session state (`LISTEN`) never goes on a pooled
connection (design.md §2): the listener opens its own connection, outside the pool and the
`PAYCORE_DB_CONN_BUDGET`. Handlers run synchronously on the event loop and must be quick (spawn a
supervised task for I/O). After the connection is (re)established, the `on_connect` hooks run: a
notification may have been missed while it was down, so they reload whatever state the channel
carries (feature-flag overrides, for instance).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.db.listener")

Handler = Callable[[str], None]
Hook = Callable[[], Awaitable[object]]


class NotificationListener:
    def __init__(
        self,
        dsn: str,
        tasks: TaskSupervisor,
        *,
        application_name: str = "paycore-control-listener",
        retry: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.tasks = tasks
        self.application_name = application_name
        self.retry = retry
        self.listening = asyncio.Event()
        self._handlers: dict[str, list[Handler]] = {}
        self._hooks: list[Hook] = []
        self._started = False

    def subscribe(self, channel: str, handler: Handler) -> None:
        if self._started:
            raise RuntimeError("subscribe before start()")
        self._handlers.setdefault(channel, []).append(handler)

    def on_connect(self, hook: Hook) -> None:
        if self._started:
            raise RuntimeError("register hooks before start()")
        self._hooks.append(hook)

    def start(self) -> None:
        """Listen for the life of the process (a supervised task)."""
        if self._started or not self._handlers:
            return
        self._started = True
        self.tasks.spawn("notification_listener", self.run(), periodic=True)

    async def wait_listening(self, timeout: float) -> bool:
        """Until the connection listens (a process should not serve before it hears admin
        commands); False after `timeout` (logged — the listener keeps retrying)."""
        if not self._started:
            return False
        try:
            await asyncio.wait_for(self.listening.wait(), timeout)
        except TimeoutError:
            log.warning("notification_listener_not_ready", timeout=timeout)
            return False
        return True

    def _dispatch(self, _con: Any, _pid: int, channel: str, payload: str) -> None:
        for handler in self._handlers.get(channel, ()):
            try:
                handler(payload)
            except Exception as exc:  # one bad payload must not stop the listener
                log.warning("notification_handler_failed", channel=channel, error=type(exc).__name__)

    async def run(self) -> None:
        while True:
            con: asyncpg.Connection | None = None
            try:
                con = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": self.application_name}
                )
                lost = asyncio.Event()
                con.add_termination_listener(_setter(lost))
                for channel in self._handlers:
                    await con.add_listener(channel, self._dispatch)
                for hook in self._hooks:
                    try:
                        await hook()
                    except Exception as exc:
                        log.warning("notification_hook_failed", error=type(exc).__name__)
                self.listening.set()
                await lost.wait()
                log.warning("notification_listener_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notification_listener_failed", error=type(exc).__name__)
            finally:
                self.listening.clear()
                if con is not None and not con.is_closed():
                    con.terminate()
            await asyncio.sleep(self.retry)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    def set_event(_con: Any) -> None:
        event.set()

    return set_event
