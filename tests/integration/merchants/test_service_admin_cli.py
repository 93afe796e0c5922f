"""`paycore admin` for service credentials, as a real subprocess: register a client service, grant
it a merchant, revoke a token, a grant and the client — each audit-logged with its outcome — and
refuse bad input without a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.integration


def admin_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paycore.cli", "admin", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def admin(env: dict[str, str], *args: str):
    out = admin_run(env, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def write_public_key(path, bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


async def test_service_client_lifecycle_through_the_cli_is_audited(clean_db, tmp_path):
    env = {"PAYCORE_ENV": "test", "DATABASE_URL": clean_db}

    def scenario() -> None:
        admin(
            env, "create-merchant", "--slug", "acme", "--name", "Acme", "--cust-nbr", "9001",
            "--merch-nbr", "900300", "--dba-nbr", "2", "--terminal-nbr", "77",
        )  # fmt: skip
        pem = write_public_key(tmp_path / "billing.pem")
        client = admin(env, "create-service-client", "--issuer", "billing", "--name", "Billing",
                       "--public-key-file", pem)  # fmt: skip
        assert client["issuer"] == "billing" and client["key_fingerprint"].startswith("sha256:")
        [listed] = admin(env, "list-service-clients")
        assert (listed["id"], listed["status"]) == (client["id"], "active")
        assert "BEGIN PUBLIC KEY" not in json.dumps(listed)

        grant = admin(env, "grant", "--client", "billing", "--merchant", "acme")  # issuer and slug
        [row] = admin(env, "list-grants", "--merchant", "acme")
        assert (row["id"], row["issuer"], row["merchant_slug"], row["status"]) == (
            grant["id"], "billing", "acme", "active",
        )  # fmt: skip
        again = admin_run(env, "grant", "--client", client["id"], "--merchant", "acme")
        assert again.returncode == 1 and "already holds an active grant" in again.stderr
        assert "Traceback" not in again.stderr

        revoked = admin(env, "revoke-jti", "--client", "billing", "--jti", "tok-1", "--expires-at",
                        "2099-01-01T00:00:00Z")  # fmt: skip
        assert revoked["revoked"] is True and revoked["expires_at"].startswith("2099-01-01T00:00:00")
        bad = admin_run(env, "revoke-jti", "--client", "billing", "--jti", "t", "--expires-at", "tomorrow")
        assert bad.returncode == 1 and "--expires-at" in bad.stderr and "Traceback" not in bad.stderr

        assert admin(env, "revoke-grant", "--client", "billing", "--merchant", "acme") == {"revoked": True}
        twice = admin_run(env, "revoke-grant", "--client", "billing", "--merchant", "acme")
        assert twice.returncode == 1 and json.loads(twice.stdout) == {"revoked": False}
        assert [g["status"] for g in admin(env, "list-grants", "--client", "billing")] == ["revoked"]

        assert admin(env, "revoke-service-client", "billing") == {"revoked": True}
        [listed] = admin(env, "list-service-clients")
        assert listed["status"] == "revoked" and listed["revoked_at"] is not None
        reuse = admin_run(env, "create-service-client", "--issuer", "billing", "--name", "B2",
                          "--public-key-file", pem)  # fmt: skip
        assert reuse.returncode == 1 and "is taken" in reuse.stderr

        weak = admin_run(env, "create-service-client", "--issuer", "weak", "--name", "W",
                         "--public-key-file", write_public_key(tmp_path / "weak.pem", 1024))  # fmt: skip
        assert weak.returncode == 1 and "at least 2048" in weak.stderr and "Traceback" not in weak.stderr
        missing = admin_run(env, "create-service-client", "--issuer", "m", "--name", "M",
                            "--public-key-file", str(tmp_path / "nope.pem"))  # fmt: skip
        assert missing.returncode == 1 and "--public-key-file" in missing.stderr
        unknown = admin_run(env, "grant", "--client", "nobody", "--merchant", "acme")
        assert unknown.returncode == 1 and "no service client 'nobody'" in unknown.stderr

    await asyncio.to_thread(scenario)

    con = await asyncpg.connect(clean_db)
    try:
        rows = await con.fetch(
            "SELECT actor, action, object_type, outcome, details FROM audit_log ORDER BY id"
        )
        assert [(r["action"], r["outcome"]) for r in rows] == [
            ("merchant.create", "success"),
            ("service_client.create", "success"),
            ("service_grant.create", "success"),
            ("service_token.revoke", "success"),
            ("service_grant.revoke", "success"),
            ("service_grant.revoke", "failure"),
            ("service_client.revoke", "success"),
            ("service_client.create", "failure"),
        ]
        assert {r["actor"] for r in rows} == {"admin-cli"}
        client_row = rows[1]
        assert client_row["object_type"] == "service_client"
        assert json.loads(client_row["details"])["issuer"] == "billing"
        assert await con.fetchval("SELECT count(*) FROM revoked_jtis WHERE jti = 'tok-1'") == 1
    finally:
        await con.close()
