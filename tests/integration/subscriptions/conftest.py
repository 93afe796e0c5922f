from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from paycore.bootstrap import build_container
from paycore.kernel.clock import FixedClock
from tests.integration.subscriptions.helpers import Billing
from tests.support.stack import stack_settings

# paycore's billing clock in these tests (the gateway keeps real time)
T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def container(clean_db, epx_sim, clock):
    settings = stack_settings(clean_db, epx_sim, PAYCORE_BILLING_LEASE="5m", PAYCORE_BILLING_BATCH_SIZE="7")
    built = await build_container(settings)
    assert built.subscriptions is not None
    built.subscriptions.clock = clock
    yield built
    await built.aclose()


@pytest.fixture
async def billing(container, principal, clock, epx_sim, sim_control) -> Billing:
    helper = Billing(container, principal, clock, epx_sim, sim_control)
    await helper.start()
    return helper


@pytest.fixture
def customer() -> str:
    return f"cus_{uuid.uuid4().hex[:10]}"
