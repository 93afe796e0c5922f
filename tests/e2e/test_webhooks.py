"""End to end: a payment through the HTTP API produces a signed `payment.succeeded` webhook,
delivered by a running `paycore worker` process to a real receiver, verified with the
independent `standardwebhooks` package; the events API shows the delivery log."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import serve_api
from tests.integration.webhooks.receiver import Receiver
from tests.integration.worker.process import WorkerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("worker_process")]


@pytest.fixture
async def api(clean_db, epx_sim):
    """`paycore serve` that accepts loopback receivers (the explicit development setting)."""
    async with serve_api(clean_db, epx_sim, PAYCORE_WEBHOOK_ALLOW_PRIVATE="true") as served:
        yield served


async def test_payment_webhook_delivered_by_the_worker(api, http, token):
    receiver = await Receiver().start()
    worker = None
    try:
        async with http.post(
            api.url + "/v1/webhook_endpoints",
            json={"url": receiver.url("/paycore"), "enabled_events": ["payment.succeeded"]},
            headers=api.headers(),
        ) as r:
            assert r.status == 201, await r.text()
            endpoint = await r.json()
        assert endpoint["secret"].startswith("whsec_")
        worker = WorkerProcess(
            {
                **api.env,
                "PAYCORE_WEBHOOK_ALLOW_PRIVATE": "true",
                "PAYCORE_WEBHOOK_POLL_INTERVAL": "100ms",
                "PAYCORE_JOB_POLL_INTERVAL": "50ms",
            }
        )
        await asyncio.to_thread(worker.start)
        async with http.post(
            api.url + "/v1/payments",
            json={"amount": 4321, "currency": "USD", "token": token},
            headers=api.headers(uuid.uuid4().hex),
        ) as r:
            assert r.status == 201
            payment = await r.json()
        await receiver.wait_for(lambda: len(receiver.received) >= 1, timeout=20)
        [got] = receiver.received
        event = Webhook(endpoint["secret"]).verify(got.body, got.headers)
        assert event["type"] == "payment.succeeded" and event["data"]["object"]["id"] == payment["id"]
        # the receiver has the webhook; the worker records the 2xx right after it answered
        for _ in range(100):
            async with http.get(api.url + f"/v1/events/{event['id']}", headers=api.headers()) as r:
                detail = await r.json()
            [delivery] = detail["deliveries"]
            if delivery["status"] != "delivering":
                break
            await asyncio.sleep(0.05)
        assert delivery["status"] == "succeeded" and delivery["log"][0]["status_code"] == 200
        async with http.get(api.url + "/v1/events?type=payment.succeeded", headers=api.headers()) as r:
            listed = await r.json()
        assert [e["id"] for e in listed["data"]] == [event["id"]]
        async with http.get(worker.metrics_url + "/metrics") as r:
            text = await r.text()
        assert 'webhook_deliveries_total{event_type="payment.succeeded",status="success"} 1.0' in text
        assert 'job_runs_total{job_name="webhooks.dispatch",status="success"}' in text
        code = await asyncio.to_thread(worker.terminate, 30)
        assert code == 0
    finally:
        if worker is not None:
            worker.kill()
        await receiver.stop()
