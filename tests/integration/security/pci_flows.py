"""Every card and bank-account flow of paycore, run in a fresh process for the PCI hygiene test.

    python -m tests.integration.security.pci_flows OUT_DIR      (environment: tests/support/stack.stack_env)

A fresh process so that every structlog logger is first used after the capture is installed: a
recorder placed before the masking processor sees each event *raw*, and the JSON log stream (the
real one, masked) goes to `OUT_DIR/log_stream.jsonl`. Raw events go to `OUT_DIR/raw_events.jsonl`,
HTTP response bodies to `OUT_DIR/responses.jsonl`, the values the flows used to `OUT_DIR/data.json`.
The card number reaches the simulator only (as a merchant's hosted form would send it); the bank
account numbers go through paycore's API.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import structlog
from litestar.testing import AsyncTestClient

from paycore.app import create_app
from paycore.bootstrap import build_container, build_merchant_directory
from paycore.config import load_settings
from paycore.platform.db.pool import create_database
from paycore.platform.observability import logging as plog
from tests.integration.payment_methods.helpers import mint_financial_bric
from tests.support.sim import SimControl
from tests.support.tokens import SANDBOX_KEY

PAN = "4111111111111111"
CVV = "987"
CHECKING = "4099992718"
SAVINGS = "7310458826"
ROUTING = "021000021"
HOLDER = {"first_name": "Ada", "last_name": "Lovelace"}


class Recorder:
    """A structlog processor that keeps a copy of every event dict as it was logged (pre-masking)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def __call__(self, _: Any, __: str, event_dict: Any) -> Any:
        self.file.write(json.dumps(event_dict, default=repr) + "\n")
        self.file.flush()
        return event_dict


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    app = create_app(settings)
    stream = (out / "log_stream.jsonl").open("w", encoding="utf-8")
    plog.configure_logging("debug", stream=stream)
    processors = structlog.get_config()["processors"]
    processors.insert(processors.index(plog.masking_processor), Recorder(out / "raw_events.jsonl"))
    responses = (out / "responses.jsonl").open("w", encoding="utf-8")

    db = await create_database(settings, os.environ["DATABASE_URL"], min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await directory.create_merchant(
            slug="pci", name="PCI", environment="sandbox", epx=SANDBOX_KEY, mac_secret="mac-secret-pci-test"
        )
        key = await directory.create_api_key(merchant.id)
    finally:
        await db.pool.close()
    auth = {"Authorization": f"Bearer {key.secret}"}

    async with AsyncTestClient(app=app) as client:

        async def call(method: str, path: str, body: Any = None, *, idem: bool = True) -> Any:
            headers = {**auth, **({"Idempotency-Key": uuid.uuid4().hex} if idem and method == "POST" else {})}
            resp = await client.request(method, path, json=body, headers=headers)
            responses.write(json.dumps({"path": path, "status": resp.status_code, "body": resp.text}) + "\n")
            return resp

        base = "/v1/customers/cus_pci/payment_methods"
        bric = await mint_financial_bric(os.environ["PAYCORE_EPX_SERVER_POST_URL"], pan=PAN, cvv=CVV)
        # cards: save from the token, refuse a card number sent as a token, pay, refund
        billing = {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "address": "12 Analytical Way",
            "zip_code": "12345",
        }
        card_body = {"type": "card", "token": bric, "billing": billing, "exp_month": 12, "exp_year": 2031}
        card = (await call("POST", base, card_body)).json()
        assert card["object"] == "payment_method", card
        assert (await call("POST", base, {"type": "card", "token": PAN})).status_code == 422
        assert (
            await call("POST", "/v1/payments", {"amount": 100, "currency": "USD", "token": PAN})
        ).status_code == 422
        sale = (await call("POST", "/v1/payments", {"amount": 2599, "currency": "USD",
                                                    "payment_method_id": card["id"]})).json()  # fmt: skip
        assert sale["status"] == "approved", sale
        assert (await call("POST", f"/v1/payments/{sale['id']}/refunds", {"amount": 599})).status_code == 201
        # bank accounts: checking and savings, refused numbers, verification, debit and refund
        account = {"type": "ach", "routing_number": ROUTING, "holder": HOLDER}
        checking_body = {**account, "account_type": "checking", "account_number": CHECKING}
        checking = (await call("POST", base, checking_body)).json()
        assert checking["verification_status"] == "pending", checking
        savings_body = {**account, "account_type": "savings", "account_number": SAVINGS}
        savings = (await call("POST", base, savings_body)).json()
        assert savings["verification_status"] == "pending", savings
        for bad in ({"routing_number": "021000022", "account_number": CHECKING},
                    {"routing_number": ROUTING, "account_number": CHECKING + "9999999999"},
                    {"routing_number": ROUTING, "account_number": CHECKING + "x"}):  # fmt: skip
            resp = await call(
                "POST", base, {"type": "ach", "account_type": "checking", "holder": HOLDER, **bad}
            )
            assert resp.status_code == 422, resp.text
        debit = {"amount": 4200, "currency": "USD", "payment_method_id": checking["id"]}
        assert (await call("POST", "/v1/payments", debit)).status_code == 409
        async with SimControl(os.environ["PAYCORE_TEST_SIM_CONTROL_URL"]) as sim:
            await sim.advance_clock(banking_days=4)
            now = (await sim.clock())["now"]
            from datetime import datetime

            at = datetime.fromisoformat(now.replace("Z", "+00:00"))
            # the jobs' bodies, on a container of this loop (the app runs on the test client's)
            jobs = await build_container(settings)
            try:
                await jobs.payment_methods.ingest_returns(now=at)
                await jobs.payment_methods.verify_due(now=at)
            finally:
                await jobs.aclose()
            payment = (await call("POST", "/v1/payments", debit)).json()
            assert payment["status"] == "approved", payment
            assert (
                await call("POST", f"/v1/payments/{payment['id']}/refunds", {"amount": 200})
            ).status_code == 201
            await sim.clock(reset=True)
        await call("GET", base, idem=False)
        for method in (card, checking, savings):
            await call("GET", f"{base}/{method['id']}", idem=False)
        await call("POST", f"{base}/{checking['id']}/default", idem=False)
        await call("DELETE", f"{base}/{savings['id']}", idem=False)

    plog.flush_logs()
    stream.close()
    responses.close()
    (out / "data.json").write_text(json.dumps({"bric": bric, "merchant_id": str(merchant.id)}))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
