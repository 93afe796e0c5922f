"""Cross-process cache invalidation: `NOTIFY paycore_cache_invalidate` received on a dedicated
`LISTEN` connection (design.md §2: pooled connections never hold session state).

Payloads are `;`-separated items; each capability reads only the items of its own prefix
(`pm|…` payment methods, `mc|…` merchant credentials) and ignores the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import asyncpg
import structlog

log = structlog.get_logger("paycore.cache")

CACHE_CHANNEL: Final = "paycore_cache_invalidate"
KEYS_PER_NOTIFY: Final = 40  # NOTIFY payloads are limited to 8000 bytes


async def listen_for_invalidations(
    dsn: str,
    *,
    name: str,
    on_item: Callable[[str], None],
    on_lost: Callable[[], None],
    listening: asyncio.Event,
    retry: float = 1.0,
) -> None:
    """For the life of the process (a supervised task): call `on_item` for every item of every
    notification on the channel. After a lost connection `on_lost` runs (notifications may have
    been missed: drop the caches) and it connects again."""
    while True:
        con: asyncpg.Connection | None = None
        try:
            con = await asyncpg.connect(dsn, server_settings={"application_name": f"paycore-{name}"})
            lost = asyncio.Event()
            con.add_termination_listener(lambda _c, ev=lost: ev.set())

            def received(_con: Any, _pid: int, _channel: str, payload: str) -> None:
                for item in payload.split(";"):
                    try:
                        on_item(item)
                    except Exception as exc:  # one bad item never stops the listener
                        log.warning("cache_invalidation_item_failed", listener=name, error=type(exc).__name__)

            await con.add_listener(CACHE_CHANNEL, received)
            listening.set()
            await lost.wait()
            log.warning("cache_listener_lost", listener=name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("cache_listener_failed", listener=name, error=type(exc).__name__)
        finally:
            listening.clear()
            if con is not None and not con.is_closed():
                con.terminate()
        on_lost()
        await asyncio.sleep(retry)
