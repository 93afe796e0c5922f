"""Webhook rules: Standard Webhooks signatures (checked with the independent `standardwebhooks`
package), the retry schedule, Retry-After, SSRF classification and URL checks."""

from __future__ import annotations

import base64
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paycore.webhooks import model
from paycore.webhooks.delivery import BlockedAddress, GuardedResolver

pytestmark = pytest.mark.unit

SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


def test_signature_verifies_with_the_standardwebhooks_package():
    secret = model.format_secret(os.urandom(32))
    assert secret.startswith("whsec_")
    body = b'{"id":"e1","type":"payment.succeeded","data":{"object":{"amount":1050}}}'
    now = int(datetime.now(UTC).timestamp())
    headers = model.headers([model.secret_key(secret)], "msg_1", now, body)
    assert Webhook(secret).verify(body, headers) == {
        "id": "e1",
        "type": "payment.succeeded",
        "data": {"object": {"amount": 1050}},
    }


def test_signature_matches_the_spec_example():
    # the example of the Standard Webhooks specification
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    sig = model.signature(model.secret_key(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_tampered_body_or_wrong_secret_fails_verification():
    secret = model.format_secret(os.urandom(32))
    other = model.format_secret(os.urandom(32))
    body = b'{"a":1}'
    headers = model.headers([model.secret_key(secret)], "m", int(datetime.now(UTC).timestamp()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_rotation_sends_both_signatures_and_either_secret_verifies():
    new, old = model.format_secret(os.urandom(32)), model.format_secret(os.urandom(32))
    body = b"{}"
    headers = model.headers(
        [model.secret_key(new), model.secret_key(old)], "m", int(datetime.now(UTC).timestamp()), body
    )
    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)


def test_secret_format_and_decoding():
    raw = os.urandom(32)
    secret = model.format_secret(raw)
    assert model.secret_key(secret) == raw
    assert base64.b64decode(secret.removeprefix("whsec_")) == raw
    with pytest.raises(ValueError):
        model.secret_key("whsec_not*base64")
    with pytest.raises(ValueError):
        model.format_secret(b"short")


def test_retry_schedule_without_jitter_is_the_standard_one():
    delays = [model.next_delay(n, SCHEDULE, jitter=0.1, rand=lambda: 0.5) for n in range(1, 10)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    assert model.next_delay(10, SCHEDULE, rand=lambda: 0.5) is None  # exhausted: about 3 days in all
    assert sum(SCHEDULE) / 86400 == pytest.approx(3.2, abs=0.1)


def test_retry_jitter_bounds():
    low = model.next_delay(2, SCHEDULE, jitter=0.1, rand=lambda: 0.0)
    high = model.next_delay(2, SCHEDULE, jitter=0.1, rand=lambda: 0.999999)
    assert low == pytest.approx(270) and high == pytest.approx(330, rel=1e-4)


def test_longer_retry_after_wins():
    assert model.next_delay(1, SCHEDULE, rand=lambda: 0.5, retry_after=60) == 60
    assert model.next_delay(1, SCHEDULE, rand=lambda: 0.5, retry_after=1) == 5


def test_parse_retry_after():
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert model.parse_retry_after("120", now) == 120
    assert model.parse_retry_after("Mon, 02 Mar 2026 10:01:00 GMT", now) == 60
    assert model.parse_retry_after("soon", now) is None
    assert model.parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, model.Verdict.DELIVERED),
        (204, model.Verdict.DELIVERED),
        (410, model.Verdict.GONE),
        (301, model.Verdict.RETRY),
        (400, model.Verdict.RETRY),
        (429, model.Verdict.RETRY),
        (500, model.Verdict.RETRY),
        (None, model.Verdict.RETRY),
    ],
)
def test_verdicts(status, verdict):
    assert model.verdict(status) is verdict


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "ff02::1",
        "not-an-ip",
    ],
)
def test_forbidden_addresses(address):
    assert model.forbidden_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert not model.forbidden_address(address)


def test_url_checks():
    assert model.check_url("https://hooks.example.com/x", allow_private=False) == "hooks.example.com"
    for url in ("http://hooks.example.com/x", "ftp://x.example.com", "https://user:pw@x.example.com/"):
        with pytest.raises(model.UrlProblem) as info:
            model.check_url(url, allow_private=False)
        assert not info.value.forbidden
    for url in (
        "https://127.0.0.1/",
        "https://[::1]:8443/",
        "https://localhost/",
        "https://169.254.169.254/",
    ):
        with pytest.raises(model.UrlProblem) as info:
            model.check_url(url, allow_private=False)
        assert info.value.forbidden
    # the explicit development setting allows loopback and plain HTTP
    assert model.check_url("http://127.0.0.1:9000/hook", allow_private=True) == "127.0.0.1"


def test_event_types_and_subscriptions():
    assert model.subscribed("payment.succeeded", ["*"])
    assert model.subscribed("dispute.created", ["dispute.created", "payment.failed"])
    assert not model.subscribed("payment.refunded", ["payment.succeeded"])
    assert model.unknown_event_types(["payment.succeeded", "payment.exploded", "*"]) == ["payment.exploded"]
    assert model.event_label("weird.thing") == "other"


async def test_guarded_resolver_refuses_names_resolving_to_loopback():
    resolver = GuardedResolver(allow_private=False)
    try:
        with pytest.raises(BlockedAddress):
            await resolver.resolve("localhost", 80, socket.AF_INET)
    finally:
        await resolver.close()
    permissive = GuardedResolver(allow_private=True)
    try:
        [first, *_] = await permissive.resolve("localhost", 80, socket.AF_INET)
        assert first["host"] == "127.0.0.1"
    finally:
        await permissive.close()


def test_retry_window_is_about_three_days():
    total = timedelta(seconds=sum(SCHEDULE))
    assert timedelta(days=3) < total < timedelta(days=3, hours=12)
