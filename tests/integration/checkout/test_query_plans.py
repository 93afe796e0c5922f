"""Checkout's lookups are served by indexes (EXPLAIN on 100k transactions and 100k sessions)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from paycore.checkout import repository as sql
from tests.support import db as test_db

pytestmark = pytest.mark.integration

ROWS = 100_000


@pytest.fixture(scope="module")
def plans_db():
    name = f"paycore_ckplans_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
    dsn = asyncio.run(test_db.create_database(name))
    asyncio.run(_seed(dsn))
    yield dsn
    asyncio.run(test_db.drop_database(name))


async def _seed(dsn: str) -> None:
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            """
            INSERT INTO merchants (id, slug, name, environment, epx_cust_nbr, epx_merch_nbr, epx_dba_nbr,
                                   epx_terminal_nbr)
            SELECT gen_random_uuid(), 'm' || g, 'M', 'sandbox', '9001', (900000 + g)::text, '2', '77'
              FROM generate_series(1, 20) g
            """
        )
        await con.execute(
            f"""
            WITH m AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM merchants)
            INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, source, amount,
                                      currency, tran_nbr, tran_type, batch_id, created_at, updated_at)
            SELECT u, m.id, u, 'sale', 'card',
                   CASE WHEN g % 50 = 0 THEN 'pending' ELSE 'approved' END, 'browser_post', 1000, 'USD',
                   1000000000 + g, 'CCE1', '20261127', now() - (g || ' seconds')::interval, now()
              FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, {ROWS}) g) s
              JOIN m ON m.n = 1 + s.g % 20
            """
        )
        await con.execute(
            """
            INSERT INTO checkout_sessions (id, merchant_id, transaction_id, mode, return_url, decline_url,
                                           state, expires_at, created_at)
            SELECT gen_random_uuid(), merchant_id, id, 'sale', 'https://shop.example/r', 'https://shop.example/r',
                   CASE WHEN status = 'pending' THEN 'open' ELSE 'completed' END,
                   created_at + interval '25 minutes', created_at
              FROM transactions
            """
        )
        await con.execute("VACUUM ANALYZE")
    finally:
        await con.close()


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def plan_of(con, query, *args):
    text = await con.fetchval(f"EXPLAIN (FORMAT JSON) {query.sql}", *args)
    return json.loads(text)[0]["Plan"] if isinstance(text, str) else text[0]["Plan"]


def assert_indexed(plan):
    big = {"transactions", "checkout_sessions"}  # (idempotency_keys is empty here: a seq scan is right)
    seq = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in big]
    assert not seq, [n.get("Relation Name") for n in seq]
    assert any("Index" in n["Node Type"] for n in nodes(plan)), json.dumps(plan)[:1000]


async def test_checkout_queries_use_indexes(plans_db):
    con = await asyncpg.connect(plans_db)
    try:
        r = await con.fetchrow(
            "SELECT s.id, s.merchant_id, t.id AS txn, t.tran_nbr FROM checkout_sessions s "
            "JOIN transactions t ON t.id = s.transaction_id WHERE s.state = 'open' LIMIT 1"
        )
        assert_indexed(await plan_of(con, sql.GET_SESSION, r["id"], r["merchant_id"]))
        assert_indexed(await plan_of(con, sql.GET_FOR_TRANSACTION, r["txn"], r["merchant_id"]))
        assert_indexed(
            await plan_of(
                con,
                sql.FINALIZE,
                r["txn"],
                r["merchant_id"],
                r["tran_nbr"],
                "sale",
                1000,
                "",
                "approved",
                "09AAAA",
                "00",
                "1",
                "OK",
                "Z",
                "M",
                "visa",
                "1111",
                None,
                None,
                None,
                b"d",
            )
        )
        assert_indexed(
            await plan_of(
                con,
                sql.TAC_ISSUED,
                r["id"],
                datetime.now(UTC),
                datetime.now(UTC),
                r["merchant_id"],
                None,
                None,
                None,
            )
        )
        assert_indexed(await plan_of(con, sql.EXPIRE_DUE, datetime.now(UTC), 500))
        assert_indexed(await plan_of(con, sql.ABANDON, r["id"], "x", r["merchant_id"], "k"))
        assert_indexed(await plan_of(con, sql.SET_PAYMENT_METHOD, r["id"], uuid.uuid4()))
    finally:
        await con.close()
