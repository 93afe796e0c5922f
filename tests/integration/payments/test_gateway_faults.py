"""Ambiguous gateway outcomes, safe retries, the circuit breaker and reconciliation — against the
simulator's fault injection. The simulator's ledger is the truth of what the "gateway" did."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from paycore.idempotency.model import Replay, request_for
from paycore.payments import schemas
from paycore.platform.resilience.breaker import GATEWAY_SERVER_POST

pytestmark = pytest.mark.integration


def idem(body, path="/v1/payments", key=None):
    return request_for(key or uuid.uuid4().hex, "POST", path, msgspec.to_builtins(body))


def decode(resp):
    return msgspec.json.decode(resp.body)


async def processed(sim_control, tran_nbr):
    return [e for e in await sim_control.ledger(tran_nbr=int(tran_nbr)) if e.get("processed")]


@pytest.fixture(autouse=True)
async def _clean_faults(sim_control):
    await sim_control.clear_faults()
    yield
    await sim_control.clear_faults()


async def test_processed_then_503_is_unknown_never_recharged_and_reconciled(
    container, principal, token, sim_control
):
    await sim_control.add_fault(
        {
            "target": "server_post",
            "match": {"amount": "13.37"},
            "action": {"type": "process_then_fail", "fail": 503},
        }
    )
    body = schemas.CreatePayment(amount=1337, currency="USD", token=token)
    key = uuid.uuid4().hex
    resp = await container.payments.create(principal, body, idem(body, key=key))
    assert resp.status == 202
    payment = decode(resp)
    assert payment["status"] == "unknown"
    tran_nbr = payment["gateway"]["tran_nbr"]
    # charged exactly once at the gateway, despite the retries
    assert len(await processed(sim_control, tran_nbr)) == 1
    # a replay during the unknown state answers the same 202
    with pytest.raises(Replay) as replay:
        await container.payments.create(principal, body, idem(body, key=key))
    assert replay.value.status == 202
    counts = await container.payments.reconcile(older_than=0)
    assert counts["approved"] == 1
    got = await container.payments.get(principal, uuid.UUID(payment["id"]))
    assert got.status == "approved" and got.amount_captured == 1337
    # the stored answer is now the final one
    with pytest.raises(Replay) as replay:
        await container.payments.create(principal, body, idem(body, key=key))
    assert replay.value.status == 201 and msgspec.json.decode(replay.value.body)["status"] == "approved"
    assert len(await processed(sim_control, tran_nbr)) == 1


async def test_request_lost_before_processing_is_retried_safely(container, principal, token, sim_control):
    await sim_control.add_fault(
        {
            "target": "server_post",
            "match": {"amount": "14.44"},
            "action": {"type": "fail_before_process", "fail": 503},
            "frequency": {"first": 1},
        }
    )
    body = schemas.CreatePayment(amount=1444, currency="USD", token=token)
    resp = await container.payments.create(principal, body, idem(body))
    assert resp.status == 201
    payment = decode(resp)
    entries = await sim_control.ledger(tran_nbr=int(payment["gateway"]["tran_nbr"]))
    assert [e["processed"] for e in entries] == [False, True]


async def test_gateway_that_never_answers_resolves_to_failed_and_releases_the_key(
    container, principal, token, sim_control
):
    await sim_control.add_fault(
        {"target": "server_post", "match": {"amount": "15.55"}, "action": {"type": "timeout"}}
    )
    body = schemas.CreatePayment(amount=1555, currency="USD", token=token)
    key = uuid.uuid4().hex
    resp = await container.payments.create(principal, body, idem(body, key=key))
    assert resp.status == 202 and decode(resp)["status"] == "unknown"
    tran_nbr = decode(resp)["gateway"]["tran_nbr"]
    assert await processed(sim_control, tran_nbr) == []
    counts = await container.payments.reconcile(older_than=0)
    assert counts["failed"] == 1
    got = await container.payments.get(principal, uuid.UUID(decode(resp)["id"]))
    assert got.status == "failed"
    # nothing was charged, so the key is free again: the same request runs anew and succeeds
    await sim_control.clear_faults()
    again = await container.payments.create(principal, body, idem(body, key=key))
    assert again.status == 201


async def test_circuit_opens_fails_fast_with_424_and_releases_the_key(
    container, principal, token, sim_control
):
    await sim_control.add_fault(
        {
            "target": "server_post",
            "match": {"amount": "16.66"},
            "action": {"type": "fail_before_process", "fail": 503},
        }
    )
    breaker = container.breakers[GATEWAY_SERVER_POST]
    try:
        body = schemas.CreatePayment(amount=1666, currency="USD", token=token)
        for _ in range(2):
            # a 5xx after sending is ambiguous: unknown (202), never a guess
            resp = await container.payments.create(principal, body, idem(body))
            assert resp.status == 202
        # 5 consecutive failed attempts opened the breaker
        assert breaker.snapshot().state == "open"
        good = schemas.CreatePayment(amount=2000, currency="USD", token=token)
        key = uuid.uuid4().hex
        resp = await container.payments.create(principal, good, idem(good, key=key))
        problem = decode(resp)
        assert (
            resp.status == 424
            and problem["code"] == "gateway_unavailable"
            and problem["reason"] == "circuit_open"
        )
        breaker.reset()
        resp = await container.payments.create(principal, good, idem(good, key=key))
        assert resp.status == 201
    finally:
        breaker.reset()
