"""DB-2 / design.md §4: no database connection is held while waiting for the gateway.

The real app (in-process, ASGI lifespan) on a pool of exactly one connection, the simulator
answering one sale only after 2 s. While that sale waits on the gateway, other requests that need
the database — a payment GET, the payment list, even a whole second sale — are served. Had the
slow sale kept the pool's only connection across its gateway call, they would queue behind it
(the acquire timeout is set far above the gateway latency, so they would wait, not fail fast) and
could not finish while it is still in flight."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.resilience.conftest import LiveApp

pytestmark = pytest.mark.integration

GATEWAY_LATENCY_MS = 2000


@pytest.fixture(autouse=True)
async def _clean_faults(sim_control):
    await sim_control.clear_faults()
    yield
    await sim_control.clear_faults()


async def wait_for_gateway(sim_control, amount: str, timeout: float = 10.0) -> None:
    """Until the simulator has received the sale (it then holds the answer for the latency)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if [e for e in await sim_control.ledger(tran_type="CCE1") if e.get("amount") == amount]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the {amount} sale never reached the simulator")


async def test_no_connection_held_during_gateway_call(live_app, token, sim_control) -> None:
    live: LiveApp = await live_app(
        db_min_conns=1,
        db_max_conns=1,
        db_acquire_timeout=30.0,  # a held connection would make the others wait, not fail
        gateway_attempt_timeout=10.0,
        gateway_timeout=10.0,
        service_critical_timeout=12.0,
        service_noncritical_timeout=12.0,
        service_timeout=13.0,
        request_timeout=15.0,
    )
    assert live.container.db.pool.get_max_size() == 1
    earlier = await live.pay(2200, token)  # warms the API-key cache; a payment to read back
    assert earlier.status == 201, earlier.body
    payment_id = earlier.json()["id"]

    await sim_control.add_fault(
        {"match": {"amount": "22.01"}, "action": {"type": "latency", "ms": GATEWAY_LATENCY_MS}}
    )
    slow = asyncio.create_task(live.pay(2201, token))
    await wait_for_gateway(sim_control, "22.01")
    assert not slow.done()

    one = await live.get(f"/v1/payments/{payment_id}")
    listing = await live.get("/v1/payments?limit=10")
    second = await live.pay(2202, token)  # a whole sale: idempotency, pending row, outcome
    still_waiting = not slow.done()
    reply = await slow

    assert one.status == 200 and one.json()["id"] == payment_id, one.body
    assert listing.status == 200 and payment_id in {p["id"] for p in listing.json()["data"]}
    assert second.status == 201 and second.json()["status"] == "approved", second.body
    assert still_waiting, (
        "the other requests could only finish after the slow sale: its gateway call held the "
        f"pool's only connection (GET {one.elapsed:.2f}s, list {listing.elapsed:.2f}s, "
        f"sale {second.elapsed:.2f}s)"
    )
    assert reply.status == 201 and reply.json()["status"] == "approved", reply.body
    assert live.container.db.pool.get_size() == 1
