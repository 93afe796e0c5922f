from __future__ import annotations

import uuid

import msgspec
import pytest

from paycore.bootstrap import build_container
from paycore.gateway.port import MerchantKey
from paycore.kernel.ids import uuid7
from paycore.merchants.model import Principal
from paycore.platform.db import Query, Tier
from tests.integration.webhooks.receiver import Receiver
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY

WEBHOOK_ENV = {
    "PAYCORE_WEBHOOK_ALLOW_PRIVATE": "true",
    "PAYCORE_WEBHOOK_RETRY_SCHEDULE": "300ms,300ms,300ms",
    "PAYCORE_WEBHOOK_TIMEOUT": "2s",
}

INSERT_EVENT = Query(
    "test.insert_event",
    Tier.SIMPLE,
    "INSERT INTO outbox_events (id, merchant_id, event_type, aggregate_type, aggregate_id, payload) "
    "VALUES ($1, $2, $3, 'payment', $4, $5)",
)


@pytest.fixture
async def make_container(clean_db, epx_sim):
    built = []

    async def make(**extra: str):
        container = await build_container(stack_settings(clean_db, epx_sim, **{**WEBHOOK_ENV, **extra}))
        built.append(container)
        return container

    yield make
    for container in built:
        await container.aclose()


@pytest.fixture
async def container(make_container):
    return await make_container()


@pytest.fixture
async def principal(container) -> Principal:
    merchant = await container.merchants.create_merchant(
        slug="acme", name="Acme", environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
    )
    return Principal(merchant=merchant, mode="test")


@pytest.fixture
async def other_principal(container) -> Principal:
    merchant = await container.merchants.create_merchant(
        slug="globex",
        name="Globex",
        environment="sandbox",
        epx=MerchantKey(cust_nbr="9002", merch_nbr="900301", dba_nbr="2", terminal_nbr="78"),
    )
    return Principal(merchant=merchant, mode="test")


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def add_event(container, principal, event_type="payment.succeeded", data=None) -> uuid.UUID:
    event_id = uuid7()
    payload = {"object": data or {"id": str(uuid.uuid4()), "amount": 1050}}
    await container.db.execute(
        INSERT_EVENT, event_id, principal.merchant.id, event_type, uuid.uuid4(), payload
    )
    return event_id


def decode(body: bytes):
    return msgspec.json.decode(body)
