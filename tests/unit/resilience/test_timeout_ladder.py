"""RES-7: the production timeout ladder and the test profile keep their invariants."""

from __future__ import annotations

import dataclasses

import pytest

from paycore.config import load_settings, production_timeout_invariants
from tests.support.stack import stack_env

pytestmark = pytest.mark.unit

PRODUCTION = {
    "PAYCORE_ENV": "production",
    "PAYCORE_API_KEY_SECRET": "a" * 40,
    "PAYCORE_CURSOR_SECRET": "b" * 40,
    "PAYCORE_ENCRYPTION_KEYS": "v1:ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=",
    "PAYCORE_EPX_SERVER_POST_URL": "https://gateway.example.com/",
    "DATABASE_URL": "postgresql://paycore@db/paycore",
}


def test_timeout_invariants() -> None:
    settings = load_settings(PRODUCTION)
    assert settings.is_production
    assert production_timeout_invariants(settings) == []
    # the documented defaults of the ladder (roadmap §2.2)
    assert (settings.request_timeout, settings.service_timeout) == (60.0, 50.0)
    assert (settings.service_critical_timeout, settings.service_noncritical_timeout) == (45.0, 30.0)
    assert (settings.gateway_timeout, settings.gateway_attempt_timeout) == (30.0, 10.0)
    assert settings.db_acquire_timeout == 2.0 and settings.tx_timeout == 10.0


def test_one_payment_fits_its_budget() -> None:
    """DB 5 s + gateway 30 s (10 s, 100 ms, 10 s, 200 ms, 10 s) fit the money-moving budget."""
    s = load_settings(PRODUCTION)
    waits = s.retry_base * (1 + s.retry_multiplier) * (1 + s.retry_jitter)
    attempts = s.gateway_max_attempts * s.gateway_attempt_timeout
    assert attempts + waits <= s.gateway_timeout + 1.0
    assert s.query_timeout_standard + s.gateway_timeout < s.service_critical_timeout


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        ({"gateway_attempt_timeout": 4.0}, "attempt >= 5 s"),
        ({"gateway_timeout": 8.0}, "gateway call >= attempt"),
        ({"service_timeout": 40.0}, "service >= 5 s + gateway call + 10 s"),
        ({"request_timeout": 50.0}, "request > service"),
        ({"service_noncritical_timeout": 45.0}, "money-moving > non-critical"),
        ({"job_timeout": 120.0}, "job run >= 5 min and > request"),
    ],
)
def test_each_broken_invariant_is_named(change: dict[str, float], broken: str) -> None:
    settings = dataclasses.replace(load_settings(PRODUCTION), **change)
    assert broken in production_timeout_invariants(settings)


def test_test_profile_keeps_the_order_of_the_ladder() -> None:
    class Sim:
        server_post_url = "http://127.0.0.1:1/"
        reporting_url = key_exchange_url = browser_post_url = "http://127.0.0.1:1"

    s = load_settings(stack_env("postgresql://x@127.0.0.1/db", Sim()))
    assert s.gateway_attempt_timeout <= s.gateway_timeout < s.service_critical_timeout
    assert s.service_noncritical_timeout < s.service_critical_timeout < s.service_timeout < s.request_timeout
