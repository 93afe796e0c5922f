from __future__ import annotations

from pathlib import Path

import pytest

from paycore.config import (
    ConfigError,
    load_settings,
    parse_duration,
    production_timeout_invariants,
    variables,
)

pytestmark = pytest.mark.unit

BASE = {"PAYCORE_ENV": "test"}


def test_defaults_load():
    s = load_settings(BASE)
    assert s.db_max_conns == 25 and s.request_timeout == 60.0 and s.gateway_max_attempts == 3
    assert s.webhook_retry_schedule[0] == 5.0 and s.webhook_retry_schedule[-1] == 86400.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PAYCORE_HTTP_PORT", "70000"),
        ("PAYCORE_DB_MAX_CONNS", "zero"),
        ("PAYCORE_REQUEST_TIMEOUT", "soon"),
        ("PAYCORE_CB_ENABLED", "maybe"),
        ("PAYCORE_ENV", "qa"),
        ("DATABASE_URL", "mysql://x"),
        ("PAYCORE_DB_POOL_WARN_RATIO", "1.5"),
    ],
)
def test_invalid_value_names_the_variable(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, name: value})
    assert str(info.value).startswith(name)


def test_cross_field_rules_name_the_variable():
    with pytest.raises(ConfigError, match=r"^PAYCORE_DB_MIN_CONNS"):
        load_settings({**BASE, "PAYCORE_DB_MIN_CONNS": "30"})
    with pytest.raises(ConfigError, match=r"^PAYCORE_DB_CONN_BUDGET"):
        load_settings({**BASE, "PAYCORE_WORKERS": "4"})


def test_production_requires_secrets_and_refuses_sandbox_hosts():
    with pytest.raises(ConfigError, match=r"^PAYCORE_API_KEY_SECRET"):
        load_settings({"PAYCORE_ENV": "production"})
    env = {
        "PAYCORE_ENV": "production",
        "PAYCORE_API_KEY_SECRET": "x" * 32,
        "PAYCORE_CURSOR_SECRET": "y" * 32,
        "PAYCORE_ENCRYPTION_KEYS": "v1:ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=",
        "PAYCORE_EPX_SERVER_POST_URL": "https://secure.epxuap.com",
    }
    with pytest.raises(ConfigError, match=r"^PAYCORE_EPX_SERVER_POST_URL"):
        load_settings(env)


def test_durations():
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("5m") == 300
    assert parse_duration("24h") == 86400
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_production_timeout_ladder_holds_with_defaults():
    assert production_timeout_invariants(load_settings(BASE)) == []
    bad = load_settings({**BASE, "PAYCORE_GATEWAY_ATTEMPT_TIMEOUT": "1s", "PAYCORE_GATEWAY_TIMEOUT": "2s"})
    assert "attempt >= 5 s" in production_timeout_invariants(bad)


def test_every_variable_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [name for name, _, _ in variables() if f"`{name}`" not in doc]
    assert missing == []


def test_masked_config_hides_secrets():
    s = load_settings({**BASE, "DATABASE_URL": "postgresql://u:hunter2@h/db"})
    shown = s.masked()
    assert "hunter2" not in str(shown)
    assert shown["PAYCORE_API_KEY_SECRET"] == "***"
