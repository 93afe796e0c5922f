"""§4.1 label rules: after traffic with random paths, ids and merchants, every metric family stays
bounded and no label value looks like an id."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from paycore.app import create_app
from paycore.bootstrap import build_merchant_directory
from paycore.gateway.port import MerchantKey
from paycore.platform.db.pool import create_database
from tests.support.sim import SimControl
from tests.support.stack import stack_settings
from tests.support.tokens import mint_token

pytestmark = pytest.mark.integration

UUID_LIKE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
NUMBER_ID = re.compile(r"^\d{5,}$")
MAX_SERIES = 2000


def _series_by_family() -> dict[str, set[tuple[tuple[str, str], ...]]]:
    out: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            out.setdefault(family.name, set()).add(labels)
    return out


async def test_metric_cardinality_bounded(clean_db: str, epx_sim: Any, sim_control: SimControl) -> None:
    rng = random.Random(7)
    slugs = [f"shop-{uuid.uuid4().hex[:10]}" for _ in range(12)]
    labelled = slugs[:2]
    settings = stack_settings(clean_db, epx_sim, PAYCORE_METRICS_MERCHANT_LABELS=",".join(labelled))
    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    keys: list[tuple[str, MerchantKey]] = []
    run = uuid.uuid4().int % 10**3  # the simulator outlives the test: fresh merchant numbers
    try:
        directory = build_merchant_directory(settings, db)
        for i, slug in enumerate(slugs):
            epx = MerchantKey(cust_nbr="9101", merch_nbr=f"9{run:03d}{i:02d}", dba_nbr="1", terminal_nbr="1")
            await sim_control.add_merchant(
                epx.cust_nbr, epx.merch_nbr, epx.dba_nbr, epx.terminal_nbr, "test-mac"
            )
            merchant = await directory.create_merchant(
                slug=slug, name=slug, environment="sandbox", epx=epx, mac_secret="test-mac"
            )
            keys.append(((await directory.create_api_key(merchant.id)).secret, epx))
    finally:
        await db.pool.close()
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        for key, epx in keys:
            auth = {"Authorization": f"Bearer {key}"}
            token = await mint_token(epx_sim.server_post_url, merchant=epx)
            response = await client.post(
                "/v1/payments",
                json={"amount": rng.randint(1, 99999), "currency": "USD", "token": token},
                headers={**auth, "Idempotency-Key": uuid.uuid4().hex, "X-Request-ID": uuid.uuid4().hex},
            )
            assert response.status_code == 201, response.text
            payment_id = response.json()["id"]
            for path in (
                f"/v1/payments/{payment_id}",
                f"/v1/payments/{uuid.uuid4()}",
                f"/v1/payments/{rng.randint(10**9, 10**12)}",
                f"/v1/payments/{payment_id}/refunds",
                f"/v1/{uuid.uuid4()}/{rng.randint(0, 10**9)}",
                f"/{uuid.uuid4().hex}?q={uuid.uuid4()}",
                f"/v1/payments?limit={rng.randint(1, 100)}&customer_id={uuid.uuid4()}",
            ):
                method = rng.choice(["GET", "POST", "DELETE", "PATCH"])
                await client.request(method, path, headers=auth, json={})
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        text = scrape.text

    series = _series_by_family()
    too_many = {name: len(s) for name, s in series.items() if len(s) > MAX_SERIES}
    assert too_many == {}
    offending = {
        (name, key, value)
        for name, label_sets in series.items()
        for labels in label_sets
        for key, value in labels
        if UUID_LIKE.search(value) or NUMBER_ID.match(value)
    }
    assert offending == set()
    merchants = {dict(labels).get("merchant") for labels in series["payment_transactions"]}
    assert merchants <= {*labelled, "other"}
    assert set(labelled) <= merchants and "other" in merchants  # both kinds were recorded
    routes = {dict(labels)["route"] for labels in series["http_requests"]}
    assert all(route.startswith("/") or route == "unmatched" for route in routes)
    assert "unmatched" in routes  # paths the router refused are counted too, under one label
    assert not any(UUID_LIKE.search(route) for route in routes)
    assert "/v1/payments/{payment_id}" in routes or "/v1/payments/{payment_id:str}" in routes
    assert "payment_transactions_total" in text
