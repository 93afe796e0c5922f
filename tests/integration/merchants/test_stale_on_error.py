"""Stale-on-error for merchant credentials (RES-9) against the real database: authenticate (the
caches fill), let the entries expire, cut the directory off the database — API keys and service
JWTs still authenticate from the stale entries, while a key revoked (here or in another process),
an evicted merchant or anything past PAYCORE_CACHE_MAX_STALE is refused."""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from paycore.bootstrap import build_merchant_directory
from paycore.config import Settings, load_settings
from paycore.gateway.port import MerchantKey
from paycore.merchants.model import hash_api_key
from paycore.merchants.repository import MerchantRepository
from paycore.merchants.service import MerchantDirectory
from paycore.platform.db import Database
from paycore.platform.db.database import DatabaseUnavailable
from paycore.platform.db.pool import create_database
from paycore.platform.tasks import TaskSupervisor
from tests.support.stack import free_port
from tests.support.tokens import SANDBOX_KEY

pytestmark = pytest.mark.integration

TTL = 0.1  # seconds: entries expire quickly, then stay stale for MAX_STALE
SHORT_TTLS = {
    "PAYCORE_MERCHANT_CACHE_TTL": "100ms",
    "PAYCORE_SERVICE_CLIENT_CACHE_TTL": "100ms",
    "PAYCORE_SERVICE_GRANT_CACHE_TTL": "100ms",
    "PAYCORE_REVOKED_JTI_CACHE_TTL": "100ms",
}


def settings_with(**env: str) -> Settings:
    return load_settings({"PAYCORE_ENV": "test", **SHORT_TTLS, **env})


def stale_served(cache: str) -> float:
    return REGISTRY.get_sample_value("cache_stale_served_total", {"cache": cache}) or 0.0


class Outage:
    """Cuts a directory off the database: its repository is swapped for one on a dead pool."""

    def __init__(self, directory: MerchantDirectory, dead: Database) -> None:
        self.directory = directory
        self.dead = dead
        self.live = directory.repo

    def __enter__(self) -> Outage:
        self.directory.repo = MerchantRepository(self.dead)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.directory.repo = self.live


@pytest.fixture
async def stack(clean_db):
    """A directory on the real database (max stale 10 s), and a database whose pool is closed."""
    settings = settings_with(PAYCORE_CACHE_MAX_STALE="10s")
    tasks = TaskSupervisor()
    db = await create_database(settings, clean_db, min_size=1, max_size=3)
    dead = await create_database(settings, clean_db, min_size=0, max_size=1)
    await dead.pool.close()
    directory = build_merchant_directory(settings, db, tasks)
    try:
        yield directory, dead, settings
    finally:
        await tasks.cancel_all()
        await db.pool.close()


async def expire() -> None:
    await asyncio.sleep(TTL * 1.5)


async def new_merchant(directory: MerchantDirectory, slug: str = "acme"):
    return await directory.create_merchant(
        slug=slug, name=slug.title(), environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
    )


async def test_every_credential_cache_is_wired_with_max_stale(stack):
    directory, _, settings = stack
    caches = (
        directory.principals,
        directory.merchants,
        directory.service_clients,
        directory.service_grants,
        directory.revoked_jtis,
    )
    assert settings.cache_max_stale == 10.0
    assert {c.max_stale for c in caches} == {10.0}


async def test_an_api_key_authenticates_from_stale_during_an_outage(stack):
    directory, dead, settings = stack
    merchant = await new_merchant(directory)
    key = await directory.create_api_key(merchant.id, name="shop")
    assert (await directory.authenticate(key.secret)).merchant.id == merchant.id
    assert (await directory.get(merchant.id)).slug == "acme"
    await expire()
    before_keys, before_merchants = stale_served("merchant_credentials"), stale_served("merchant")
    with Outage(directory, dead):
        principal = await directory.authenticate(key.secret)
        assert principal.merchant.id == merchant.id and principal.api_key_id == key.id
        assert (await directory.get(merchant.id)).slug == "acme"
    assert stale_served("merchant_credentials") == before_keys + 1
    assert stale_served("merchant") == before_merchants + 1
    # the database is back: the next call reloads (and the entry is fresh again)
    await directory.authenticate(key.secret)
    assert directory.principals.get(hash_api_key(key.secret, settings.api_key_secret)) is not None


async def test_without_a_cached_entry_the_outage_is_an_error(stack):
    directory, dead, _ = stack
    merchant = await new_merchant(directory)
    key = await directory.create_api_key(merchant.id)
    with Outage(directory, dead), pytest.raises(DatabaseUnavailable) as info:
        await directory.authenticate(key.secret)  # never loaded: nothing stale to fall back on
    assert info.value.status == 503


