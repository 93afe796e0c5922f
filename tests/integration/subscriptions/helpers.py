"""Helpers for subscription tests: saved cards, subscriptions, billing runs and what they left
behind (charge attempts, payments, outbox events, the simulator's ledger)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import msgspec

from paycore.gateway.epx import wire
from paycore.gateway.port import MerchantKey
from paycore.idempotency.model import request_for
from paycore.payment_methods import schemas as pm_schemas
from paycore.subscriptions import schemas
from paycore.subscriptions.service import BillingReport
from tests.support.tokens import SANDBOX_KEY, VISA


async def financial_bric(
    server_post_url: str, *, pan: str = VISA, merchant: MerchantKey = SANDBOX_KEY
) -> tuple[str, int]:
    """The Financial BRIC of a keyed $1.00 sale in the simulator (what a merchant gets from a
    Browser Post sale); the card number goes to the simulator only."""
    now = datetime.now(UTC)
    request = wire.for_sale(
        merchant=merchant,
        tran_nbr=wire.tran_nbr_for(uuid.uuid4()),
        amount_cents=100,
        at=now,
        card=wire.KeyedCard(pan=pan, exp_yymm=f"{(now.year + 3) % 100:02d}12", cvv2="123"),
        billing=wire.Billing(address="1 Main St", zip_code="12345"),
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
    assert parsed.auth_guid, parsed.auth_resp_text
    return parsed.auth_guid, request.tran_nbr


def z(value: datetime | None) -> str | None:
    """A datetime as the API renders it (RFC 3339, UTC, `Z`)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def create_idem(body: schemas.CreateSubscription, key: str | None = None) -> Any:
    return request_for(key or uuid.uuid4().hex, "POST", "/v1/subscriptions", msgspec.to_builtins(body))


class Billing:
    def __init__(self, container: Any, principal: Any, clock: Any, sim: Any, sim_control: Any) -> None:
        self.container = container
        self.service = container.subscriptions
        self.principal = principal
        self.clock = clock
        self.sim = sim
        self.sim_control = sim_control
        self.ledger_since = 0
        self.setup_sales: set[int] = set()  # the keyed sales that minted tokens

    async def start(self) -> None:
        entries = await self.sim_control.ledger()
        self.ledger_since = max((e["seq"] for e in entries), default=0)

    # --- setup -------------------------------------------------------------------------------------
    async def save_card(self, customer_id: str, *, principal: Any = None) -> uuid.UUID:
        principal = principal or self.principal
        key = principal.merchant.epx
        if key != SANDBOX_KEY:
            await self.sim_control.add_merchant(
                key.cust_nbr, key.merch_nbr, key.dba_nbr, key.terminal_nbr, "mac"
            )
        token, tran_nbr = await financial_bric(self.sim.server_post_url, merchant=key)
        self.setup_sales.add(tran_nbr)
        body = pm_schemas.SaveCard(
            token=token, billing=pm_schemas.BillingIn(address="1 Main St", zip_code="12345")
        )
        path = f"/v1/customers/{customer_id}/payment_methods"
        pms = self.container.payment_methods
        idem = request_for(uuid.uuid4().hex, "POST", path, pms.fingerprint_view(body))
        resp = await pms.save(principal, customer_id, body, idem)
        assert resp.status == 201, resp.body
        return uuid.UUID(msgspec.json.decode(resp.body)["id"])

    async def save_bank_account(self, customer_id: str) -> uuid.UUID:
        """A checking account (pre-noted; `pending` until verified)."""
        body = pm_schemas.SaveBankAccount(
            account_type="checking",
            routing_number="021000021",
            account_number="4099992718",
            holder=pm_schemas.HolderIn(first_name="Ada", last_name="Lovelace"),
        )
        pms = self.container.payment_methods
        path = f"/v1/customers/{customer_id}/payment_methods"
        idem = request_for(uuid.uuid4().hex, "POST", path, pms.fingerprint_view(body))
        resp = await pms.save(self.principal, customer_id, body, idem)
        assert resp.status == 201, resp.body
        return uuid.UUID(msgspec.json.decode(resp.body)["id"])

    async def create(
        self,
        payment_method_id: uuid.UUID,
        *,
        amount: int = 1999,
        interval: str = "month",
        interval_count: int = 1,
        start: datetime | None = None,
        principal: Any = None,
        key: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body = schemas.CreateSubscription(
            amount=amount,
            currency="USD",
            interval=interval,  # type: ignore[arg-type]
            interval_count=interval_count,
            payment_method_id=payment_method_id,
            start_date=start,
            **extra,
        )
        resp = await self.service.create(principal or self.principal, body, create_idem(body, key))
        assert resp.status == 201, resp.body
        created: dict[str, Any] = msgspec.json.decode(resp.body)
        return created

    # --- running -----------------------------------------------------------------------------------
    async def run(self, at: datetime | None = None) -> BillingReport:
        if at is not None:
            self.clock.set(at)
        report: BillingReport = await self.service.bill_due(self.clock.now())
        return report

    async def get(self, sub_id: Any) -> dict[str, Any]:
        out = await self.service.get(self.principal, uuid.UUID(str(sub_id)))
        result: dict[str, Any] = msgspec.to_builtins(out)
        return result

    # --- what happened ------------------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        con = await asyncpg.connect(self.container.settings.database_url)
        try:
            return [dict(r) for r in await con.fetch(sql, *args)]
        finally:
            await con.close()

    async def charges(self, sub_id: Any) -> list[dict[str, Any]]:
        """Every attempt of the subscription, oldest first."""
        return await self._fetch(
            "SELECT * FROM subscription_charges WHERE subscription_id = $1 ORDER BY period_index, attempt",
            uuid.UUID(str(sub_id)),
        )

    async def payments(self, sub_id: Any) -> list[dict[str, Any]]:
        return await self._fetch(
            "SELECT * FROM transactions WHERE subscription_id = $1 ORDER BY created_at, id",
            uuid.UUID(str(sub_id)),
        )

    async def events(self, sub_id: Any | None = None, prefix: str = "subscription.") -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT event_type, aggregate_id, payload FROM outbox_events WHERE event_type LIKE $1 "
            "ORDER BY created_at, id",
            prefix + "%",
        )
        for row in rows:
            if isinstance(row["payload"], str):
                row["payload"] = msgspec.json.decode(row["payload"])
        if sub_id is None:
            return rows
        return [r for r in rows if r["aggregate_id"] == uuid.UUID(str(sub_id))]

    async def event_types(self, sub_id: Any) -> list[str]:
        return [e["event_type"] for e in await self.events(sub_id)]

    async def gateway_sales(self) -> list[dict[str, Any]]:
        """Card sales the simulator processed (charged) since the test started, other than the
        ones that minted the test's tokens."""
        entries = await self.sim_control.ledger(since=self.ledger_since, tran_type="CCE1", processed=True)
        return [e for e in entries if e["tran_nbr"] not in self.setup_sales]

    async def sales_of(self, sub_id: Any) -> list[dict[str, Any]]:
        """The simulator's processed sales for this subscription's transactions."""
        tran_nbrs = {p["tran_nbr"] for p in await self.payments(sub_id)}
        return [e for e in await self.gateway_sales() if e["tran_nbr"] in tran_nbrs]
