"""Every subscription query is served by an index: EXPLAIN on 20k subscriptions and 60k attempts."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from paycore.subscriptions import repository as sub_sql
from tests.support import db as test_db

pytestmark = pytest.mark.integration

SUBS = 20_000
MERCHANTS = 20


@pytest.fixture(scope="module")
def plans_db():
    name = f"paycore_sub_plans_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    dsn = asyncio.run(test_db.create_database(name))
    asyncio.run(_seed(dsn))
    yield dsn
    asyncio.run(test_db.drop_database(name))


async def _seed(dsn: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            f"""
            INSERT INTO merchants (id, slug, name, environment, epx_cust_nbr, epx_merch_nbr, epx_dba_nbr,
                                   epx_terminal_nbr)
            SELECT gen_random_uuid(), 's' || g, 'S ' || g, 'sandbox', '9001', (910000 + g)::text, '2', '77'
              FROM generate_series(1, {MERCHANTS}) g
            """
        )
        await con.execute(
            f"""
            WITH m AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM merchants)
            INSERT INTO subscriptions (id, merchant_id, customer_id, payment_method_id, status, amount,
                                       currency, interval_unit, interval_count, start_at, anchor_at,
                                       next_billing_at, canceled_at, created_at, updated_at)
            SELECT gen_random_uuid(), m.id, 'cus_' || (g % 3000),
                   ('00000000-0000-0000-0000-' || lpad((g % 5000)::text, 12, '0'))::uuid,
                   s.status, 1000, 'USD', 'month', 1, now(), now(),
                   now() + ((g % 60) || ' days')::interval - interval '1 day',
                   CASE WHEN s.status = 'canceled' THEN now() END,
                   now() - (g || ' seconds')::interval, now()
              FROM (SELECT g, (ARRAY['active','active','active','paused','past_due','canceled'])[1 + g % 6]
                           AS status FROM generate_series(1, {SUBS}) g) s
              JOIN m ON m.n = 1 + s.g % {MERCHANTS}
            """
        )
        await con.execute(
            """
            INSERT INTO subscription_charges (id, subscription_id, merchant_id, period_index,
                                              period_start, period_end, attempt, status, amount, currency,
                                              payment_method_id, transaction_id, idempotency_key)
            SELECT gen_random_uuid(), s.id, s.merchant_id, p, now(), now() + interval '1 month', 1,
                   'approved', 1000, 'USD', s.payment_method_id, gen_random_uuid(), 'k'
              FROM subscriptions s CROSS JOIN generate_series(0, 2) p
            """
        )
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


@pytest.fixture
async def seeded(plans_db):
    con = await asyncpg.connect(plans_db)
    try:
        row = await con.fetchrow(
            "SELECT id, merchant_id, customer_id, payment_method_id, created_at FROM subscriptions "
            "ORDER BY created_at DESC LIMIT 1 OFFSET 500"
        )
        yield con, row
    finally:
        await con.close()


async def plan_of(con, sql: str, *args):
    text = await con.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return json.loads(text)[0]["Plan"] if isinstance(text, str) else text[0]["Plan"]


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def index_names(plan) -> set[str]:
    return {n["Index Name"] for n in nodes(plan) if "Index Name" in n}


def assert_indexed(plan, expected: str | None = None, *, no_sort: bool = True):
    tables = ("subscriptions", "subscription_charges")
    seq = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in tables]
    assert not seq, f"sequential scan: {json.dumps(plan)[:800]}"
    if expected is not None:
        assert expected in index_names(plan), json.dumps(plan)[:800]
    if no_sort:
        assert not [n for n in nodes(plan) if n["Node Type"] == "Sort"], json.dumps(plan)[:800]


async def test_billing_claim_uses_the_due_index(seeded):
    con, _ = seeded
    plan = await plan_of(con, sub_sql.CLAIM_DUE.sql, datetime.now(UTC), 100)
    assert_indexed(plan, "idx_subscriptions_due")


async def test_lookups_and_attempts_use_indexes(seeded):
    con, row = seeded
    sid, mid = row["id"], row["merchant_id"]
    assert_indexed(await plan_of(con, sub_sql.GET.sql, sid, mid), "subscriptions_pkey")
    assert_indexed(await plan_of(con, sub_sql.LOCK.sql, sid, mid), "subscriptions_pkey")
    assert_indexed(
        await plan_of(con, sub_sql.LATEST_CHARGES.sql, [sid, uuid.uuid4()]), "uq_subscription_charges_attempt"
    )
    # a subscription's few attempts may be fetched by a bitmap scan and top-N sorted: still indexed
    assert_indexed(
        await plan_of(con, sub_sql.LIST_CHARGES.sql, sid, mid, 21),
        "uq_subscription_charges_attempt",
        no_sort=False,
    )
    method = "SELECT id FROM subscriptions WHERE payment_method_id = $1 AND status = 'active'"
    assert_indexed(await plan_of(con, method, row["payment_method_id"]), "idx_subscriptions_payment_method")


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "idx_subscriptions_merchant_created"),
        ({"status": "active"}, "idx_subscriptions_merchant_status_created"),
        ({"customer_id": True}, "idx_subscriptions_merchant_customer_created"),
        ({"payment_method_id": True}, "idx_subscriptions_merchant_payment_method_created"),
        ({"after": True}, "idx_subscriptions_merchant_created"),
        ({"status": "past_due", "after": True}, "idx_subscriptions_merchant_status_created"),
        ({"before": True}, "idx_subscriptions_merchant_created"),
    ],
)
async def test_listings_use_their_index_without_sort(seeded, filters, index):
    con, row = seeded
    captured: dict = {}

    class FakeDb:
        async def fetch(self, query, *args):
            captured["sql"], captured["args"] = query.sql, args
            return []

    repo = sub_sql.SubscriptionRepository(FakeDb())  # type: ignore[arg-type]
    await repo.list_subscriptions(
        row["merchant_id"],
        limit=21,
        status=filters.get("status"),
        customer_id=row["customer_id"] if filters.get("customer_id") else None,
        payment_method_id=row["payment_method_id"] if filters.get("payment_method_id") else None,
        after=(row["created_at"], row["id"]) if filters.get("after") else None,
        before=(row["created_at"], row["id"]) if filters.get("before") else None,
    )
    assert_indexed(await plan_of(con, captured["sql"], *captured["args"]), index)