async def test_a_revoked_key_is_refused_during_the_outage(stack):
    directory, dead, _ = stack
    merchant = await new_merchant(directory)
    kept = await directory.create_api_key(merchant.id, name="kept")
    revoked = await directory.create_api_key(merchant.id, name="leaked")
    for key in (kept, revoked):
        await directory.authenticate(key.secret)
    await expire()
    assert await directory.revoke_api_key(revoked.id)
    with Outage(directory, dead):
        with pytest.raises(DatabaseUnavailable):  # refused: the revocation dropped the entry
            await directory.authenticate(revoked.secret)
        assert (await directory.authenticate(kept.secret)).api_key_id == kept.id  # the other one: stale


async def test_a_key_revoked_by_another_process_is_refused_during_the_outage(stack, clean_db):
    directory, dead, settings = stack
    merchant = await new_merchant(directory)
    key = await directory.create_api_key(merchant.id)
    await directory.authenticate(key.secret)
    # another process revokes it; its NOTIFY reaches this one (`NotificationListener` → here)
    other_db = await create_database(settings, clean_db, min_size=1, max_size=1)
    try:
        other = build_merchant_directory(settings, other_db)
        assert await other.revoke_api_key(key.id)
    finally:
        await other_db.pool.close()
    key_hash = hash_api_key(key.secret, settings.api_key_secret)
    directory.on_cache_invalidation(f"mc|api_key|{key_hash.hex()}|")
    await expire()
    with Outage(directory, dead), pytest.raises(DatabaseUnavailable):
        await directory.authenticate(key.secret)


async def test_an_evicted_merchant_is_not_served_stale(stack):
    directory, dead, _ = stack
    merchant = await new_merchant(directory)
    key = await directory.create_api_key(merchant.id)
    await directory.authenticate(key.secret)
    await directory.get(merchant.id)
    await expire()
    assert directory.evict(merchant.id) == 1  # the admin API's eviction (ADR 0010)
    with Outage(directory, dead):
        with pytest.raises(DatabaseUnavailable):
            await directory.authenticate(key.secret)
        with pytest.raises(DatabaseUnavailable):
            await directory.get(merchant.id)


async def test_past_max_stale_the_outage_is_an_error(clean_db):
    settings = settings_with(PAYCORE_CACHE_MAX_STALE="200ms")
    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    dead = await create_database(settings, clean_db, min_size=0, max_size=1)
    await dead.pool.close()
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await new_merchant(directory)
        key = await directory.create_api_key(merchant.id)
        await directory.authenticate(key.secret)
        await asyncio.sleep(TTL + 0.2 + 0.15)  # past TTL + max stale
        before = stale_served("merchant_credentials")
        with Outage(directory, dead), pytest.raises(DatabaseUnavailable):
            await directory.authenticate(key.secret)
        assert stale_served("merchant_credentials") == before
    finally:
        await db.pool.close()


async def test_stale_served_when_the_database_refuses_connections(stack):
    """The other way a database goes away: nothing listens at its address any more."""
    directory, _, settings = stack
    merchant = await new_merchant(directory)
    key = await directory.create_api_key(merchant.id)
    await directory.authenticate(key.secret)
    await expire()
    nowhere = await create_database(
        settings, f"postgresql://paycore@127.0.0.1:{free_port()}/paycore", min_size=0, max_size=1
    )
    try:
        with Outage(directory, nowhere):
            started = time.monotonic()
            assert (await directory.authenticate(key.secret)).merchant.id == merchant.id
            assert time.monotonic() - started < 5.0
    finally:
        await nowhere.pool.close()


# --- service JWTs -------------------------------------------------------------------------------------
def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def mint(key: rsa.RSAPrivateKey, merchant_id: uuid.UUID) -> str:
    now = int(time.time())
    claims = {"iss": "billing-service", "merchant_id": str(merchant_id), "jti": uuid.uuid4().hex}
    return jwt.encode({**claims, "iat": now, "exp": now + 300}, key, algorithm="RS256")


async def test_service_jwts_authenticate_from_stale_and_a_revoked_grant_is_refused(stack):
    directory, dead, _ = stack
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    acme = await new_merchant(directory, "acme")
    other = await directory.create_merchant(
        slug="initech",
        name="Initech",
        environment="sandbox",
        epx=MerchantKey(cust_nbr="9002", merch_nbr="900301", dba_nbr="2", terminal_nbr="78"),
    )
    client = await directory.create_service_client(
        issuer="billing-service", name="Billing", public_key_pem=public_pem(key)
    )
    await directory.grant(client.id, acme.id)
    await directory.grant(client.id, other.id)
    for merchant in (acme, other):
        assert (await directory.authenticate_jwt(mint(key, merchant.id))).merchant.id == merchant.id
    await expire()
    assert await directory.revoke_grant(client.id, other.id)
    with Outage(directory, dead):
        # client, grant, revoked-jti list and merchant: all stale, all served
        assert (await directory.authenticate_jwt(mint(key, acme.id))).merchant.id == acme.id
        with pytest.raises(DatabaseUnavailable):
            await directory.authenticate_jwt(mint(key, other.id))  # the revoked grant: never stale
