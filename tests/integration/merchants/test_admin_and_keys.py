"""Merchants and API keys through `paycore admin` (a real subprocess) and the merchant directory:
keys shown once and stored as keyed hashes, revocation, last use, and the append-only audit log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import pytest

from paycore.bootstrap import build_merchant_directory
from paycore.config import load_settings
from paycore.kernel.errors import PaycoreError
from paycore.merchants.model import hash_api_key
from paycore.platform.db.pool import create_database
from paycore.platform.tasks import TaskSupervisor

pytestmark = pytest.mark.integration


def admin(env: dict[str, str], *args: str) -> dict | list:
    out = subprocess.run(
        [sys.executable, "-m", "paycore.cli", "admin", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


async def test_admin_cli_creates_merchant_and_key_that_authenticates_then_revokes(clean_db):
    env = {"PAYCORE_ENV": "test", "DATABASE_URL": clean_db, "EPX_MAC": "mac-from-env"}
    merchant = await asyncio.to_thread(
        admin, env, "create-merchant", "--slug", "acme", "--name", "Acme", "--cust-nbr", "9001",
        "--merch-nbr", "900300", "--dba-nbr", "2", "--terminal-nbr", "77", "--mac-secret-env", "EPX_MAC",
    )  # fmt: skip
    assert merchant["slug"] == "acme" and merchant["environment"] == "sandbox"
    created = await asyncio.to_thread(admin, env, "create-api-key", "--merchant", "acme", "--name", "shop")
    secret = created["api_key"]
    assert secret.startswith("sk_test_")
    listed = await asyncio.to_thread(admin, env, "list-api-keys", "--merchant", "acme")
    assert [k["id"] for k in listed] == [created["id"]]
    assert secret not in json.dumps(listed)

    settings = load_settings({"PAYCORE_ENV": "test"})
    con = await asyncpg.connect(clean_db)
    try:
        row = await con.fetchrow("SELECT key_hash, display_prefix FROM api_keys")
        assert bytes(row["key_hash"]) == hash_api_key(secret, settings.api_key_secret)
        assert secret not in row["display_prefix"] and row["display_prefix"].endswith(secret[-4:])
        stored = await con.fetchrow("SELECT mac_secret_ciphertext FROM merchants")
        assert "mac-from-env" not in stored["mac_secret_ciphertext"]
    finally:
        await con.close()

    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    tasks = TaskSupervisor()
    try:
        directory = build_merchant_directory(settings, db, tasks)
        principal = await directory.authenticate(secret)
        assert principal.merchant.slug == "acme" and principal.mode == "test"
        assert (await directory.mac_secret(principal.merchant.id)).reveal() == "mac-from-env"
        await tasks.drain(5)
        # the last use is recorded (in the background, at most once a minute per key)
        con = await asyncpg.connect(clean_db)
        try:
            assert await con.fetchval("SELECT last_used_at FROM api_keys") is not None
        finally:
            await con.close()
        with pytest.raises(PaycoreError) as info:
            await directory.authenticate("sk_test_" + "x" * 32)
        assert info.value.status == 401
        assert await directory.revoke_api_key(principal.api_key_id)
        with pytest.raises(PaycoreError) as info:
            await directory.authenticate(secret)
        assert info.value.code == "unauthenticated"
    finally:
        await tasks.cancel_all()
        await db.pool.close()

    con = await asyncpg.connect(clean_db)
    try:
        actions = [r["action"] for r in await con.fetch("SELECT action FROM audit_log ORDER BY id")]
        assert actions == ["merchant.create", "api_key.create", "api_key.revoke"]
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await con.execute("UPDATE audit_log SET outcome = 'failure'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await con.execute("DELETE FROM audit_log")
    finally:
        await con.close()


async def test_live_keys_are_refused_for_sandbox_merchants(clean_db):
    env = {"PAYCORE_ENV": "test", "DATABASE_URL": clean_db}
    await asyncio.to_thread(
        admin, env, "create-merchant", "--slug", "acme", "--name", "Acme", "--cust-nbr", "9001",
        "--merch-nbr", "900300", "--dba-nbr", "2", "--terminal-nbr", "77",
    )  # fmt: skip
    with pytest.raises(subprocess.CalledProcessError) as info:
        await asyncio.to_thread(admin, env, "create-api-key", "--merchant", "acme", "--mode", "live")
    assert "live keys are not allowed for a sandbox merchant" in info.value.stderr
    assert "Traceback" not in info.value.stderr
