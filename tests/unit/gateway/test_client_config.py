"""Client construction from settings (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from paycore.config import load_settings
from paycore.gateway.epx.client import EpxServerPostClient
from paycore.gateway.epx.reporting import EpxReportingClient
from paycore.gateway.port import TransactionProcessor, TransactionReport
from paycore.platform.resilience.breaker import CircuitBreaker

pytestmark = pytest.mark.unit

SESSION: Any = object()  # never used by the constructors


def test_server_post_client_from_settings() -> None:
    settings = load_settings({"PAYCORE_ENV": "test", "PAYCORE_EPX_SERVER_POST_URL": "https://sim.test/"})
    breaker = CircuitBreaker("unit_cfg")
    client = EpxServerPostClient.from_settings(SESSION, breaker, settings)
    assert client.breaker is breaker
    assert client._url == "https://sim.test/"
    assert (client._attempt_timeout, client._call_timeout) == (10.0, 30.0)
    policy = client._policy
    assert (policy.max_attempts, policy.base, policy.multiplier, policy.cap, policy.jitter) == (
        3,
        0.1,
        2.0,
        30.0,
        0.1,
    )
    processor: TransactionProcessor = client  # structural: implements the port
    assert processor is client


def test_invalid_client_options_refused() -> None:
    with pytest.raises(ValueError):
        EpxServerPostClient(SESSION, "https://x/", CircuitBreaker("unit_cfg2"), attempt_timeout=0)
    with pytest.raises(ValueError):
        EpxServerPostClient(SESSION, "https://x/", CircuitBreaker("unit_cfg3"), max_attempts=0)


def test_reporting_client_from_settings() -> None:
    settings = load_settings({"PAYCORE_ENV": "test", "PAYCORE_EPX_REPORTING_URL": "https://sim.test/base/"})
    client = EpxReportingClient.from_settings(SESSION, settings)
    assert client._url == "https://sim.test/base/reporting/transactions"
    assert client._timeout == 30.0
    report: TransactionReport = client
    assert report is client
    with pytest.raises(ValueError, match="REPORTING_URL"):
        EpxReportingClient.from_settings(SESSION, load_settings({"PAYCORE_ENV": "test"}))
