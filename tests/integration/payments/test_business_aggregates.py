"""MON-2: the `payments.business_aggregates` job against the real database, with seeded payments."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import count

import asyncpg
import pytest
from prometheus_client import REGISTRY

from paycore.bootstrap import build_container, job_definitions
from paycore.payments import aggregates
from paycore.payments import jobs as payment_jobs
from paycore.payments.repository import AggregateRepository
from paycore.platform.jobs import JobContext
from tests.support.stack import stack_settings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
_tran_nbr = count(1_000_000_001)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def histogram(name: str, **labels: str) -> dict[str, float]:
    out = {"count": sample(f"{name}_count", **labels), "sum": sample(f"{name}_sum", **labels)}
    edges = ("86400.0", "1.2096e+06", "+Inf") if name.startswith("merchant_") else ("1.0", "5.0", "+Inf")
    for le in edges:
        out[le] = sample(f"{name}_bucket", **labels, le=le)
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after if after[k] - before[k]}


async def _merchant(con: asyncpg.Connection, slug: str, created_at: datetime, n: int) -> uuid.UUID:
    merchant_id = uuid.uuid4()
    await con.execute(
        """INSERT INTO merchants (id, slug, name, environment, epx_cust_nbr, epx_merch_nbr, epx_dba_nbr,
                                  epx_terminal_nbr, created_at, updated_at)
           VALUES ($1, $2, $2, 'sandbox', '9001', $3, '2', '77', $4, $4)""",
        merchant_id,
        slug,
        str(900_000 + n),
        created_at,
    )
    return merchant_id


async def _txn(
    con: asyncpg.Connection,
    merchant_id: uuid.UUID,
    created_at: datetime,
    *,
    customer: str | None,
    status: str = "approved",
    type_: str = "sale",
    parent: uuid.UUID | None = None,
) -> uuid.UUID:
    txn_id = uuid.uuid4()
    await con.execute(
        """INSERT INTO transactions (id, merchant_id, group_id, parent_id, depth, type, payment_type, status,
                                     amount, currency, tran_nbr, tran_type, batch_id, customer_id,
                                     created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'card', $7, 1000, 'USD', $8, 'CCE1', '20261127', $9, $10, $10)""",
        txn_id,
        merchant_id,
        parent or txn_id,
        parent,
        1 if parent else 0,
        type_,
        status,
        next(_tran_nbr),
        customer,
        created_at,
    )
    return txn_id


async def _seed(database_url: str) -> None:
    con = await asyncpg.connect(database_url)
    try:
        acme = await _merchant(con, "acme", NOW - 60 * DAY, 1)  # labelled
        globex = await _merchant(con, "globex", NOW - 2 * DAY, 2)  # `other`
        await _merchant(con, "initech", NOW - DAY, 3)  # `other`, no payment yet
        # acme: its first payment 20 days after creation, by a customer no longer active
        await _txn(con, acme, NOW - 40 * DAY, customer="cus_c")
        # cus_a: 3 sales and an auth in 30 days -> 4; its refund and a storage row do not count
        sale = await _txn(con, acme, NOW - 1 * DAY, customer="cus_a")
        await _txn(con, acme, NOW - 2 * DAY, customer="cus_a")
        await _txn(con, acme, NOW - 3 * DAY, customer="cus_a")
        await _txn(con, acme, NOW - 4 * DAY, customer="cus_a", type_="auth")
        await _txn(
            con, acme, NOW - 1 * DAY + timedelta(hours=1), customer="cus_a", type_="refund", parent=sale
        )
        await _txn(con, acme, NOW - 5 * DAY, customer="cus_a", type_="storage")
        # cus_b: one approved sale; its decline, failure and pending attempt do not count
        await _txn(con, acme, NOW - 5 * DAY, customer="cus_b")
        await _txn(con, acme, NOW - 1 * DAY, customer="cus_b", status="declined")
        await _txn(con, acme, NOW - 1 * DAY, customer="cus_b", status="failed")
        await _txn(con, acme, NOW - 1 * DAY, customer="cus_b", status="pending")
        # a guest sale (no customer): not a customer, still a payment
        await _txn(con, acme, NOW - 2 * DAY, customer=None)
        # cus_d declined only: not active
        await _txn(con, acme, NOW - 2 * DAY, customer="cus_d", status="declined")
        # globex: a decline, then its first payment a day after creation; cus_x pays twice
        await _txn(con, globex, NOW - 2 * DAY + timedelta(hours=12), customer="cus_x", status="declined")
        await _txn(con, globex, NOW - 1 * DAY, customer="cus_x")
        await _txn(con, globex, NOW - timedelta(hours=1), customer="cus_x")
        # the same customer id at another merchant is another customer
        await _txn(con, globex, NOW - timedelta(hours=2), customer="cus_a")
    finally:
        await con.close()


@pytest.fixture
async def labelled_container(clean_db, epx_sim):
    settings = stack_settings(clean_db, epx_sim, PAYCORE_METRICS_MERCHANT_LABELS="acme,ghost")
    built = await build_container(settings)
    yield built
    await built.aclose()


async def test_the_aggregates_from_seeded_payments(labelled_container, clean_db):
    await _seed(clean_db)
    tx_before = {
        label: histogram("customer_transaction_count", merchant=label) for label in ("acme", "other")
    }
    ttfp_before = histogram("merchant_time_to_first_payment_seconds")
    started = time.time()

    values = await aggregates.run(
        AggregateRepository(labelled_container.db), frozenset({"acme", "ghost"}), NOW
    )

    assert values.merchants == 3
    assert values.active_customers == {"acme": 2, "ghost": 0, "other": 2}
    assert values.payments_per_customer == {"acme": {4: 1, 1: 1}, "other": {2: 1, 1: 1}}
    assert sorted(values.time_to_first_payment) == [86400.0, 20 * 86400.0]
    # the gauges: every label set, the unknown allow-listed slug at 0
    assert sample("active_customers", merchant="acme") == 2
    assert sample("active_customers", merchant="other") == 2
    assert REGISTRY.get_sample_value("active_customers", {"merchant": "ghost"}) == 0
    assert sample("business_aggregates_timestamp_seconds") >= started
    # one observation per active customer: acme 4 and 1, other (globex) 2 and 1
    assert delta(histogram("customer_transaction_count", merchant="acme"), tx_before["acme"]) == {
        "count": 2,
        "sum": 5,
        "1.0": 1,
        "5.0": 2,
        "+Inf": 2,
    }
    assert delta(histogram("customer_transaction_count", merchant="other"), tx_before["other"]) == {
        "count": 2,
        "sum": 3,
        "1.0": 1,
        "5.0": 2,
        "+Inf": 2,
    }
    # one observation per merchant with a payment: 1 day (globex), 20 days (acme); initech none
    assert delta(histogram("merchant_time_to_first_payment_seconds"), ttfp_before) == {
        "count": 2,
        "sum": 21 * 86400,
        "86400.0": 1,  # globex: exactly one day (the bucket's edge is inclusive)
        "1.2096e+06": 1,  # 14 days
        "+Inf": 2,
    }


async def test_a_later_run_replaces_the_gauge(labelled_container, clean_db):
    """The window moves: 30 days after cus_b's only payment, acme has one active customer."""
    await _seed(clean_db)
    repo = AggregateRepository(labelled_container.db)
    await aggregates.run(repo, frozenset({"acme"}), NOW)
    assert sample("active_customers", merchant="acme") == 2
    later = await aggregates.run(repo, frozenset({"acme"}), NOW + 26 * DAY)
    assert later.active_customers["acme"] == 1  # cus_a (NOW - 1 day) only
    assert sample("active_customers", merchant="acme") == 1


async def test_the_worker_runs_it_every_five_minutes(labelled_container, clean_db):
    [definition] = [
        d for d in job_definitions(labelled_container.settings) if d.name == "payments.business_aggregates"
    ]
    assert definition.every == 300.0 and definition.handler is payment_jobs.business_aggregates
    await _seed(clean_db)
    # the handler as the worker calls it (the container's clock; the first payments do not depend on it)
    ctx = JobContext(container=labelled_container, job_id=None, attempt=1)
    before = histogram("merchant_time_to_first_payment_seconds")
    await definition.handler(ctx, {})
    assert delta(histogram("merchant_time_to_first_payment_seconds"), before)["count"] == 2
    assert REGISTRY.get_sample_value("active_customers", {"merchant": "ghost"}) == 0
