"""Response compression (API-2): large JSON listings are gzipped for clients that accept it; small
single-object answers, health and metrics are not."""

from __future__ import annotations

import gzip
import json
import uuid

import aiohttp
import pytest

pytestmark = pytest.mark.e2e


async def test_listings_are_gzipped_small_answers_are_not(api, token):
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        for i in range(12):
            async with raw.post(
                api.url + "/v1/payments",
                json={
                    "amount": 2_000 + i,
                    "currency": "USD",
                    "token": token,
                    "metadata": {"order": f"o-{i}"},
                },
                headers={**api.headers(uuid.uuid4().hex), "Accept-Encoding": "gzip"},
            ) as r:
                assert r.status == 201
                assert "Content-Encoding" not in r.headers  # a single payment: not worth compressing
                payment = await r.json()
        headers = {**api.headers(), "Accept-Encoding": "gzip"}
        async with raw.get(api.url + "/v1/payments?limit=12", headers=headers) as r:
            body = await r.read()
            assert r.headers.get("Content-Encoding") == "gzip"
            assert "accept-encoding" in r.headers.get("Vary", "").lower()
        plain = gzip.decompress(body)
        assert len(json.loads(plain)["data"]) == 12
        assert len(body) <= 0.4 * len(plain)
        async with raw.get(
            api.url + "/v1/payments?limit=12", headers=api.headers(), skip_auto_headers=["Accept-Encoding"]
        ) as r:
            assert "Content-Encoding" not in r.headers  # the client did not ask for it
            assert len(await r.read()) == len(plain)
        async with raw.get(f"{api.url}/v1/payments/{payment['id']}", headers=headers) as r:
            assert "Content-Encoding" not in r.headers  # under the 1 KiB minimum
        for path in ("/healthz", "/metrics"):
            async with raw.get(api.url + path, headers={"Accept-Encoding": "gzip"}) as r:
                assert "Content-Encoding" not in r.headers, path
