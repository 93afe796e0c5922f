"""CRITICAL-2 and the payment-method index set: EXPLAIN on 100,000 seeded payment methods.

The ACH verification sweep must be an Index Only Scan on the partial covering index
`idx_payment_methods_ach_verification` (its predicate repeats the index's three predicates), and
every other lookup or listing of this capability must be served by an index without a Sort.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from paycore.payment_methods import repository as pm_sql
from paycore.platform.db.database import query_counter
from tests.support import db as test_db

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("payment_method_plans")]

METHODS = 100_000
MERCHANTS = 20
PENDING_ACH_EVERY = 100  # ≈ 1 % pending bank accounts


@pytest.fixture(scope="module")
def methods_db():
    name = f"paycore_pm_plans_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
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
            SELECT gen_random_uuid(), 'pm' || g, 'M ' || g, 'sandbox', '9001', (910000 + g)::text, '2', '77'
              FROM generate_series(1, {MERCHANTS}) g
            """
        )
        # 100k methods: 5 per customer; every 100th a pending bank account, the rest verified
        # cards and bank accounts, some failed, some soft-deleted
        await con.execute(
            f"""
            WITH m AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM merchants)
            INSERT INTO customer_payment_methods (
                id, merchant_id, customer_id, payment_type, bric, bric_kind, is_default, is_active,
                verification_status, card_brand, card_last4, exp_month, exp_year, account_type, account_last4,
                routing_number, created_at, updated_at, deleted_at)
            SELECT gen_random_uuid(), m.id, 'cus_' || (g / 5),
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN 'ach' ELSE 'card' END,
                   '09' || upper(substr(md5(g::text), 1, 18)), 'storage', g % 5 = 0,
                   g % 13 <> 0,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 THEN 'pending'
                        WHEN g % 7 = 0 AND g % 11 = 0 THEN 'failed' ELSE 'verified' END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN NULL ELSE 'visa' END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN NULL ELSE '1111' END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN NULL ELSE 12 END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN NULL ELSE 2030 END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN 'checking' END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0
                        THEN lpad((g % 10000)::text, 4, '0') END,
                   CASE WHEN g % {PENDING_ACH_EVERY} = 0 OR g % 7 = 0 THEN '021000021' END,
                   now() - (g || ' minutes')::interval, now(),
                   CASE WHEN g % 17 = 0 AND g % 5 <> 0 THEN now() - interval '10 days' END
              FROM generate_series(1, {METHODS}) g
              JOIN m ON m.n = 1 + (g / 5) % {MERCHANTS}
            """
        )
        # a pre-note transaction for every bank account, and some returns
        await con.execute(
            """
            WITH a AS (SELECT id, merchant_id, created_at, row_number() OVER (ORDER BY id) AS n
                         FROM customer_payment_methods WHERE payment_type = 'ach')
            INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, amount,
                                      currency, tran_nbr, tran_type, batch_id, created_at, updated_at,
                                      payment_method_id)
            SELECT a.id, a.merchant_id, a.id, 'prenote', 'ach', 'approved', 0, 'USD', 1000000000 + a.n,
                   'CKC0', '20261127', a.created_at, a.created_at, a.id
              FROM a
            """
        )
        await con.execute(
            "UPDATE customer_payment_methods SET prenote_transaction_id = id WHERE payment_type = 'ach'"
        )
        # a third of the bank accounts are savings on a lapsing pre-note token (13 months, spread out)
        await con.execute(
            """UPDATE customer_payment_methods
                  SET account_type = 'savings', bric_kind = 'financial',
                      bric_expires_at = now() + ((abs(hashtext(id::text)) % 395) || ' days')::interval
                WHERE payment_type = 'ach' AND abs(hashtext(id::text)) % 3 = 0"""
        )
        await con.execute(
            """
            INSERT INTO ach_returns (id, merchant_id, tran_nbr, code, kind, return_class, entry,
                                     transaction_id, payment_method_id, action, return_date, amount)
            SELECT gen_random_uuid(), merchant_id, tran_nbr, 'R01', 'return', 'other', 'debit', id, id,
                   'count', (created_at AT TIME ZONE 'UTC')::date, 0
              FROM transactions WHERE tran_nbr % 10 = 0
            """
        )
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


