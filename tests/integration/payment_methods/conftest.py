from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from paycore.app import create_app
from paycore.bootstrap import Container
from tests.integration.payment_methods.helpers import Recorder
from tests.support.merchants import seed_merchant
from tests.support.stack import stack_settings


@pytest.fixture
def recorder(container: Container) -> Recorder:
    """Every gateway request paycore builds (payment methods and payments), before it is sent."""
    spy = Recorder(container.payment_methods.gateway)
    container.payment_methods.gateway = spy
    container.payments.gateway = spy
    return spy


class InProcessApi:
    """The full ASGI app (middleware, lifespan, container) in this process, one sandbox merchant."""

    def __init__(self, client: Any, api_key: str, merchant_id: str, app: Any) -> None:
        self.client = client
        self.api_key = api_key
        self.merchant_id = merchant_id
        self.app = app

    def headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    @property
    def container(self) -> Container:
        return self.app.state.container  # type: ignore[no-any-return]


@pytest.fixture
async def api(clean_db: str, epx_sim: Any) -> AsyncIterator[InProcessApi]:
    settings = stack_settings(clean_db, epx_sim)
    merchant, secret = await seed_merchant(settings, clean_db)
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        yield InProcessApi(client, secret, str(merchant.id), app)
