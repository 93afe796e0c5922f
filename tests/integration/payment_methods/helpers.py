"""Helpers for payment-method tests: gateway spy, requests, tokens, outbox and simulator clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import msgspec

from paycore.gateway.epx import wire
from paycore.gateway.port import CallTrace, GatewayRequest, GatewayResult
from paycore.idempotency.model import IdempotencyRequest, request_for
from paycore.payment_methods import schemas
from paycore.payments import schemas as pay_schemas
from tests.support.tokens import SANDBOX_KEY, VISA

ROUTING = "021000021"  # a real ABA routing number (passes the check digit)
ACCOUNT = "4099992718"  # a real-looking checking account number
SAVINGS_ACCOUNT = "7310458826"


class Recorder:
    """A `TransactionProcessor` that records each request before delegating (fields in wire order)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[GatewayRequest] = []

    async def process(self, request: GatewayRequest, *, trace: CallTrace | None = None) -> GatewayResult:
        self.requests.append(request)
        result: GatewayResult = await self.inner.process(request, trace=trace)
        return result

    def of(self, tran_type: str) -> list[dict[str, str]]:
        return [dict(r.fields) for r in self.requests if r.tran_type == tran_type]


async def mint_financial_bric(server_post_url: str, *, pan: str = VISA, cvv: str = "123") -> str:
    """A Financial BRIC of an approved keyed $1.00 sale, as a Browser Post sale would give the merchant
    (the card number goes to the simulator only; paycore never sees it)."""
    now = datetime.now(UTC)
    request = wire.for_sale(
        merchant=SANDBOX_KEY,
        tran_nbr=wire.tran_nbr_for(uuid.uuid4()),
        amount_cents=100,
        at=now,
        card=wire.KeyedCard(pan=pan, exp_yymm=f"{(now.year + 3) % 100:02d}12", cvv2=cvv),
        billing=wire.Billing(address="123 Main St", zip_code="12345"),
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server_post_url,
            data=wire.encode(request),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as resp,
    ):
        body = await resp.read()
    parsed = wire.parse_response(body, zero_dollar=False)
    assert parsed.auth_guid and parsed.auth_resp == "00", parsed.auth_resp_text
    return parsed.auth_guid


def idem_for(
    container: Any, customer_id: str, body: schemas.SavePaymentMethod, key: str | None = None
) -> IdempotencyRequest:
    path = f"/v1/customers/{customer_id}/payment_methods"
    return request_for(
        key or uuid.uuid4().hex, "POST", path, container.payment_methods.fingerprint_view(body)
    )


def card_body(token: str, **extra: Any) -> schemas.SaveCard:
    extra.setdefault("billing", schemas.BillingIn(address="123 Main St", zip_code="12345"))
    return schemas.SaveCard(token=token, **extra)


def bank_body(
    account: str = ACCOUNT, *, account_type: str = "checking", routing: str = ROUTING, **extra: Any
) -> schemas.SaveBankAccount:
    return schemas.SaveBankAccount(
        account_type=account_type,  # type: ignore[arg-type]
        routing_number=routing,
        account_number=account,
        holder=schemas.HolderIn(first_name="Ada", last_name="Lovelace"),
        **extra,
    )


async def save(container: Any, principal: Any, customer_id: str, body: Any, key: str | None = None) -> Any:
    return await container.payment_methods.save(
        principal, customer_id, body, idem_for(container, customer_id, body, key)
    )


def decode(resp: Any) -> Any:
    return msgspec.json.decode(resp.body)


async def saved_id(container: Any, principal: Any, customer_id: str, body: Any) -> uuid.UUID:
    resp = await save(container, principal, customer_id, body)
    assert resp.status == 201, resp.body
    return uuid.UUID(decode(resp)["id"])


def pay_idem(body: Any, path: str = "/v1/payments") -> IdempotencyRequest:
    return request_for(uuid.uuid4().hex, "POST", path, msgspec.to_builtins(body))


async def pay(container: Any, principal: Any, method_id: uuid.UUID, amount: int = 1500, **extra: Any) -> Any:
    body = pay_schemas.CreatePayment(amount=amount, currency="USD", payment_method_id=method_id, **extra)
    return await container.payments.create(principal, body, pay_idem(body))


async def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    con = await asyncpg.connect(dsn)
    try:
        return list(await con.fetch(query, *args))
    finally:
        await con.close()


async def events(dsn: str, event_type: str | None = None) -> list[dict[str, Any]]:
    rows = await sql(
        dsn,
        "SELECT event_type, aggregate_id, payload::text AS payload FROM outbox_events "
        "WHERE aggregate_type = 'payment_method' ORDER BY created_at",
    )
    out = [
        {"type": r["event_type"], "id": r["aggregate_id"], "payload": msgspec.json.decode(r["payload"])}
        for r in rows
    ]
    return [e for e in out if event_type is None or e["type"] == event_type]


async def sim_now(sim_control: Any) -> datetime:
    clock = await sim_control.clock()
    return datetime.fromisoformat(clock["now"].replace("Z", "+00:00"))
