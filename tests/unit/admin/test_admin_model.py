"""Admin rules: token format and hashing, credential kinds, control-channel payloads, bounds."""

from __future__ import annotations

import uuid

import pytest

from paycore.admin import model
from paycore.admin.model import AdminActor


def test_admin_tokens_are_random_well_formed_and_stored_as_keyed_hashes():
    a, b = model.generate_admin_token(), model.generate_admin_token()
    assert a != b and model.TOKEN_PATTERN.match(a) and len(a) == 43
    assert model.credential_kind(a) == "admin"
    digest = model.hash_admin_token(a, "server-secret")
    assert len(digest) == 32 and digest == model.hash_admin_token(a, "server-secret")
    assert digest != model.hash_admin_token(a, "another-secret")
    assert a[10:30] not in model.display_prefix(a) and model.display_prefix(a).startswith("ak_")


@pytest.mark.parametrize(
    ("bearer", "kind"),
    [
        ("sk_test_" + "a" * 32, "merchant"),
        ("sk_live_" + "B" * 32, "merchant"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln", "merchant"),
        ("ak_" + "z" * 40, "admin"),
        ("ak_" + "z" * 39, "invalid"),
        ("ak_" + "z" * 39 + "!", "invalid"),
        ("", "invalid"),
        ("Bearer ak_" + "z" * 40, "invalid"),
    ],
)
def test_credential_kind(bearer, kind):
    assert model.credential_kind(bearer) == kind


def test_the_audit_actor_names_the_token():
    actor = AdminActor(token_id=uuid.uuid4(), name="alice")
    assert actor.actor == "admin:alice"


@pytest.mark.parametrize("name", ["ops", "on-call bot", "alice@example.com", "a" * 100])
def test_valid_token_names(name):
    assert model.valid_token_name(name)


@pytest.mark.parametrize("name", ["", " ops", "a" * 101, "semi;colon", "new\nline"])
def test_invalid_token_names(name):
    assert not model.valid_token_name(name)


@pytest.mark.parametrize("action", model.BREAKER_ACTIONS)
def test_breaker_commands_round_trip(action):
    payload = model.breaker_command("gateway_server_post", action, "abc123")
    assert model.parse_breaker_command(payload) == ("gateway_server_post", action, "abc123")


@pytest.mark.parametrize(
    "payload", ["flags", "breaker|x|explode|o", "breaker|x|open", "pm|1|2|3", "breaker|x|open|o|extra"]
)
def test_other_payloads_are_not_breaker_commands(payload):
    assert model.parse_breaker_command(payload) is None


def test_merchant_evictions_are_read_among_other_cache_items():
    a, b = uuid.uuid4(), uuid.uuid4()
    payload = ";".join(
        [
            f"pm|{uuid.uuid4()}|{uuid.uuid4()}|cust",
            model.merchant_eviction(a),
            "mc|api_key|00ff|",
            "mc|merchant|not-a-uuid|",
            model.merchant_eviction(b),
        ]
    )
    assert model.parse_merchant_evictions(payload) == [a, b]
    assert model.parse_merchant_evictions("pm|||") == []


@pytest.mark.parametrize(("asked", "got"), [(None, 10), (1, 1), (50, 50), (0, None), (51, None), (-3, None)])
def test_snapshot_limit_is_bounded(asked, got):
    assert model.snapshot_limit(asked) == got


def test_audit_outcome():
    assert [model.audit_outcome(s) for s in (200, 204, 399, 400, 401, 500)] == [
        "success",
        "success",
        "success",
        "failure",
        "failure",
        "failure",
    ]
