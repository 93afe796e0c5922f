"""RES-11 kill switches: the effective-value rule, overrides, switches read at use time, the gauge."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from paycore.config import load_settings
from paycore.platform.cache import AsyncTTLCache
from paycore.platform.flags import FLAGS, FeatureFlags, configured_flags, effective_flags
from paycore.platform.resilience.breaker import CircuitBreaker, CircuitOpenError

ALL_ON = {name: name not in {"detailed_logging", "degraded"} for name in FLAGS}


def test_override_wins_over_configuration():
    assert effective_flags(ALL_ON, {"webhooks": False})["webhooks"] is False
    assert effective_flags({**ALL_ON, "detailed_logging": False}, {"detailed_logging": True})[
        "detailed_logging"
    ]
    assert effective_flags(ALL_ON, {}) == ALL_ON


@pytest.mark.parametrize("source", ["configured", "override"])
def test_degraded_turns_off_webhooks_reporting_and_detailed_logging(source):
    configured = {**ALL_ON, "detailed_logging": True, "degraded": source == "configured"}
    overrides = {"degraded": True, "webhooks": True} if source == "override" else {"webhooks": True}
    flags = effective_flags(configured, overrides)
    assert not flags["webhooks"] and not flags["merchant_reporting"] and not flags["detailed_logging"]
    assert flags["degraded"] and flags["cb"] and flags["merchant_cache"] and flags["compression"]


def test_unknown_overrides_are_ignored():
    assert effective_flags(ALL_ON, {"warp_drive": True}) == ALL_ON
    flags = FeatureFlags(ALL_ON)
    flags.apply({"warp_drive": True, "cb": False})
    assert flags.overrides == {"cb": False}


def test_configured_values_come_from_settings():
    settings = load_settings(
        {"PAYCORE_ENV": "test", "PAYCORE_WEBHOOKS_ENABLED": "false", "PAYCORE_DEGRADED": "true"}
    )
    configured = configured_flags(settings)
    assert configured["webhooks"] is False and configured["degraded"] is True and configured["cb"] is True
    assert set(configured) == set(FLAGS)


def test_a_switch_reads_the_current_value_and_apply_reports_changes():
    flags = FeatureFlags(ALL_ON)
    webhooks = flags.switch("webhooks")
    assert webhooks() is True
    assert flags.apply({"degraded": True}) == {
        "degraded": True,
        "webhooks": False,
        "merchant_reporting": False,
    }  # detailed_logging was already off
    assert webhooks() is False
    assert flags.apply({"degraded": True}) == {}
    assert flags.apply({}) == {"degraded": False, "webhooks": True, "merchant_reporting": True}
    assert webhooks() is True
    with pytest.raises(KeyError):
        flags.switch("nope")


def test_states_show_configured_override_and_effective():
    flags = FeatureFlags(ALL_ON)
    flags.apply({"webhooks": False})
    states = {s.name: s for s in flags.states()}
    assert (states["webhooks"].configured, states["webhooks"].override, states["webhooks"].effective) == (
        True,
        False,
        False,
    )
    assert states["cb"].override is None and states["cb"].effective is True
    assert [s.name for s in flags.states()] == list(FLAGS)


def test_the_gauge_follows_the_effective_value():
    flags = FeatureFlags(ALL_ON)
    flags.apply({"degraded": True})
    for name in ("webhooks", "merchant_reporting", "detailed_logging"):
        assert REGISTRY.get_sample_value("feature_flag_enabled", {"flag": name}) == 0
    assert REGISTRY.get_sample_value("feature_flag_enabled", {"flag": "degraded"}) == 1
    flags.apply({})
    assert REGISTRY.get_sample_value("feature_flag_enabled", {"flag": "webhooks"}) == 1


def test_a_configured_value_is_required_for_every_flag():
    with pytest.raises(ValueError, match="degraded"):
        FeatureFlags({k: v for k, v in ALL_ON.items() if k != "degraded"})


async def test_a_cache_following_a_switch_turns_off_and_comes_back_cold():
    flags = FeatureFlags(ALL_ON)
    cache = AsyncTTLCache[str, int]("flag_test", ttl=60, max_size=10, enabled=flags.switch("pm_cache"))
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert await cache.get_or_load("k", load) == 1
    assert await cache.get_or_load("k", load) == 1  # cached
    flags.apply({"pm_cache": False})
    assert cache.enabled is False
    assert await cache.get_or_load("k", load) == 2  # bypassed, and the old entry dropped
    assert len(cache) == 0
    flags.apply({})
    assert await cache.get_or_load("k", load) == 3  # cold, not the entry from before
    assert await cache.get_or_load("k", load) == 3


def test_a_cache_can_follow_a_switch_after_construction():
    flags = FeatureFlags(ALL_ON)
    cache = AsyncTTLCache[str, int]("flag_test_follow", ttl=60, max_size=10)
    cache.follow(flags.switch("merchant_cache"))
    cache.put("k", 1)
    flags.apply({"merchant_cache": False})
    assert cache.get("k") is None and len(cache) == 0


def test_a_breaker_following_the_switch_is_a_pass_through_when_off():
    flags = FeatureFlags(ALL_ON)
    breaker = CircuitBreaker("flag_test_breaker", enabled=flags.switch("cb"))
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    flags.apply({"cb": False})
    assert breaker.enabled is False
    breaker.acquire().failure()  # admitted, and the failure is not counted
    flags.apply({})
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
