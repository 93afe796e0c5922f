"""RES-M7: heap snapshots behind the admin API (opt-in); `paycore admin` manages admin tokens."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tracemalloc

import pytest

from paycore.admin.service import stop_tracing
from tests.integration.admin.conftest import new_admin_token

pytestmark = pytest.mark.integration


async def test_snapshot_is_refused_when_tracing_is_off(admin_stack):
    app = await admin_stack.start()
    _, admin = await new_admin_token(app)
    reply = await app.request("POST", "/admin/v1/diagnostics/tracemalloc/snapshot", admin)
    assert reply.status == 409 and reply.json()["code"] == "tracemalloc_disabled"


async def test_snapshot_top_sites_and_growth(admin_stack):
    try:
        app = await admin_stack.start(tracemalloc_enabled=True, tracemalloc_frames=1)
        assert tracemalloc.is_tracing()
        _, admin = await new_admin_token(app)
        first = await app.request("POST", "/admin/v1/diagnostics/tracemalloc/snapshot?limit=5", admin)
        assert first.status == 200, first.body
        body = first.json()
        assert body["pid"] == os.getpid() and body["growth_since_previous"] is None
        assert 1 <= len(body["top"]) <= 5 and body["traced_current_bytes"] > 0
        assert all(site["size_bytes"] > 0 and site["line"] >= 0 for site in body["top"])
        assert not any(site["file"] == tracemalloc.__file__ for site in body["top"])

        hoard = [bytearray(1000) for _ in range(5000)]  # ~5 MB allocated on one line
        second = await app.request("POST", "/admin/v1/diagnostics/tracemalloc/snapshot?limit=3", admin)
        growth = second.json()["growth_since_previous"]
        assert second.json()["previous_taken_at"] == body["taken_at"] and len(growth) <= 3
        assert growth[0]["file"] == __file__ and growth[0]["size_diff_bytes"] >= 5_000_000
        del hoard

        too_many = await app.request("POST", "/admin/v1/diagnostics/tracemalloc/snapshot?limit=51", admin)
        assert too_many.status == 400 and too_many.json()["param"] == "limit"
    finally:
        stop_tracing()


async def test_admin_token_cli(admin_stack):
    app = await admin_stack.start()
    env = {**os.environ, "DATABASE_URL": admin_stack.database_url, "PAYCORE_ENV": "test"}

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "paycore.cli", "admin", *args],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )

    created = await asyncio.to_thread(admin, "create-admin-token", "--name", "on-call")
    assert created.returncode == 0, created.stderr
    out = json.loads(created.stdout)
    assert out["admin_token"].startswith("ak_") and out["name"] == "on-call"
    assert (await app.request("GET", "/admin/v1/flags", out["admin_token"])).status == 200

    listed = json.loads((await asyncio.to_thread(admin, "list-admin-tokens")).stdout)
    assert [t["id"] for t in listed] == [out["id"]] and out["admin_token"] not in json.dumps(listed)
    assert listed[0]["last_used_at"] is not None

    revoked = await asyncio.to_thread(admin, "revoke-admin-token", out["id"])
    assert revoked.returncode == 0 and json.loads(revoked.stdout) == {"revoked": True}
    assert (await app.request("GET", "/admin/v1/flags", out["admin_token"])).status == 401
    again = await asyncio.to_thread(admin, "revoke-admin-token", out["id"])
    assert again.returncode == 1

    bad = await asyncio.to_thread(admin, "create-admin-token", "--name", "")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr

    actions = [r["action"] for r in await admin_stack.sql("SELECT action FROM audit_log ORDER BY id")]
    assert "admin_token.create" in actions and "admin_token.revoke" in actions
