"""Webhook delivery against the real database and a real HTTP receiver on 127.0.0.1: signatures
verified with the independent `standardwebhooks` package (also during secret rotation), retries,
410, Retry-After, per-host cap, bulkheads, two workers racing, the kill switch and the SSRF guard."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paycore.idempotency.model import request_for
from paycore.kernel.errors import PaycoreError
from paycore.payments import schemas as payment_schemas
from paycore.platform.db import Query, Tier
from paycore.webhooks import schemas
from tests.integration.webhooks.conftest import add_event, decode
from tests.support.tokens import mint_token

pytestmark = pytest.mark.integration

DELIVERY = Query("test.delivery", Tier.SIMPLE, "SELECT * FROM webhook_deliveries WHERE event_id = $1")
ENDPOINT = Query("test.endpoint", Tier.SIMPLE, "SELECT * FROM webhook_endpoints WHERE id = $1")


async def endpoint(container, principal, receiver, path="/hook", events=("*",)):
    return await container.webhooks.create_endpoint(
        principal, schemas.CreateEndpoint(url=receiver.url(path), enabled_events=list(events))
    )


async def run_once(container):
    await container.webhooks.dispatch()
    return await container.webhooks.deliver_due()


async def deliveries(container, event_id):
    return [dict(r) for r in await container.db.fetch(DELIVERY, event_id)]


async def test_payment_produces_a_signed_payment_succeeded_webhook(container, principal, receiver, epx_sim):
    ep = await endpoint(container, principal, receiver, events=["payment.succeeded"])
    token = await mint_token(epx_sim.server_post_url)
    body = payment_schemas.CreatePayment(amount=1234, currency="USD", token=token)
    resp = await container.payments.create(
        principal, body, request_for(uuid.uuid4().hex, "POST", "/v1/payments", msgspec.to_builtins(body))
    )
    assert resp.status == 201
    payment = msgspec.json.decode(resp.body)
    assert await run_once(container) == 1
    [got] = receiver.at("/hook")
    event = Webhook(ep.secret).verify(got.body, got.headers)  # independent verification
    assert event["type"] == "payment.succeeded" and event["object"] == "event"
    assert event["data"]["object"]["id"] == payment["id"] and event["data"]["object"]["amount"] == 1234
    assert got.headers["webhook-id"] == event["id"]
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    [delivery] = await deliveries(container, uuid.UUID(event["id"]))
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1


async def test_only_subscribed_endpoints_of_the_same_merchant_get_the_event(
    container, principal, other_principal, receiver
):
    await endpoint(container, principal, receiver, "/pay", events=["payment.succeeded"])
    await endpoint(container, principal, receiver, "/disputes", events=["dispute.created"])
    await endpoint(container, other_principal, receiver, "/other", events=["*"])
    await add_event(container, principal, "payment.succeeded")
    await run_once(container)
    assert len(receiver.at("/pay")) == 1
    assert receiver.at("/disputes") == [] and receiver.at("/other") == []


async def test_secret_rotation_signs_with_both_during_the_overlap(container, principal, receiver):
    ep = await endpoint(container, principal, receiver)
    rotated = await container.webhooks.rotate_secret(
        principal, ep.id, schemas.RotateSecret(overlap_seconds=3600)
    )
    assert rotated.secret != ep.secret and rotated.previous_secret_expires_at is not None
    await add_event(container, principal)
    await run_once(container)
    [got] = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(rotated.secret).verify(got.body, got.headers)  # the receiver already switched
    Webhook(ep.secret).verify(got.body, got.headers)  # or not yet
    # a rotation without overlap: only the newest secret signs
    again = await container.webhooks.rotate_secret(principal, ep.id, schemas.RotateSecret(overlap_seconds=0))
    await add_event(container, principal)
    await run_once(container)
    latest = receiver.received[-1]
    assert len(latest.headers["webhook-signature"].split(" ")) == 1
    Webhook(again.secret).verify(latest.body, latest.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated.secret).verify(latest.body, latest.headers)


async def test_410_disables_the_endpoint(container, principal, receiver):
    ep = await endpoint(container, principal, receiver)
    receiver.behave("/hook", default=410)
    event_id = await add_event(container, principal)
    await run_once(container)
    [delivery] = await deliveries(container, event_id)
    assert delivery["status"] == "failed" and delivery["last_status_code"] == 410
    row = await container.db.fetchrow(ENDPOINT, ep.id)
    assert row["status"] == "disabled" and "410" in row["disabled_reason"]
    # no more deliveries to it
    later = await add_event(container, principal)
    await run_once(container)
    assert await deliveries(container, later) == []
    assert len(receiver.received) == 1


async def test_500_is_retried_after_the_schedule_then_delivered(container, principal, receiver):
    await endpoint(container, principal, receiver)
    receiver.behave("/hook", statuses=[500])
    event_id = await add_event(container, principal)
    await run_once(container)
    [delivery] = await deliveries(container, event_id)
    assert (
        delivery["status"] == "pending" and delivery["attempts"] == 1 and delivery["last_status_code"] == 500
    )
    assert await container.webhooks.deliver_due() == 0  # not yet due (300 ms ± 10 %)
    await asyncio.sleep(0.4)
    assert await container.webhooks.deliver_due() == 1
    [delivery] = await deliveries(container, event_id)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 2
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(receiver.received) == 2 and ids == {str(event_id)}  # same id: receivers dedupe on it
    detail = await container.webhooks.get_event(
        await _principal_of(container, delivery["merchant_id"]), event_id
    )
    assert [(a.outcome, a.status_code) for a in detail.deliveries[0].log] == [
        ("retry_scheduled", 500),
        ("delivered", 200),
    ]


async def _principal_of(container, merchant_id):
    from paycore.merchants.model import Principal

    return Principal(merchant=await container.merchants.get(merchant_id), mode="test")


async def test_retry_after_is_honoured(container, principal, receiver):
    await endpoint(container, principal, receiver)
    receiver.behave("/hook", statuses=[429], headers={"Retry-After": "30"})
    event_id = await add_event(container, principal)
    began = time.time()
    await run_once(container)
    [delivery] = await deliveries(container, event_id)
    assert delivery["status"] == "pending"
    assert delivery["next_attempt_at"].timestamp() - began >= 29


async def test_exhausted_schedule_fails_and_a_long_run_of_failures_disables(
    make_container, principal, receiver
):
    container = await make_container(
        PAYCORE_WEBHOOK_RETRY_SCHEDULE="50ms", PAYCORE_WEBHOOK_DISABLE_AFTER="300ms"
    )
    ep = await endpoint(container, principal, receiver)
    receiver.behave("/hook", default=503)
    first = await add_event(container, principal)
    await run_once(container)
    await asyncio.sleep(0.1)
    await container.webhooks.deliver_due()
    [delivery] = await deliveries(container, first)
    assert delivery["status"] == "failed" and delivery["attempts"] == 2
    assert (await container.db.fetchrow(ENDPOINT, ep.id))["status"] == "enabled"
    await asyncio.sleep(0.35)
    await add_event(container, principal)
    await run_once(container)
    row = await container.db.fetchrow(ENDPOINT, ep.id)
    assert row["status"] == "disabled" and row["consecutive_failures"] == 3


async def test_redirects_are_not_followed(container, principal, receiver):
    await endpoint(container, principal, receiver)
    receiver.behave("/hook", statuses=[302], headers={"Location": receiver.url("/elsewhere")})
    event_id = await add_event(container, principal)
    await run_once(container)
    assert receiver.at("/elsewhere") == []
    [delivery] = await deliveries(container, event_id)
    assert delivery["status"] == "pending" and delivery["last_status_code"] == 302


async def test_per_host_connection_cap_with_20_concurrent_deliveries(make_container, principal, receiver):
    container = await make_container(PAYCORE_WEBHOOK_PER_HOST="5")
    for i in range(20):
        await endpoint(container, principal, receiver, f"/h{i}")
    for i in range(20):
        receiver.behave(f"/h{i}", delay=0.3)
    await add_event(container, principal)
    await container.webhooks.dispatch()
    began = time.monotonic()
    # one event × 20 endpoints, fan-out 10: the connector still holds at most 5 to this host
    await container.webhooks.deliver_due()
    assert len(receiver.received) == 20
    assert receiver.peak <= 5
    assert time.monotonic() - began >= 0.3 * 4 * 0.9  # 20 / 5 waves


async def test_bulkheads_cap_global_and_per_event_concurrency(make_container, principal, receiver):
    container = await make_container(PAYCORE_WEBHOOK_CONCURRENCY="2", PAYCORE_WEBHOOK_PER_HOST="50")
    for i in range(6):
        await endpoint(container, principal, receiver, f"/b{i}")
        receiver.behave(f"/b{i}", delay=0.2)
    for _ in range(2):
        await add_event(container, principal)
    await run_once(container)
    assert len(receiver.received) == 12 and receiver.peak <= 2
    assert container.webhooks.bulkhead.peak == 2

    receiver.peak = 0
    fan = await make_container(PAYCORE_WEBHOOK_EVENT_CONCURRENCY="3", PAYCORE_WEBHOOK_PER_HOST="50")
    await add_event(fan, principal)
    await run_once(fan)
    assert len(receiver.received) == 18 and receiver.peak <= 3


async def test_one_failing_receiver_does_not_stop_its_siblings(container, principal, receiver):
    for path in ("/ok1", "/bad", "/ok2"):
        await endpoint(container, principal, receiver, path)
    receiver.behave("/bad", default=500)
    event_id = await add_event(container, principal)
    await run_once(container)
    rows = {r["status"] for r in await deliveries(container, event_id)}
    assert rows == {"succeeded", "pending"}
    assert len(receiver.at("/ok1")) == len(receiver.at("/ok2")) == 1


async def test_two_workers_racing_never_send_twice(make_container, principal, receiver):
    a = await make_container()
    b = await make_container()
    for i in range(3):
        await endpoint(a, principal, receiver, f"/r{i}")
        receiver.behave(f"/r{i}", delay=0.01)
    for _ in range(15):
        await add_event(a, principal)
    await asyncio.gather(a.webhooks.dispatch(), b.webhooks.dispatch())
    while True:
        done = await asyncio.gather(a.webhooks.deliver_due(10), b.webhooks.deliver_due(10))
        if not any(done):
            break
    seen = [(r.path, r.headers["webhook-id"]) for r in receiver.received]
    assert len(seen) == 45 and len(set(seen)) == 45


async def test_kill_switch_holds_deliveries_until_enabled(container, principal, receiver):
    await endpoint(container, principal, receiver)
    container.webhooks.enabled = False
    event_id = await add_event(container, principal)
    await run_once(container)
    assert receiver.received == []
    [delivery] = await deliveries(container, event_id)
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    container.webhooks.enabled = True
    await container.webhooks.deliver_due()
    assert len(receiver.received) == 1


async def test_degraded_mode_turns_webhooks_off(make_container):
    container = await make_container(PAYCORE_DEGRADED="true")
    assert container.webhooks.enabled is False


async def test_ssrf_guard_refuses_private_targets_without_the_development_setting(
    make_container, principal, receiver
):
    container = await make_container(PAYCORE_WEBHOOK_ALLOW_PRIVATE="false")
    for url, code in (
        (receiver.url("/x"), "webhook_url_invalid"),  # plain http
        ("https://127.0.0.1/hook", "webhook_url_forbidden"),
        ("https://10.0.0.8/hook", "webhook_url_forbidden"),
        ("https://localhost/hook", "webhook_url_forbidden"),
        ("https://169.254.169.254/latest/meta-data", "webhook_url_forbidden"),
    ):
        with pytest.raises(PaycoreError) as info:
            await container.webhooks.create_endpoint(
                principal, schemas.CreateEndpoint(url=url, enabled_events=["*"])
            )
        assert info.value.code == code, url


async def test_ssrf_guard_at_delivery_time(make_container, principal, receiver):
    permissive = await make_container()
    await endpoint(permissive, principal, receiver)
    event_id = await add_event(permissive, principal)
    await permissive.webhooks.dispatch()
    strict = await make_container(PAYCORE_WEBHOOK_ALLOW_PRIVATE="false")
    await strict.webhooks.deliver_due()
    assert receiver.received == []  # never reached
    [delivery] = await deliveries(strict, event_id)
    assert delivery["status"] == "pending" and delivery["last_error"].startswith("blocked")


async def test_encryption_key_rotation_reseals_endpoint_secrets(make_container, principal, receiver):
    old = await make_container()
    ep = await endpoint(old, principal, receiver)
    rotated = await old.webhooks.rotate_secret(principal, ep.id, schemas.RotateSecret(overlap_seconds=600))
    new_key = "v2:" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    old_key = "v1:ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE="
    both = await make_container(PAYCORE_ENCRYPTION_KEYS=f"{new_key},{old_key}")
    # `paycore admin rotate-encryption-key` (the merchant directory) re-encrypts them too:
    # the merchant's MAC secret and the endpoint's two secrets
    assert await both.merchants.rotate_encryption_key() == 2
    assert await both.webhooks.rotate_encryption_key() == 0
    row = await both.db.fetchrow(ENDPOINT, ep.id)
    assert row["secret_key_version"] == "v2" and row["previous_secret_key_version"] == "v2"
    only_new = await make_container(PAYCORE_ENCRYPTION_KEYS=new_key)
    await add_event(only_new, principal)
    await run_once(only_new)
    [got] = receiver.received
    Webhook(rotated.secret).verify(got.body, got.headers)
    Webhook(ep.secret).verify(got.body, got.headers)
    assert decode(got.body)["type"] == "payment.succeeded"
