"""CRITICAL-1 / RES-M2: SIGTERM while every sale sleeps in a retry backoff.

The simulator answers every Server Post attempt with a retryable 503 (not processed), and the
backoff is 20 s — longer than the whole 12 s shutdown budget — inside a gateway budget of 120 s, so
nothing but shutdown ends these calls early. SIGTERM arrives once each sale has made its first
attempt and is sleeping. The process must exit within the budget (a retry sleep must not hold it),
no sale is reported or recorded as approved, no second attempt reaches the gateway after the
signal, and after `paycore reconcile` the simulator's ledger and paycore's database agree."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.chaos import ChaosStack, Outcome

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("chaos")]

SHUTDOWN_BUDGET_S = 12.0
BACKOFF_S = 20.0
ENV = {
    "PAYCORE_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_BUDGET_S:g}s",
    "PAYCORE_RETRY_BASE": f"{BACKOFF_S:g}s",
    "PAYCORE_RETRY_JITTER": "0",
    "PAYCORE_RETRY_CAP": "60s",
    "PAYCORE_GATEWAY_MAX_ATTEMPTS": "5",
    # a call budget far beyond the backoff: only shutdown can end these calls in time
    "PAYCORE_GATEWAY_ATTEMPT_TIMEOUT": "5s",
    "PAYCORE_GATEWAY_TIMEOUT": "120s",
    "PAYCORE_SERVICE_CRITICAL_TIMEOUT": "150s",
    "PAYCORE_SERVICE_NONCRITICAL_TIMEOUT": "150s",
    "PAYCORE_SERVICE_TIMEOUT": "160s",
    "PAYCORE_REQUEST_TIMEOUT": "180s",
    # the refused attempts must not open the breaker (that would end the calls early)
    "PAYCORE_CB_FAILURE_THRESHOLD": "50",
    "PAYCORE_CB_WINDOW": "200",
}
AMOUNT = 4111
SALES = 6


async def sale(session: aiohttp.ClientSession, stack: ChaosStack) -> Outcome:
    key = uuid.uuid4().hex
    started = time.monotonic()
    outcome = Outcome(key, started, 0.0, 0)
    try:
        async with session.post(
            stack.url + "/v1/payments",
            json={"amount": AMOUNT, "currency": "USD", "token": stack.token},
            headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": key},
        ) as resp:
            outcome.status = resp.status
            body = await resp.json(content_type=None)
            if isinstance(body, dict):
                outcome.code = body.get("code") or body.get("status")
                outcome.payment_id = body.get("id")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        outcome.error = type(exc).__name__
    outcome.elapsed = time.monotonic() - started
    return outcome


async def attempts_of(stack: ChaosStack) -> list[dict[str, Any]]:
    """The Server Post attempts of this test's sales in the simulator's ledger."""
    async with stack.control() as ctl:
        return [e for e in await ctl.ledger(endpoint="server_post") if e.get("amount") == "41.11"]


async def rows_for(database_url: str) -> list[asyncpg.Record]:
    con = await asyncpg.connect(database_url)
    try:
        return await con.fetch(
            "SELECT id, tran_nbr, status, failure_code FROM transactions WHERE amount = $1", AMOUNT
        )
    finally:
        await con.close()


async def test_sigterm_during_retry_storm(clean_db) -> None:
    async with ChaosStack(clean_db, env=ENV) as stack:
        async with stack.control() as ctl:
            await ctl.add_fault(
                {"match": {"amount": "41.11"}, "action": {"type": "fail_before_process", "fail": 503}}
            )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            requests = [asyncio.create_task(sale(session, stack)) for _ in range(SALES)]
            # every sale has made its first (refused) attempt: all of them now sleep in the backoff
            deadline = time.monotonic() + 15
            first = await attempts_of(stack)
            while len(first) < SALES and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                first = await attempts_of(stack)
            assert len(first) == SALES, f"only {len(first)} of {SALES} sales reached the gateway"
            await asyncio.sleep(0.3)  # well inside the 20 s backoff
            assert stack.server is not None and stack.server.proc is not None
            signalled = time.monotonic()
            stack.server.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(stack.server.proc.wait, BACKOFF_S + 20)
            exited = time.monotonic() - signalled
            outcomes = await asyncio.gather(*requests)
        logs = stack.server.stderr_text()
        left = await rows_for(clean_db)
        attempts = await attempts_of(stack)
        await stack.reconcile()
        resolved = await rows_for(clean_db)
        problems = await stack.ledger_problems(outcomes)

    # the process is not held by the sleeping retries: it exits within the shutdown budget
    assert exited < SHUTDOWN_BUDGET_S, (exited, logs[-4000:])
    assert code == 0, logs[-3000:]
    # nobody was told "approved": the callers got an error, a 202 `unknown`, or no answer at all
    assert not [o for o in outcomes if o.status == 201 or o.code == "approved"], outcomes
    # each caller got a problem it can retry with its Idempotency-Key, not the server's bare 500
    assert [(o.status, o.code) for o in outcomes] == [(503, "shutting_down")] * SALES, outcomes
    # the cancelled calls left their rows for reconciliation, never approved; one row per sale
    assert len(left) == SALES and len({r["tran_nbr"] for r in left}) == SALES, left
    assert {r["status"] for r in left} <= {"pending", "unknown", "failed"}, left
    # no retry went out after the signal: one refused attempt per TRAN_NBR, none processed
    assert sorted(e["tran_nbr"] for e in attempts) == sorted(r["tran_nbr"] for r in left), attempts
    assert not any(e["processed"] for e in attempts)
    # reconciliation: the gateway never charged them, so every row ends `failed`
    assert {r["status"] for r in resolved} == {"failed"}, resolved
    assert problems == [], problems
