from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from paycore.app import create_app
from paycore.platform.observability import tracing
from tests.support.merchants import seed_merchant
from tests.support.stack import stack_settings


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span of the app under test (`inproc_api` installs it), masked like an exported one."""
    exporter = InMemorySpanExporter()
    yield exporter
    tracing.shutdown_tracing()


class InProcessApi:
    def __init__(self, client: AsyncTestClient[Any], api_key: str, merchant_id: str) -> None:
        self.client = client
        self.api_key = api_key
        self.merchant_id = merchant_id

    def headers(self, idempotency_key: str | None = None, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}", **extra}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers


@pytest.fixture
async def inproc_api(clean_db: str, epx_sim: Any, spans: InMemorySpanExporter) -> AsyncIterator[InProcessApi]:
    """The full ASGI app (middleware, lifespan, container) in this process, one sandbox merchant;
    spans go to `spans`."""
    settings = stack_settings(clean_db, epx_sim)
    merchant, secret = await seed_merchant(settings, clean_db)
    app = create_app(settings)
    tracing.configure_tracing(1.0, exporter=spans)  # create_app installed the settings' provider
    async with AsyncTestClient(app=app) as client:
        yield InProcessApi(client, secret, str(merchant.id))
