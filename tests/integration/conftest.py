"""Fixtures shared by the integration tests: paycore wired to the worker's database and the
simulator, one sandbox merchant (and another for tenancy checks), a card token."""

from __future__ import annotations

import pytest

from paycore.bootstrap import Container, build_container
from paycore.gateway.port import MerchantKey
from paycore.merchants.model import Principal
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY, mint_token


@pytest.fixture
async def container(clean_db, epx_sim):
    settings = stack_settings(clean_db, epx_sim)
    built = await build_container(settings)
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
async def token(epx_sim) -> str:
    """A BRIC of the sandbox Visa 4111… (what a merchant gets from a Browser Post sale)."""
    return await mint_token(epx_sim.server_post_url)