async def explain(con, sql: str, *args, analyze: bool = False):
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    text = await con.fetchval(f"EXPLAIN ({options}) {sql}", *args)
    return json.loads(text)[0] if isinstance(text, str) else text[0]


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def index_scans(plan):
    return [n for n in nodes(plan) if "Index" in n["Node Type"]]


def assert_indexed(plan, index: str | None = None):
    seq = [
        n
        for n in nodes(plan)
        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "customer_payment_methods"
    ]
    assert not seq, json.dumps(plan)[:1200]
    assert index_scans(plan), json.dumps(plan)[:1200]
    if index is not None:
        assert index in {n.get("Index Name") for n in index_scans(plan)}, json.dumps(plan)[:1200]


@pytest.fixture
async def con(methods_db):
    connection = await asyncpg.connect(methods_db)
    try:
        yield connection
    finally:
        await connection.close()


async def test_seed_has_about_one_percent_pending_bank_accounts(con):
    total = await con.fetchval("SELECT count(*) FROM customer_payment_methods")
    pending = await con.fetchval(
        "SELECT count(*) FROM customer_payment_methods WHERE payment_type = 'ach' "
        "AND verification_status = 'pending' AND deleted_at IS NULL"
    )
    assert total >= 100_000 and 0.005 * total <= pending <= 0.015 * total


async def test_ach_sweep_uses_partial_index(con):
    """CRITICAL-2: Index Only Scan on idx_payment_methods_ach_verification, no Sort, no heap."""
    sql = pm_sql.DUE_FOR_VERIFICATION.sql
    # the sweep's predicate is the index's predicate, verbatim
    predicate = "payment_type = 'ach' AND verification_status = 'pending' AND deleted_at IS NULL"
    assert predicate in " ".join(sql.split())
    definition = await con.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_payment_methods_ach_verification'"
    )
    assert (
        "(payment_type, verification_status, created_at) INCLUDE (id, merchant_id, customer_id)" in definition
    )
    assert (
        "WHERE ((payment_type = 'ach'::text) AND (verification_status = 'pending'::text) "
        "AND (deleted_at IS NULL))" in definition
    )
    result = await explain(con, sql, datetime.now(UTC), 100, analyze=True)
    plan = result["Plan"]
    scans = index_scans(plan)
    assert [(n["Node Type"], n["Index Name"]) for n in scans] == [
        ("Index Only Scan", "idx_payment_methods_ach_verification")
    ], json.dumps(plan)[:1200]
    assert not [n for n in nodes(plan) if n["Node Type"] in ("Sort", "Seq Scan", "Bitmap Heap Scan")]
    assert scans[0]["Heap Fetches"] == 0
    assert scans[0]["Actual Rows"] == 100
    assert scans[0].get("Rows Removed by Filter", 0) == 0
    assert result["Execution Time"] < 50  # ms (generous bound; the ADR records the measured time)


async def test_without_the_partial_index_the_sweep_scans_the_table(con):
    """The counterfactual: drop the index (rolled back) and the same query reads the whole table."""
    tx = con.transaction()
    await tx.start()
    try:
        await con.execute("DROP INDEX idx_payment_methods_ach_verification")
        plan = (await explain(con, pm_sql.DUE_FOR_VERIFICATION.sql, datetime.now(UTC), 100))["Plan"]
        assert "idx_payment_methods_ach_verification" not in json.dumps(plan)
        assert not [n for n in nodes(plan) if n["Node Type"] == "Index Only Scan"]
    finally:
        await tx.rollback()


