from __future__ import annotations

import pytest

from paycore.bootstrap import build_container
from paycore.platform.db import Query, Tier
from tests.integration.worker.jobs_for_tests import ensure_table
from tests.support.stack import stack_settings

WORKER_ENV = {
    "PAYCORE_JOB_LEASE": "1s",
    "PAYCORE_JOB_POLL_INTERVAL": "50ms",
    "PAYCORE_JOB_RETRY_BASE": "50ms",
    "PAYCORE_JOB_RETRY_CAP": "100ms",
}

RUNS = Query(
    "test.runs",
    Tier.SIMPLE,
    "SELECT job, key, phase, worker, attempt, scheduled_for, traceparent FROM test_job_runs ORDER BY seq",
)


@pytest.fixture
def worker_settings(clean_db, epx_sim):
    return stack_settings(clean_db, epx_sim, **WORKER_ENV)


@pytest.fixture
async def make_container(worker_settings):
    built = []

    async def make(label: str = "w1", **extra: str):
        settings = worker_settings
        if extra:
            settings = stack_settings(
                worker_settings.database_url, _SimUrls(worker_settings), **WORKER_ENV, **extra
            )
        container = await build_container(settings)
        container.extras["worker_label"] = label
        await ensure_table(container.db)
        built.append(container)
        return container

    yield make
    for container in built:
        await container.aclose()


class _SimUrls:
    def __init__(self, settings) -> None:
        self.server_post_url = settings.epx_server_post_url
        self.reporting_url = settings.epx_reporting_url
        self.key_exchange_url = settings.epx_key_exchange_url
        self.browser_post_url = settings.epx_browser_post_url


async def runs(container) -> list[dict]:
    return [dict(r) for r in await container.db.fetch(RUNS)]
