"""Dispute sync against the simulator's North endpoint and the real database: created, linked,
idempotent, updated only on change (with events), unknown statuses, unmatched disputes, partial
pages (page cap) and errors; then the read API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from prometheus_client import REGISTRY

from paycore.bootstrap import build_container
from paycore.disputes.service import ListDisputes
from paycore.gateway.port import MerchantKey
from paycore.idempotency.model import request_for
from paycore.kernel.errors import PaycoreError
from paycore.merchants.model import Principal
from paycore.payments import schemas as payment_schemas
from paycore.platform.db import Query, Tier
from tests.support.stack import stack_settings
from tests.support.tokens import SANDBOX_KEY, mint_token

pytestmark = pytest.mark.integration

EVENTS = Query(
    "test.dispute_events",
    Tier.SIMPLE,
    "SELECT event_type, payload FROM outbox_events WHERE aggregate_type = 'dispute' ORDER BY created_at, id",
)


@pytest.fixture
async def container(clean_db, epx_sim):
    built = await build_container(stack_settings(clean_db, epx_sim))
    yield built
    await built.aclose()


@pytest.fixture
async def principal(container):
    merchant = await container.merchants.create_merchant(
        slug="acme", name="Acme", environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
    )
    return Principal(merchant=merchant, mode="test")


async def pay(container, principal, token, amount=2500):
    body = payment_schemas.CreatePayment(amount=amount, currency="USD", token=token)
    resp = await container.payments.create(
        principal, body, request_for(uuid.uuid4().hex, "POST", "/v1/payments", msgspec.to_builtins(body))
    )
    assert resp.status == 201
    return msgspec.json.decode(resp.body)


async def ours(container, principal, cases):
    page = await container.disputes.list(principal, ListDisputes(limit=100))
    return {d.case_number: d for d in page.data if d.case_number in cases}


async def events(container, cases):
    rows = await container.db.fetch(EVENTS)
    return [
        (r["event_type"], r["payload"]["object"]["case_number"])
        for r in rows
        if r["payload"]["object"]["case_number"] in cases
    ]


def chargebacks(reason, status):
    return REGISTRY.get_sample_value("chargebacks_total", {"reason_code": reason, "status": status}) or 0.0


async def test_sync_creates_links_and_is_idempotent_then_updates_on_change(
    container, principal, sim_control, epx_sim
):
    payment = await pay(container, principal, await mint_token(epx_sim.server_post_url))
    tran_nbr = int(payment["gateway"]["tran_nbr"])
    case = f"CB{uuid.uuid4().int % 10**9:09d}"
    await sim_control.create_dispute(
        tran_nbr, case_number=case, reason_code="10.4", chargeback_amount="25.00"
    )
    before = chargebacks("10.4", "pending")
    counts = await container.disputes.sync_all()
    assert counts["created"] >= 1 and counts["failed"] == 0
    [dispute] = (await ours(container, principal, {case})).values()
    assert dispute.status == "new" and dispute.match_status == "matched"
    assert str(dispute.payment_id) == payment["id"] and dispute.amount == 2500
    assert dispute.reason_category == "fraud" and dispute.card_last4 == "1111"
    assert chargebacks("10.4", "pending") == before + 1
    assert await events(container, {case}) == [("dispute.created", case)]
    # the same window again (overlap): nothing changes, no event
    await container.disputes.sync_all()
    assert await events(container, {case}) == [("dispute.created", case)]
    # North moves it
    await sim_control.update_dispute(case, status="WON")
    won_before = chargebacks("10.4", "won")
    await container.disputes.sync_all()
    [dispute] = (await ours(container, principal, {case})).values()
    assert dispute.status == "won" and dispute.gateway_status == "WON"
    assert await events(container, {case}) == [("dispute.created", case), ("dispute.updated", case)]
    assert chargebacks("10.4", "won") == won_before + 1


async def test_unknown_status_is_kept_raw_with_the_previous_status(
    container, principal, sim_control, epx_sim
):
    payment = await pay(container, principal, await mint_token(epx_sim.server_post_url))
    case = f"CB{uuid.uuid4().int % 10**9:09d}"
    await sim_control.create_dispute(
        int(payment["gateway"]["tran_nbr"]), case_number=case, status="RESPONDED"
    )
    await container.disputes.sync_all()
    await sim_control.update_dispute(case, status="ESCALATED")
    await container.disputes.sync_all()
    [dispute] = (await ours(container, principal, {case})).values()
    assert dispute.status == "responded" and dispute.gateway_status == "ESCALATED"


async def test_unmatched_dispute_is_kept_and_flagged(container, principal, sim_control):
    case = f"CB{uuid.uuid4().int % 10**9:09d}"
    await sim_control.create_dispute(
        4242424242, case_number=case, allow_unlinked=True, transaction_amount="9.99"
    )
    await container.disputes.sync_all()
    [dispute] = (await ours(container, principal, {case})).values()
    assert dispute.match_status == "unmatched" and dispute.payment_id is None
    assert dispute.tran_nbr == "4242424242"


async def test_partial_pages_are_split_until_every_dispute_is_read(
    container, principal, sim_control, epx_sim
):
    token = await mint_token(epx_sim.server_post_url)
    today = datetime.now(UTC).date()
    cases = set()
    for days_ago in range(5):
        payment = await pay(container, principal, token, amount=1000 + days_ago)
        case = f"CB{uuid.uuid4().int % 10**9:09d}"
        cases.add(case)
        await sim_control.create_dispute(
            int(payment["gateway"]["tran_nbr"]),
            case_number=case,
            dispute_date=(today - timedelta(days=40 + days_ago)).isoformat(),
        )
    await sim_control.settings(north_page_cap=1)
    await container.disputes.sync_all()
    assert set(await ours(container, principal, cases)) == cases


async def test_north_errors_change_nothing(container, principal, sim_control, epx_sim):
    payment = await pay(container, principal, await mint_token(epx_sim.server_post_url))
    case = f"CB{uuid.uuid4().int % 10**9:09d}"
    await sim_control.create_dispute(int(payment["gateway"]["tran_nbr"]), case_number=case)
    await sim_control.settings(north_status="error")
    counts = await container.disputes.sync_all()
    assert counts["failed"] == 1 and await ours(container, principal, {case}) == {}
    await sim_control.settings(north_status="success")
    await sim_control.add_fault(
        {"target": "north", "action": {"type": "bad_body", "kind": "malformed_json"}, "first": 1}
    )
    assert (await container.disputes.sync_all())["failed"] == 1
    assert (await container.disputes.sync_all())["failed"] == 0
    assert case in await ours(container, principal, {case})


async def test_read_api_filters_pages_and_tenancy(container, principal, sim_control, epx_sim):
    token = await mint_token(epx_sim.server_post_url)
    first = await pay(container, principal, token)
    second = await pay(container, principal, token, amount=3000)
    for p, status in ((first, "NEW"), (second, "LOST")):
        await sim_control.create_dispute(int(p["gateway"]["tran_nbr"]), status=status)
    await container.disputes.sync_all()
    lost = await container.disputes.list(principal, ListDisputes(limit=100, status="lost"))
    assert lost.data and all(d.status == "lost" for d in lost.data)
    by_payment = await container.disputes.list(
        principal, ListDisputes(limit=100, payment_id=uuid.UUID(first["id"]))
    )
    assert [str(d.payment_id) for d in by_payment.data] == [first["id"]]
    # pagination: each exactly once
    seen, cursor = [], None
    while True:
        page = await container.disputes.list(principal, ListDisputes(limit=1, starting_after=cursor))
        seen += [d.id for d in page.data]
        if not page.has_more:
            break
        cursor = page.next_cursor
    everything = await container.disputes.list(principal, ListDisputes(limit=100))
    assert seen == [d.id for d in everything.data] and len(seen) >= 2
    got = await container.disputes.get(principal, seen[0])
    assert got.id == seen[0]
    other = await container.merchants.create_merchant(
        slug="globex",
        name="Globex",
        environment="sandbox",
        epx=MerchantKey(cust_nbr="9002", merch_nbr="900301", dba_nbr="2", terminal_nbr="78"),
    )
    with pytest.raises(PaycoreError) as info:
        await container.disputes.get(Principal(merchant=other, mode="test"), seen[0])
    assert info.value.code == "dispute_not_found"
