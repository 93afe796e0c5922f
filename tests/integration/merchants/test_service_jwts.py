"""Service-to-service RS256 JWTs against the real database: keys generated here, tokens minted the
way a client service would (PyJWT), and every way a token must be refused. Also the caches: a
repeat authentication runs no query, and every revocation takes effect at once — in this process
and, through NOTIFY, in another one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from paycore.bootstrap import build_merchant_directory, job_definitions
from paycore.config import load_settings
from paycore.gateway.port import MerchantKey
from paycore.kernel.errors import PaycoreError
from paycore.merchants import jobs
from paycore.merchants.service import CACHE_CHANNEL, MerchantDirectory
from paycore.platform.db.database import query_counter
from paycore.platform.db.listener import NotificationListener
from paycore.platform.db.pool import create_database
from paycore.platform.jobs import JobContext
from paycore.platform.tasks import TaskSupervisor
from tests.support.tokens import SANDBOX_KEY

pytestmark = pytest.mark.integration

ISSUER = "billing-service"
INVALID = "The token is not valid"


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def client_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def mint(key, *, iss=ISSUER, merchant_id=None, jti=None, lifetime=300, drop=(), headers=None, **extra) -> str:
    now = int(time.time())
    claims = {
        "iss": iss,
        "merchant_id": str(merchant_id),
        "jti": uuid.uuid4().hex if jti is None else jti,
        "iat": now,
    }
    claims["exp"] = now + lifetime
    claims.update(extra)
    for name in drop:
        claims.pop(name, None)
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, sign) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


async def directory_on(dsn: str, tasks: TaskSupervisor, **env: str) -> tuple[MerchantDirectory, object]:
    settings = load_settings({"PAYCORE_ENV": "test", **env})
    db = await create_database(settings, dsn, min_size=1, max_size=3)
    return build_merchant_directory(settings, db, tasks), db


@pytest.fixture
async def directory(clean_db):
    tasks = TaskSupervisor()
    built, db = await directory_on(clean_db, tasks)
    yield built
    await tasks.cancel_all()
    await db.pool.close()


@pytest.fixture
async def acme(directory):
    return await directory.create_merchant(
        slug="acme", name="Acme", environment="sandbox", epx=SANDBOX_KEY, mac_secret="test-mac"
    )


@pytest.fixture
async def globex(directory):
    return await directory.create_merchant(
        slug="globex",
        name="Globex",
        environment="production",
        epx=MerchantKey(cust_nbr="9002", merch_nbr="900301", dba_nbr="2", terminal_nbr="78"),
    )


@pytest.fixture
async def client(directory, client_key, acme):
    created = await directory.create_service_client(
        issuer=ISSUER, name="Billing", public_key_pem=public_pem(client_key)
    )
    await directory.grant(created.id, acme.id)
    return created


async def refused(directory: MerchantDirectory, token: str) -> PaycoreError:
    with pytest.raises(PaycoreError) as info:
        await directory.authenticate_jwt(token)
    return info.value


async def sql(dsn: str, query: str, *args):
    con = await asyncpg.connect(dsn)
    try:
        return await con.fetch(query, *args)
    finally:
        await con.close()


# --- the happy path -------------------------------------------------------------------------------
async def test_a_valid_token_is_the_granted_merchants_principal(directory, client, client_key, acme):
    principal = await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id))
    assert principal.merchant.id == acme.id and principal.merchant.slug == "acme"
    assert principal.mode == "test" and not principal.livemode  # a sandbox merchant
    assert principal.service_client_id == client.id and principal.api_key_id is None


async def test_a_production_merchant_is_live_mode(directory, client, client_key, globex):
    await directory.grant(client.id, globex.id)
    principal = await directory.authenticate_jwt(mint(client_key, merchant_id=globex.id))
    assert principal.merchant.id == globex.id and principal.mode == "live" and principal.livemode


async def test_optional_nbf_and_a_configured_audience(clean_db, client, client_key, acme):
    tasks = TaskSupervisor()
    strict, db = await directory_on(clean_db, tasks, PAYCORE_JWT_AUDIENCE="paycore")
    try:
        ok = mint(client_key, merchant_id=acme.id, aud="paycore", nbf=int(time.time()) - 5)
        assert (await strict.authenticate_jwt(ok)).merchant.id == acme.id
        for token in (mint(client_key, merchant_id=acme.id), mint(client_key, merchant_id=acme.id, aud="x")):
            assert (await refused(strict, token)).detail == INVALID
    finally:
        await tasks.cancel_all()
        await db.pool.close()


# --- 401: the token itself ------------------------------------------------------------------------
async def test_a_token_signed_by_another_key_is_refused(directory, client, stranger_key, acme):
    error = await refused(directory, mint(stranger_key, merchant_id=acme.id))
    assert (error.status, error.code, error.detail) == (401, "unauthenticated", INVALID)


async def test_a_tampered_payload_is_refused(directory, client, client_key, acme, globex):
    header, _, signature = mint(client_key, merchant_id=acme.id).split(".")
    claims = {"iss": ISSUER, "merchant_id": str(globex.id), "jti": "x", "exp": int(time.time()) + 60}
    payload = b64(json.dumps(claims).encode())
    assert (await refused(directory, f"{header}.{payload}.{signature}")).detail == INVALID


async def test_alg_none_is_refused(directory, client, acme):
    claims = {"iss": ISSUER, "merchant_id": str(acme.id), "jti": "n", "exp": int(time.time()) + 60}
    for alg in ("none", "None", "NONE"):
        unsigned = forge({"alg": alg, "typ": "JWT"}, claims, lambda _data: b"")
        assert (await refused(directory, unsigned)).detail == INVALID
        signed_anyway = forge({"alg": alg, "typ": "JWT"}, claims, lambda _data: b"sig")
        assert (await refused(directory, signed_anyway)).detail == INVALID


async def test_hs256_signed_with_the_public_key_is_refused(directory, client, client_key, acme):
    """The key-confusion attack: the public key is public, so an attacker can HMAC with its PEM."""
    claims = {"iss": ISSUER, "merchant_id": str(acme.id), "jti": "h", "exp": int(time.time()) + 60}
    for secret in (public_pem(client_key).encode(), client.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )):  # fmt: skip
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            token = forge(
                {"alg": alg, "typ": "JWT"},
                claims,
                lambda data, s=secret, d=digest: hmac.new(s, data, d).digest(),
            )
            assert (await refused(directory, token)).detail == INVALID


async def test_a_header_claiming_rs256_does_not_help_an_hmac_signature(directory, client, client_key, acme):
    claims = {"iss": ISSUER, "merchant_id": str(acme.id), "jti": "h2", "exp": int(time.time()) + 60}
    secret = public_pem(client_key).encode()
    token = forge({"alg": "RS256"}, claims, lambda data: hmac.new(secret, data, hashlib.sha256).digest())
    assert (await refused(directory, token)).detail == INVALID


async def test_an_expired_token_is_refused_as_expired(directory, client, client_key, acme):
    now = int(time.time())
    token = mint(client_key, merchant_id=acme.id, iat=now - 600, exp=now - 120)  # beyond the 30 s leeway
    error = await refused(directory, token)
    assert (error.status, error.detail) == (401, "The token has expired")
    within_leeway = mint(client_key, merchant_id=acme.id, iat=now - 600, exp=now - 5)
    assert (await directory.authenticate_jwt(within_leeway)).merchant.id == acme.id


@pytest.mark.parametrize("claim", ["exp", "jti", "merchant_id", "iss"])
async def test_each_required_claim_is_required(directory, client, client_key, acme, claim):
    error = await refused(directory, mint(client_key, merchant_id=acme.id, drop=(claim,)))
    assert (error.status, error.detail) == (401, INVALID)


async def test_malformed_claims_and_tokens_are_refused(directory, client, client_key, acme):
    now = int(time.time())
    for token in (
        mint(client_key, merchant_id="acme"),  # not a UUID
        mint(client_key, merchant_id=acme.id, jti=""),
        mint(client_key, merchant_id=acme.id, lifetime=2 * 3600),  # longer than PAYCORE_JWT_MAX_LIFETIME
        mint(client_key, merchant_id=acme.id, drop=("iat",), exp=now + 30 * 86400),
        mint(client_key, merchant_id=acme.id, iat=now + 3600, exp=now + 3700),  # issued in the future
        mint(client_key, merchant_id=acme.id, nbf=now + 600),
        "a.b.c",
        "not-a-jwt.at.all",
        "x" * 9000 + ".a.b",
    ):
        error = await refused(directory, token)
        assert (error.status, error.code, error.detail) == (401, "unauthenticated", INVALID), token[:40]


async def test_an_unknown_issuer_is_refused_then_accepted_once_registered(directory, stranger_key, acme):
    token = mint(stranger_key, iss="orders-service", merchant_id=acme.id)
    assert (await refused(directory, token)).detail == INVALID  # the unknown issuer is now cached
    created = await directory.create_service_client(
        issuer="orders-service", name="Orders", public_key_pem=public_pem(stranger_key)
    )
    await directory.grant(created.id, acme.id)
    assert (await directory.authenticate_jwt(token)).service_client_id == created.id


async def test_a_revoked_client_is_refused_at_once(directory, client, client_key, acme):
    token = mint(client_key, merchant_id=acme.id)
    await directory.authenticate_jwt(token)  # client cached
    assert await directory.revoke_service_client(client.id)
    assert (await refused(directory, token)).detail == INVALID
    assert not await directory.revoke_service_client(client.id)  # already revoked


async def test_a_revoked_jti_is_refused_and_other_tokens_are_not(directory, client, client_key, acme):
    leaked = mint(client_key, merchant_id=acme.id, jti="leaked-1")
    await directory.authenticate_jwt(leaked)  # the revocation list is cached (empty)
    await directory.revoke_jti(client.id, "leaked-1", datetime.now(UTC) + timedelta(minutes=5))
    assert (await refused(directory, leaked)).detail == INVALID
    assert (await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id))).merchant.id == acme.id
    # the same jti of another client is another token
    other = await directory.create_service_client(
        issuer="other-service", name="Other", public_key_pem=public_pem(client_key)
    )
    await directory.grant(other.id, acme.id)
    same_jti = mint(client_key, iss="other-service", merchant_id=acme.id, jti="leaked-1")
    assert (await directory.authenticate_jwt(same_jti)).service_client_id == other.id


async def test_a_revoked_jti_found_in_the_database_when_the_list_is_cut(
    directory, client, client_key, acme, monkeypatch
):
    from paycore.merchants import service

    await directory.revoke_jti(client.id, "a", datetime.now(UTC) + timedelta(minutes=5))
    await directory.revoke_jti(client.id, "b", datetime.now(UTC) + timedelta(minutes=6))
    monkeypatch.setattr(service, "REVOKED_JTI_LIMIT", 1)
    directory.revoked_jtis.clear()
    for jti in ("a", "b"):
        assert (await refused(directory, mint(client_key, merchant_id=acme.id, jti=jti))).detail == INVALID
    assert (await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id, jti="c"))).merchant.id


# --- 403: the client may not act for that merchant ------------------------------------------------
async def test_no_grant_is_forbidden(directory, client, client_key, globex):
    error = await refused(directory, mint(client_key, merchant_id=globex.id))
    assert (error.status, error.code) == (403, "forbidden")
    unknown = await refused(directory, mint(client_key, merchant_id=uuid.uuid4()))
    assert (unknown.status, unknown.detail) == (403, error.detail)  # no hint whether the merchant exists


async def test_a_revoked_grant_is_forbidden_at_once(directory, client, client_key, acme):
    token = mint(client_key, merchant_id=acme.id)
    await directory.authenticate_jwt(token)  # grant cached
    assert await directory.revoke_grant(client.id, acme.id)
    assert (await refused(directory, token)).status == 403
    assert not await directory.revoke_grant(client.id, acme.id)
    await directory.grant(client.id, acme.id)  # granted again: a new active grant
    assert (await directory.authenticate_jwt(token)).merchant.id == acme.id


async def test_an_inactive_merchant_is_forbidden(directory, client, client_key, acme, clean_db):
    await sql(clean_db, "UPDATE merchants SET status = 'suspended' WHERE id = $1", acme.id)
    error = await refused(directory, mint(client_key, merchant_id=acme.id))
    assert (error.status, error.code) == (403, "forbidden")


# --- caches ---------------------------------------------------------------------------------------
async def test_a_repeat_authentication_runs_no_query(directory, client, client_key, acme):
    await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id))
    counter = [0]
    token = query_counter.set(counter)
    try:
        for _ in range(3):  # new tokens (new jti) of the same client for the same merchant
            await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id))
        with pytest.raises(PaycoreError):
            await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id, jti="x", lifetime=-600))
    finally:
        query_counter.reset(token)
    assert counter == [0]


async def test_revocations_reach_another_process_within_a_second(
    clean_db, directory, client, client_key, acme
):
    tasks = TaskSupervisor()
    remote, db = await directory_on(clean_db, tasks)
    listener = NotificationListener(clean_db, tasks)  # as `build_container` wires it
    listener.subscribe(CACHE_CHANNEL, remote.on_cache_invalidation)
    listener.on_connect(remote.on_listener_connect)
    try:
        listener.start()
        await asyncio.wait_for(listener.listening.wait(), 5)

        async def until_refused(token: str, status: int) -> bool:
            for _ in range(100):
                try:
                    await remote.authenticate_jwt(token)
                except PaycoreError as exc:
                    return exc.status == status
                await asyncio.sleep(0.01)
            return False

        leaked = mint(client_key, merchant_id=acme.id, jti="leak")
        await remote.authenticate_jwt(leaked)  # cached there: client, grant, revocation list
        await directory.revoke_jti(client.id, "leak", datetime.now(UTC) + timedelta(minutes=5))
        assert await until_refused(leaked, 401)

        token = mint(client_key, merchant_id=acme.id)
        await remote.authenticate_jwt(token)
        await directory.revoke_grant(client.id, acme.id)
        assert await until_refused(token, 403)

        await directory.grant(client.id, acme.id)
        for _ in range(100):  # the new grant is seen too (the negative entry was dropped)
            try:
                await remote.authenticate_jwt(token)
                break
            except PaycoreError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("the new grant never reached the other process")
        await directory.revoke_service_client(client.id)
        assert await until_refused(token, 401)

        # API keys too: a revocation (e.g. by `paycore admin`) reaches the serving processes
        key = await directory.create_api_key(acme.id)
        assert (await remote.authenticate(key.secret)).merchant.id == acme.id
        await directory.revoke_api_key(key.id)
        for _ in range(100):
            try:
                await remote.authenticate(key.secret)
            except PaycoreError as exc:
                assert exc.status == 401
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the API-key revocation never reached the other process")
    finally:
        await tasks.cancel_all()
        await db.pool.close()
    assert not listener.listening.is_set()


async def test_a_reconnected_listener_drops_every_cached_credential(directory, client, client_key, acme):
    """Notifications sent while the listener was down are lost: on (re)connect nothing cached is
    trusted any more."""
    await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id))
    key = await directory.create_api_key(acme.id)
    await directory.authenticate(key.secret)
    caches = (
        directory.principals,
        directory.service_clients,
        directory.service_grants,
        directory.revoked_jtis,
    )
    assert all(len(cache) == 1 for cache in caches)
    await directory.on_listener_connect()
    assert all(len(cache) == 0 for cache in caches)


async def test_foreign_and_malformed_items_are_ignored(directory, client, client_key, acme):
    await directory.authenticate_jwt(mint(client_key, merchant_id=acme.id))
    directory.on_cache_invalidation(
        f"pm|{uuid.uuid4()}|{acme.id}|cus_1;mc|merchant|{acme.id}|;mc|grant|nope|nope;mc|api_key|zz|;junk"
    )
    assert len(directory.service_grants) == 1 and len(directory.service_clients) == 1
    directory.on_cache_invalidation(f"pm|x|y|z;mc|grant|{client.id}|{acme.id}")
    assert len(directory.service_grants) == 0 and len(directory.service_clients) == 1


# --- administration -------------------------------------------------------------------------------
async def test_administration_rules_and_audit(directory, client, client_key, acme, clean_db):
    with pytest.raises(ValueError, match="is taken"):
        await directory.create_service_client(
            issuer=ISSUER, name="again", public_key_pem=public_pem(client_key)
        )
    with pytest.raises(ValueError, match="already holds an active grant"):
        await directory.grant(client.id, acme.id)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="at least 2048"):
        await directory.create_service_client(issuer="weak", name="Weak", public_key_pem=public_pem(weak))
    with pytest.raises(ValueError, match="issuer must be"):
        await directory.create_service_client(issuer="a|b", name="x", public_key_pem=public_pem(client_key))
    await directory.revoke_jti(client.id, "j1", datetime.now(UTC) + timedelta(minutes=5))
    await directory.revoke_jti(client.id, "j1", datetime.now(UTC) + timedelta(minutes=9))  # idempotent
    [row] = await sql(clean_db, "SELECT expires_at FROM revoked_jtis WHERE jti = 'j1'")
    assert row["expires_at"] > datetime.now(UTC) + timedelta(minutes=8)
    [listed] = await directory.list_grants(client_id=client.id)
    assert (listed["issuer"], listed["merchant_slug"], listed["status"]) == (ISSUER, "acme", "active")
    assert await directory.list_grants(merchant_id=acme.id) == [listed]
    clients = await directory.list_service_clients()
    assert [c["issuer"] for c in clients] == [ISSUER] and "public_key_pem" not in clients[0]
    rows = await sql(clean_db, "SELECT action, outcome FROM audit_log ORDER BY id")
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("merchant.create", "success"),
        ("service_client.create", "success"),
        ("service_grant.create", "success"),
        ("service_client.create", "failure"),
        ("service_token.revoke", "success"),
        ("service_token.revoke", "success"),
    ]


async def test_the_migration_indexes_every_lookup(directory, client, acme, clean_db):
    """The authentication and revocation lookups are served by indexes (not a table scan)."""
    con = await asyncpg.connect(clean_db)
    try:
        await con.execute("SET enable_seqscan = off")
        plans = {
            "issuer": ("SELECT * FROM service_clients WHERE issuer = 'x'",),
            "grant": (
                "SELECT 1 FROM service_grants"
                " WHERE client_id = $1 AND merchant_id = $2 AND status = 'active'",
                client.id,
                acme.id,
            ),
            "jti": ("SELECT 1 FROM revoked_jtis WHERE client_id = $1 AND jti = 'x'", client.id),
            "live": ("SELECT client_id, jti FROM revoked_jtis WHERE expires_at > now() ORDER BY expires_at",),
            "client_grants": (
                "SELECT * FROM service_grants WHERE client_id = $1 ORDER BY created_at DESC",
                client.id,
            ),
            "merchant_grants": (
                "SELECT * FROM service_grants WHERE merchant_id = $1 ORDER BY created_at DESC",
                acme.id,
            ),
        }
        for name, (query, *args) in plans.items():
            plan = "\n".join(r[0] for r in await con.fetch("EXPLAIN " + query, *args))
            assert "Index" in plan and "Seq Scan" not in plan, (name, plan)
        with pytest.raises(asyncpg.UniqueViolationError):
            await con.execute(
                "INSERT INTO service_grants (id, client_id, merchant_id) VALUES ($1, $2, $3)",
                uuid.uuid4(),
                client.id,
                acme.id,
            )
    finally:
        await con.close()


async def test_the_log_names_the_reason_the_caller_is_not_told(
    directory, client, client_key, stranger_key, acme
):
    from structlog.testing import capture_logs

    await directory.revoke_jti(client.id, "gone", datetime.now(UTC) + timedelta(minutes=5))
    tokens = {
        "InvalidSignatureError": mint(stranger_key, merchant_id=acme.id),
        "jti_revoked": mint(client_key, merchant_id=acme.id, jti="gone"),
        "issuer_unknown": mint(client_key, iss="nobody", merchant_id=acme.id),
        "merchant_id must be a UUID": mint(client_key, merchant_id="acme"),
        "expired": mint(
            client_key, merchant_id=acme.id, iat=int(time.time()) - 900, exp=int(time.time()) - 300
        ),
    }
    with capture_logs() as logs:
        details = {(await refused(directory, token)).detail for token in tokens.values()}
    assert details == {INVALID, "The token has expired"}
    refusals = [e for e in logs if e["event"] == "service_token_refused"]
    assert [e["reason"] for e in refusals] == list(tokens)
    assert {e["issuer"] for e in refusals} == {ISSUER, "nobody"}
    assert not any(token in repr(logs) for token in tokens.values())  # tokens are never logged


# --- the purge job ------------------------------------------------------------------------------
class JobContainer:
    def __init__(self, merchants) -> None:
        self.merchants = merchants


async def test_expired_revocations_are_purged_and_live_ones_kept(
    directory, client, client_key, acme, clean_db
):
    now = datetime.now(UTC)
    leeway = directory.jwt_policy.leeway
    dead = [f"dead-{i}" for i in range(5)]
    for jti in dead:
        await directory.revoke_jti(client.id, jti, now - timedelta(seconds=leeway + 120))
    recent = "recent"  # expired, but still inside the leeway: a token could still pass `exp`
    await directory.revoke_jti(client.id, recent, now - timedelta(seconds=1))
    live_token = mint(client_key, merchant_id=acme.id, jti="live")
    await directory.revoke_jti(client.id, "live", now + timedelta(minutes=5))

    await jobs.revoked_jti_purge(JobContext(container=JobContainer(directory), job_id=None, attempt=1), {})

    left = {r["jti"] for r in await sql(clean_db, "SELECT jti FROM revoked_jtis")}
    assert left == {recent, "live"}
    assert (await refused(directory, live_token)).status == 401  # still revoked
    # a token whose revocation was purged is dead by its own `exp`
    expired = mint(client_key, merchant_id=acme.id, jti=dead[0], lifetime=-(leeway + 120))
    assert "expired" in (await refused(directory, expired)).detail
    assert jobs.REVOKED_JTI_PURGE in {d.name for d in job_definitions()}


async def test_purge_works_in_batches(directory, client, clean_db):
    old = datetime.now(UTC) - timedelta(days=2)
    for i in range(7):
        await directory.revoke_jti(client.id, f"old-{uuid.uuid4().hex}-{i}", old)
    assert await directory.purge_revoked_jtis(batch=3) == 7
    assert await sql(clean_db, "SELECT 1 FROM revoked_jtis") == []
