"""A sandbox merchant and its API key in a test database (before an app is started on it)."""

from __future__ import annotations

from typing import Any

from paycore.bootstrap import build_merchant_directory
from paycore.merchants.model import Merchant
from paycore.platform.db.pool import create_database
from tests.support.tokens import SANDBOX_KEY


async def seed_merchant(
    settings: Any, dsn: str, *, slug: str = "acme", name: str = "Acme"
) -> tuple[Merchant, str]:
    """Create a sandbox merchant (the simulator's sandbox EPX key, MAC `test-mac`) and a test API
    key; returns the merchant and the key's secret."""
    db = await create_database(settings, dsn, min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await directory.create_merchant(
            slug=slug, name=name, environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
        )
        key = await directory.create_api_key(merchant.id)
        return merchant, key.secret
    finally:
        await db.pool.close()
