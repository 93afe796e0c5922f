"""Every lookup and listing query is served by an index: EXPLAIN on 100k transactions (P1-3, DB-7)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from paycore.idempotency import repository as idem_sql
from paycore.merchants import repository as merchant_sql
from paycore.payments import repository as pay_sql
from tests.support import db as test_db

pytestmark = pytest.mark.integration

ROWS = 100_000
MERCHANTS = 50


@pytest.fixture(scope="module")
def plans_db():
    """A database of its own, seeded once for the module."""
    import asyncio
    import os

    name = f"paycore_plans_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    dsn = asyncio.run(test_db.create_database(name))
    asyncio.run(_seed(dsn))
    yield dsn
    asyncio.run(test_db.drop_database(name))


@pytest.fixture
async def seeded(plans_db):
    con = await asyncpg.connect(plans_db)
    try:
        row = await con.fetchrow(
            "SELECT merchant_id, id, created_at, customer_id FROM transactions "
            "WHERE customer_id IS NOT NULL AND parent_id IS NULL LIMIT 1"
        )
        yield con, row
    finally:
        await con.close()


async def _seed(dsn: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            f"""
            INSERT INTO merchants (id, slug, name, environment, epx_cust_nbr, epx_merch_nbr, epx_dba_nbr,
                                   epx_terminal_nbr)
            SELECT gen_random_uuid(), 'm' || g, 'M ' || g, 'sandbox', '9001', (900000 + g)::text, '2', '77'
              FROM generate_series(1, {MERCHANTS}) g
            """
        )
        await con.execute(
            f"""
            WITH m AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM merchants)
            INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, amount, currency,
                                      tran_nbr, tran_type, batch_id, customer_id, created_at, updated_at)
            SELECT u, m.id, u, CASE WHEN g % 3 = 0 THEN 'auth' ELSE 'sale' END, 'card',
                   (ARRAY['approved','approved','approved','declined','failed'])[1 + g % 5],
                   100 + g % 5000, 'USD', 1000000000 + g, 'CCE1', '20261127',
                   CASE WHEN g % 4 = 0 THEN 'cus_' || (g % 2000) END,
                   now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval
              FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, {ROWS}) g) s
              JOIN m ON m.n = 1 + s.g % {MERCHANTS}
            """
        )
        # follow-ons for a tenth of the payments, and a few unresolved
        await con.execute(
            """
            INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type, status,
                                      amount, currency, tran_nbr, tran_type, batch_id, created_at, updated_at)
            SELECT gen_random_uuid(), merchant_id, id, id, 1, 'refund', 'card',
                   CASE WHEN tran_nbr % 97 = 0 THEN 'unknown' ELSE 'approved' END, 50, 'USD',
                   tran_nbr + 5000000000, 'CCE9', batch_id, created_at + interval '1 minute', now()
              FROM transactions WHERE type = 'sale' AND status = 'approved' AND tran_nbr % 10 = 0
            """
        )
        await con.execute(
            """
            INSERT INTO idempotency_keys (merchant_id, key, fingerprint, method, path, status, resource_id,
                                          expires_at)
            SELECT merchant_id, 'k' || tran_nbr, '\\x00', 'POST', '/v1/payments', 'completed', id,
                   now() + interval '1 day'
              FROM transactions WHERE parent_id IS NULL
            """
        )
        await con.execute(
            """
            INSERT INTO api_keys (id, merchant_id, key_hash, display_prefix, mode)
            SELECT gen_random_uuid(), (SELECT id FROM merchants ORDER BY id LIMIT 1),
                   sha256(g::text::bytea), 'sk_test_…', 'test'
              FROM generate_series(1, 20000) g
            """
        )
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


async def plan_of(con, sql: str, *args):
    text = await con.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return json.loads(text)[0]["Plan"] if isinstance(text, str) else text[0]["Plan"]


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def assert_indexed(plan, *, big_tables=("transactions", "idempotency_keys", "api_keys")):
    seq = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in big_tables]
    assert not seq, f"sequential scan on {[n['Relation Name'] for n in seq]}: {json.dumps(plan)[:800]}"
    assert any("Index" in n["Node Type"] for n in nodes(plan)), json.dumps(plan)[:800]


async def test_payment_lookups_use_indexes(seeded):
    con, row = seeded
    mid, pid = row["merchant_id"], row["id"]
    assert_indexed(await plan_of(con, pay_sql.GET_GROUP.sql, pid, mid))
    assert_indexed(await plan_of(con, pay_sql.LOCK_ROOT.sql, pid, mid))
    assert_indexed(await plan_of(con, pay_sql.GROUP_CHILDREN.sql, pid))
    assert_indexed(await plan_of(con, pay_sql.GROUPS_FOR_PAGE.sql, [pid, uuid.uuid4()], mid))
    assert_indexed(await plan_of(con, pay_sql.UNRESOLVED.sql, 60.0, 200))
    assert_indexed(await plan_of(con, pay_sql.EXPIRED_BROWSER_POSTS.sql, 200))
    assert_indexed(await plan_of(con, idem_sql.GET.sql, mid, "k1000000010"))
    assert_indexed(await plan_of(con, idem_sql.COMPLETE_FOR_RESOURCE.sql, pid, 201, b"{}"))
    assert_indexed(await plan_of(con, merchant_sql.RESOLVE_API_KEY.sql, b"\x00" * 32))


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "approved"},
        {"customer_id": True},
        {"created": True},
        {"after": True},
        {"status": "declined", "after": True},
        {"before": True},
    ],
)
async def test_listing_queries_use_indexes_without_sort(seeded, filters):
    con, row = seeded
    mid = row["merchant_id"]
    captured: dict = {}

    class FakeDb:
        async def fetch(self, query, *args):
            captured["sql"], captured["args"] = query.sql, args
            return []

    repo = pay_sql.PaymentRepository(FakeDb())  # type: ignore[arg-type]
    now = datetime.now(UTC)
    await repo.list_roots(
        mid,
        limit=21,
        status=filters.get("status"),
        customer_id=row["customer_id"] if filters.get("customer_id") else None,
        created_gte=now - timedelta(days=1) if filters.get("created") else None,
        created_lt=now if filters.get("created") else None,
        after=(row["created_at"], row["id"]) if filters.get("after") else None,
        before=(row["created_at"], row["id"]) if filters.get("before") else None,
    )
    plan = await plan_of(con, captured["sql"], *captured["args"])
    assert_indexed(plan)
    if not filters.get("customer_id"):
        # a customer's handful of rows may be fetched by a bitmap scan and top-N sorted: still indexed
        assert not [n for n in nodes(plan) if n["Node Type"] == "Sort"], json.dumps(plan)[:800]


async def test_cache_warmup_query_is_served_by_the_merchant_created_index(seeded):
    """CACHE-1: each merchant's recent payments are counted by an index range scan, capped."""
    con, _ = seeded
    plan = await plan_of(con, merchant_sql.BUSIEST_MERCHANTS.sql, 86_400.0, 100, 10_000)
    assert_indexed(plan)
    scans = {n.get("Index Name") for n in nodes(plan) if n.get("Relation Name") == "transactions"}
    assert scans == {"idx_transactions_merchant_created"}, json.dumps(plan)[:800]


async def test_business_aggregate_queries_use_indexes(seeded):
    """MON-2: the window's approved sales/auths by one range scan of the type/status/created index
    (the seed spans ~28 hours, so an hour here is the share 30 days are of a long history); each
    merchant's first payment by its approved range of the merchant/status/created index."""
    con, _ = seeded
    plan = await plan_of(con, pay_sql.CUSTOMER_ACTIVITY.sql, datetime.now(UTC) - timedelta(hours=1))
    assert_indexed(plan)
    scans = {n.get("Index Name") for n in nodes(plan) if n.get("Index Name")}
    assert scans == {"idx_transactions_type_status_created"}, json.dumps(plan)[:800]
    plan = await plan_of(con, pay_sql.MERCHANT_FIRST_PAYMENTS.sql)
    assert_indexed(plan)
    scans = {n.get("Index Name") for n in nodes(plan) if n.get("Index Name")}
    assert scans == {"idx_transactions_merchant_status_created"}, json.dumps(plan)[:800]
    assert not [n for n in nodes(plan) if n["Node Type"] == "Sort"], json.dumps(plan)[:800]