async def test_lookups_and_listings_use_their_indexes(con):
    row = await con.fetchrow(
        "SELECT id, merchant_id, customer_id FROM customer_payment_methods "
        "WHERE is_default AND deleted_at IS NULL LIMIT 1"
    )
    mid, cid, pid = row["merchant_id"], row["customer_id"], row["id"]
    listing = (await explain(con, pm_sql.LIST_FOR_CUSTOMER.sql, mid, cid, 200))["Plan"]
    assert_indexed(listing, "idx_payment_methods_customer_sorted")
    assert not [n for n in nodes(listing) if n["Node Type"] in ("Sort", "Incremental Sort")]
    assert_indexed((await explain(con, pm_sql.COUNT_LIVE.sql, mid, cid))["Plan"])
    assert_indexed(
        (await explain(con, pm_sql.DEFAULT_FOR_CUSTOMER.sql, mid, cid))["Plan"],
        "idx_payment_methods_default_active",
    )
    assert_indexed((await explain(con, pm_sql.GET.sql, pid))["Plan"], "customer_payment_methods_pkey")
    assert_indexed(
        (await explain(con, pm_sql.METHOD_BY_PRENOTE.sql, uuid.uuid4()))["Plan"],
        "idx_payment_methods_prenote_transaction",
    )
    assert_indexed((await explain(con, pm_sql.SET_DEFAULT.sql, pid, mid, cid))["Plan"])
    assert_indexed(
        (await explain(con, pm_sql.SET_ACTIVE.sql, pid, mid, cid, False, "x", None, None, None))["Plan"]
    )
    assert_indexed((await explain(con, pm_sql.SOFT_DELETE.sql, pid, mid, cid))["Plan"])
    assert_indexed((await explain(con, pm_sql.TOUCH.sql, pid, datetime.now(UTC)))["Plan"])
    assert_indexed((await explain(con, pm_sql.VERIFY_BATCH.sql, [pid], None, None))["Plan"])
    assert_indexed(
        (await explain(con, pm_sql.PURGE_DELETED.sql, 90, 1000))["Plan"], "idx_payment_methods_deleted"
    )
    assert_indexed(
        (await explain(con, pm_sql.ACH_TOKENS_EXPIRING.sql, datetime.now(UTC), 100))["Plan"],
        "idx_payment_methods_ach_token_expiry",
    )
    assert_indexed(
        (await explain(con, pm_sql.REPLACE_ACH_TOKEN.sql, pid, "x", "y", "financial", None, uuid.uuid4()))[
            "Plan"
        ]
    )
    assert_indexed((await explain(con, pm_sql.DEACTIVATE_FOR_CHANGE.sql, pid, "x", None, None))["Plan"])
    tran = (await explain(con, pm_sql.TRANSACTION_BY_TRAN_NBR.sql, mid, 1234567890))["Plan"]
    assert "uq_transactions_merchant_tran_nbr" in json.dumps(tran)
    returns = (
        await explain(con, pm_sql.RETURN_RATE_COUNTS.sql, mid, datetime.now(UTC), datetime.now(UTC).date())
    )["Plan"]
    assert "idx_ach_returns_merchant_date" in json.dumps(returns)


async def test_batch_verification_is_one_statement(methods_db):
    """A3/A4: 500 ids verified = 1 query; rows changed = the eligible ones (pending ACH, live)."""
    from paycore.config import load_settings
    from paycore.payment_methods.repository import PaymentMethodRepository
    from paycore.platform.db.pool import create_database

    db = await create_database(load_settings({"PAYCORE_ENV": "test"}), methods_db, min_size=1, max_size=2)
    try:
        con = await asyncpg.connect(methods_db)
        try:
            rows = await con.fetch(
                "SELECT id, payment_type = 'ach' AND verification_status = 'pending' "
                "AND deleted_at IS NULL AS ok FROM customer_payment_methods "
                "ORDER BY created_at LIMIT 500 OFFSET 1000"
            )
        finally:
            await con.close()
        ids = [r["id"] for r in rows]
        eligible = sum(1 for r in rows if r["ok"])
        assert 0 < eligible < len(ids)
        counter = [0]
        token = query_counter.set(counter)
        try:
            tx = await PaymentMethodRepository(db).verify_batch(ids, None)
        finally:
            query_counter.reset(token)
        assert counter[0] == 1
        assert len(tx) == eligible
        assert {m.verification_status for m in tx} == {"verified"}
    finally:
        await db.pool.close()
