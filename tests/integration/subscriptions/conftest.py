from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from paycore.bootstrap import Container, build_container
from paycore.gateway.port import MerchantKey
from paycore.kernel.clock import FixedClock
from paycore.merchants.model import Principal
from tests.integration.subscriptions.helpers import Billing
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY

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
async def merchant(container: Container):
    return await container.merchants.create_merchant(
        slug="acme", name="Acme", environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
    )


@pytest.fixture
async def principal(merchant) -> Principal:
    return Principal(merchant=merchant, mode="test")


@pytest.fixture
async def other_principal(container: Container) -> Principal:
    other = await container.merchants.create_merchant(
        slug="globex",
        name="Globex",
        environment="sandbox",
        epx=MerchantKey(cust_nbr="9002", merch_nbr="900301", dba_nbr="2", terminal_nbr="78"),
    )
    return Principal(merchant=other, mode="test")


@pytest.fixture
async def billing(container, principal, clock, epx_sim, sim_control) -> Billing:
    helper = Billing(container, principal, clock, epx_sim, sim_control)
    await helper.start()
    return helper


@pytest.fixture
def customer() -> str:
    return f"cus_{uuid.uuid4().hex[:10]}"
