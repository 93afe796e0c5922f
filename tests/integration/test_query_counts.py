"""DB-11: no N+1 on the read endpoints. Each listing (payments, subscriptions, disputes, events) and
the payment GET runs a small, fixed number of queries, whatever the page size or the number of
child rows — counted by the request envelope's per-request counter and read back from its
histogram `db_queries_per_request{route}`, for requests through the whole in-process app (auth,
middleware, handlers) on the real database.

Seeded by SQL for one merchant: 120 payments (every tenth with two refunds), one payment with 40
refunds, 120 subscriptions, 120 disputes and 120 events; plus one real sale through the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from paycore.app import create_app
from tests.support.merchants import seed_merchant
from tests.support.stack import stack_settings
from tests.support.tokens import mint_token

pytestmark = pytest.mark.integration

ROWS = 120
BIG_GROUP_REFUNDS = 40
MAX_QUERIES = 3


class Api:
    def __init__(self, client: Any, api_key: str, merchant_id: uuid.UUID) -> None:
        self.client = client
        self.api_key = api_key
        self.merchant_id = merchant_id

    async def counted_get(self, path: str) -> tuple[Any, int]:
        """GET `path`; the body and the number of queries the envelope counted for it."""
        before = _queries_per_request()
        resp = await self.client.get(path, headers={"Authorization": f"Bearer {self.api_key}"})
        after = _queries_per_request()
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        changed = {route: after[route] for route in after if after[route] != before.get(route, (0.0, 0.0))}
        assert len(changed) == 1, f"{path}: expected one observation, got {changed}"
        [(total, count)] = changed.values()
        [(old_total, old_count)] = [before.get(route, (0.0, 0.0)) for route in changed]
        assert count - old_count == 1, f"{path}: {count - old_count} observations"
        return resp.json(), int(total - old_total)


def _queries_per_request() -> dict[str, tuple[float, float]]:
    """route → (sum, count) of `db_queries_per_request`."""
    out: dict[str, list[float]] = {}
    for family in REGISTRY.collect():
        if family.name != "db_queries_per_request":
            continue
        for sample in family.samples:
            route = sample.labels["route"]
            if sample.name.endswith("_sum"):
                out.setdefault(route, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                out.setdefault(route, [0.0, 0.0])[1] = sample.value
    return {route: (v[0], v[1]) for route, v in out.items()}


async def _seed(dsn: str, merchant_id: uuid.UUID) -> uuid.UUID:
    """Rows for the listings; returns the id of the payment with many refunds."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            f"""
            INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, amount, currency,
                                      tran_nbr, tran_type, batch_id, card_brand, card_last4, auth_guid,
                                      customer_id, amount_captured, amount_refunded, created_at, updated_at)
            SELECT u, $1, u, 'sale', 'card', 'approved', 1000 + g, 'USD', 2000000000 + g, 'CCE1',
                   '20261127', 'visa', '1111', 'G' || g, 'cus_' || (g % 7), 1000 + g,
                   CASE WHEN g % 10 = 0 THEN 200 ELSE 0 END,
                   now() - (g || ' minutes')::interval, now() - (g || ' minutes')::interval
              FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, {ROWS}) g) s
            """,
            merchant_id,
        )
        await con.execute(
            """
            INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type, status,
                                      amount, currency, tran_nbr, tran_type, batch_id, auth_guid, created_at,
                                      updated_at)
            SELECT gen_random_uuid(), merchant_id, id, id, 1, 'refund', 'card', 'approved', 100, 'USD',
                   tran_nbr + 1000000000 * r, 'CCE9', batch_id, auth_guid || 'R' || r,
                   created_at + (r || ' seconds')::interval, now()
              FROM transactions CROSS JOIN generate_series(1, 2) r
             WHERE merchant_id = $1 AND tran_nbr BETWEEN 2000000001 AND 2000000120 AND tran_nbr % 10 = 0
            """,
            merchant_id,
        )
        big = uuid.uuid4()
        await con.execute(
            f"""
            INSERT INTO transactions (id, merchant_id, group_id, type, payment_type, status, amount, currency,
                                      tran_nbr, tran_type, batch_id, auth_guid, amount_captured,
                                      amount_refunded, created_at)
            VALUES ($1, $2, $1, 'sale', 'card', 'approved', 100000, 'USD', 5000000000, 'CCE1', '20261127',
                    'BIG', 100000, {BIG_GROUP_REFUNDS * 100}, now() - interval '1 day');
            """,
            big,
            merchant_id,
        )
        await con.execute(
            f"""
            INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type, status,
                                      amount, currency, tran_nbr, tran_type, batch_id, auth_guid, created_at)
            SELECT gen_random_uuid(), $2, $1, $1, 1, 'refund', 'card', 'approved', 100, 'USD',
                   5000000000 + g, 'CCE9', '20261127', 'BIGR' || g,
                   now() - interval '1 day' + g * interval '1s'
              FROM generate_series(1, {BIG_GROUP_REFUNDS}) g
            """,
            big,
            merchant_id,
        )
        await con.execute(
            f"""
            INSERT INTO subscriptions (id, merchant_id, customer_id, payment_method_id, status, amount,
                                       currency, interval_unit, interval_count, start_at, anchor_at,
                                       next_billing_at, created_at, updated_at)
            SELECT gen_random_uuid(), $1, 'cus_' || (g % 7), gen_random_uuid(),
                   (ARRAY['active','paused','past_due'])[1 + g % 3], 1000 + g, 'USD', 'month', 1,
                   now(), now(), now() + interval '10 days',
                   now() - (g || ' minutes')::interval, now()
              FROM generate_series(1, {ROWS}) g
            """,
            merchant_id,
        )
        await con.execute(
            f"""
            INSERT INTO disputes (id, merchant_id, case_number, status, gateway_status, reason_code,
                                  reason_description, reason_category, card_brand, card_last4, tran_nbr,
                                  transaction_id, payment_id, match_status, amount, transaction_amount,
                                  dispute_date, created_at, updated_at)
            SELECT gen_random_uuid(), $1, 'CASE' || t.tran_nbr, 'new', 'NEW', '10.4',
                   'Other Fraud - Card Absent Environment', 'fraud', 'visa', '1111', t.tran_nbr, t.id, t.id,
                   'matched', t.amount, t.amount, current_date, t.created_at, now()
              FROM transactions t
             WHERE t.merchant_id = $1 AND t.parent_id IS NULL
               AND t.tran_nbr BETWEEN 2000000001 AND {2000000000 + ROWS}
            """,
            merchant_id,
        )
        await con.execute(
            f"""
            INSERT INTO outbox_events (id, merchant_id, event_type, aggregate_type, aggregate_id, payload,
                                       created_at, dispatched_at)
            SELECT gen_random_uuid(), $1, 'payment.succeeded', 'payment', gen_random_uuid(),
                   jsonb_build_object('object', jsonb_build_object('n', g)),
                   now() - (g || ' minutes')::interval, now()
              FROM generate_series(1, {ROWS}) g
            """,
            merchant_id,
        )
        await con.execute("ANALYZE")
    finally:
        await con.close()
    return big


@pytest.fixture
async def api(clean_db: str, epx_sim: Any) -> AsyncIterator[Api]:
    settings = stack_settings(clean_db, epx_sim)
    merchant, secret = await seed_merchant(settings, clean_db, slug="counts", name="Counts")
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        yield Api(client, secret, merchant.id)


@pytest.fixture
async def seeded(api: Api, clean_db: str, epx_sim: Any) -> uuid.UUID:
    # One real sale through the API (its event and idempotency rows too); it also warms the API-key
    # cache, so auth costs no query in the counted requests.
    token = await mint_token(epx_sim.server_post_url)
    resp = await api.client.post(
        "/v1/payments",
        json={"amount": 999, "currency": "USD", "token": token},
        headers={"Authorization": f"Bearer {api.api_key}", "Idempotency-Key": uuid.uuid4().hex},
    )
    assert resp.status_code == 201, resp.text
    return await _seed(clean_db, api.merchant_id)


LISTINGS = [
    # path, the exact number of queries per request
    ("/v1/payments", 2),  # the page of roots, then their children with `= ANY($1)`
    ("/v1/subscriptions", 1),
    ("/v1/disputes", 1),
    ("/v1/events", 1),
]


@pytest.mark.parametrize(("path", "expected"), LISTINGS, ids=[p for p, _ in LISTINGS])
async def test_listing_query_count_is_independent_of_page_size(
    api: Api, seeded: uuid.UUID, path: str, expected: int
) -> None:
    one, q_one = await api.counted_get(f"{path}?limit=1")
    full, q_full = await api.counted_get(f"{path}?limit=100")
    following, q_next = await api.counted_get(f"{path}?limit=100&starting_after={full['next_cursor']}")

    assert len(one["data"]) == 1 and one["has_more"]
    assert len(full["data"]) == 100 and full["has_more"]
    assert len(following["data"]) >= ROWS - 100
    assert q_one == q_full == q_next == expected, (q_one, q_full, q_next)
    assert expected <= MAX_QUERIES


async def test_payment_list_with_refunds_embeds_them_without_extra_queries(
    api: Api, seeded: uuid.UUID
) -> None:
    page, queries = await api.counted_get("/v1/payments?limit=100")
    refunded = [p for p in page["data"] if p["amount_refunded"]]
    assert len(refunded) >= 9  # every tenth seeded payment has two refunds
    assert all(len(p["transactions"]) >= 2 for p in refunded)  # embedded, from the one children query
    assert queries == 2


async def test_payment_get_query_count_is_independent_of_its_children(api: Api, seeded: uuid.UUID) -> None:
    page, _ = await api.counted_get("/v1/payments?limit=5")
    plain = next(p for p in page["data"] if not p["amount_refunded"])
    lone, q_lone = await api.counted_get(f"/v1/payments/{plain['id']}")
    big, q_big = await api.counted_get(f"/v1/payments/{seeded}")

    assert big["amount_refunded"] == BIG_GROUP_REFUNDS * 100
    assert len(big["transactions"]) >= BIG_GROUP_REFUNDS
    assert q_lone == q_big == 1, (q_lone, q_big)
    assert lone["id"] == plain["id"]
