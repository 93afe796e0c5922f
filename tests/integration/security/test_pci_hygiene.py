"""PCI hygiene: after every card and bank-account flow with real-looking data, no card number, no
CVV and no full bank account number appears in a full database dump, in the raw log events, in the
JSON log stream or in an HTTP response; secrets at rest are encrypted with a versioned key and
`paycore admin rotate-encryption-key` re-encrypts them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet

from paycore.bootstrap import build_merchant_directory
from paycore.config import load_settings
from paycore.gateway.port import MerchantKey
from paycore.platform.crypto import Keyring, Sealed
from paycore.platform.db.pool import create_database
from tests.integration.security import pci_flows
from tests.support.stack import stack_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"
CVV_NEAR = re.compile(r"(?i)cvv2?\W{0,8}" + pci_flows.CVV)


async def run(*cmd: str, env: dict[str, str], timeout: float = 180) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def pg_dump(dsn: str) -> str:
    binary = PG_DUMP if Path(PG_DUMP).exists() else "pg_dump"
    code, out, err = await run(binary, "--no-owner", "--inserts", dsn, env=dict(os.environ))
    assert code == 0, err
    return out


@pytest.fixture
async def flows(clean_db, epx_sim, sim_control, tmp_path):
    """Run `pci_flows` in a fresh process against this test's database and simulator."""
    env = {
        **os.environ,
        **stack_env(clean_db, epx_sim),
        "PAYCORE_LOG_LEVEL": "debug",
        "PAYCORE_DETAILED_LOGGING_ENABLED": "true",
        "PAYCORE_TEST_SIM_CONTROL_URL": epx_sim.control_url,
        "PYTHONPATH": str(ROOT),
    }
    code, out, err = await run(
        sys.executable, "-m", "tests.integration.security.pci_flows", str(tmp_path), env=env
    )
    assert code == 0, (out[-3000:], err[-3000:])
    return tmp_path, err


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


async def test_no_card_number_cvv_or_account_number_anywhere(flows, clean_db):
    out, stderr = flows
    raw = (out / "raw_events.jsonl").read_text(encoding="utf-8")
    stream = (out / "log_stream.jsonl").read_text(encoding="utf-8")
    responses = (out / "responses.jsonl").read_text(encoding="utf-8")
    dump = await pg_dump(clean_db)
    # bytea values (stored idempotent responses, fingerprints) are hex in the dump: search them decoded
    dump += "\n".join(
        bytes.fromhex(h).decode("utf-8", "replace") for h in re.findall(r"'\\x([0-9a-f]+)'", dump)
    )
    # the capture worked: the flows logged, the stream is the JSON one, the dump has the data
    events = [json.loads(line)["event"] for line in lines(out / "raw_events.jsonl")]
    assert "payment_method_created" in events and "ach_accounts_verified" in events
    assert all(line.startswith("{") for line in lines(out / "log_stream.jsonl") if line.strip())
    assert "payment_method_created" in stream
    assert "customer_payment_methods" in dump and "021000021" in dump  # the routing number is kept
    assert dump.count("'ach'") >= 2 and pci_flows.CHECKING[-4:] in dump  # last 4 only
    places = {"raw log events": raw, "log stream": stream, "responses": responses, "database dump": dump,
              "stderr": stderr}  # fmt: skip
    secrets = {
        "card number": pci_flows.PAN,
        "checking account number": pci_flows.CHECKING,
        "savings account number": pci_flows.SAVINGS,
        "MAC secret": "mac-secret-pci-test",
        "spaced card number": "4111 1111 1111 1111",
        "dashed card number": "4111-1111-1111-1111",
    }
    for place, text in places.items():
        for what, value in secrets.items():
            assert value not in text, f"{what} found in {place}"
        assert not CVV_NEAR.search(text), f"a CVV found in {place}"
    # nor anything that looks like a card number in the logs and answers (a 13-19 digit Luhn run;
    # the dump is searched for the exact values: NTIDs are 15-digit numbers)
    from paycore.payment_methods.model import looks_like_pan

    for place in ("raw log events", "log stream", "responses", "stderr"):
        runs = [r for r in re.findall(r"(?<!\d)\d{13,19}(?!\d)", places[place]) if looks_like_pan(r)]
        assert runs == [], f"card-number-like digits in {place}"
    # no column could even hold a CVV or a full account/card number
    con = await asyncpg.connect(clean_db)
    try:
        rows = await con.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )
        columns = {r["column_name"] for r in rows}
        stored_brics = [r["bric"] for r in await con.fetch("SELECT bric FROM customer_payment_methods")]
    finally:
        await con.close()
    risky = {c for c in columns if re.search(r"cvv|cvc|pan$|card_number|account_number|account_nbr", c)}
    assert risky == {"cvv_result"}  # the issuer's CVV match code (M/N/P), never the CVV
    # BRICs (tokens) are stored, but never logged
    data = json.loads((out / "data.json").read_text())
    for token in [data["bric"], *stored_brics]:
        assert token not in stream and token not in stderr


async def test_rotate_encryption_key_reencrypts_mac_secrets(clean_db, epx_sim):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {**os.environ, **stack_env(clean_db, epx_sim), "PAYCORE_ENCRYPTION_KEYS": f"v1:{old_key}"}
    settings = load_settings(env)
    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        merchants = [
            await directory.create_merchant(
                slug=f"rot{i}",
                name="R",
                environment="sandbox",
                mac_secret=f"rotating-mac-{i}",
                epx=MerchantKey(cust_nbr="9001", merch_nbr=str(900400 + i), dba_nbr="2", terminal_nbr="77"),
            )
            for i in range(3)
        ]
    finally:
        await db.pool.close()

    async def sealed() -> dict[str, tuple[str, str]]:
        con = await asyncpg.connect(clean_db)
        try:
            rows = await con.fetch(
                "SELECT slug, mac_secret_ciphertext, mac_secret_key_version FROM merchants"
            )
        finally:
            await con.close()
        return {r["slug"]: (r["mac_secret_ciphertext"], r["mac_secret_key_version"]) for r in rows}

    before = await sealed()
    assert {v[1] for v in before.values()} == {"v1"}
    for i, merchant in enumerate(merchants):
        assert f"rotating-mac-{i}" not in before[merchant.slug][0]  # encrypted at rest
    # prepend a new key version, run the command, then v2 alone opens every secret
    env["PAYCORE_ENCRYPTION_KEYS"] = f"v2:{new_key},v1:{old_key}"
    code, out, err = await run(sys.executable, "-m", "paycore.cli", "admin", "rotate-encryption-key", env=env)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"resealed": 3, "primary_version": "v2"}
    after = await sealed()
    only_new, only_old = Keyring(f"v2:{new_key}"), Keyring(f"v1:{old_key}")
    for i, merchant in enumerate(merchants):
        ciphertext, version = after[merchant.slug]
        assert version == "v2" and ciphertext != before[merchant.slug][0]
        assert only_new.open(Sealed(ciphertext, version)).reveal() == f"rotating-mac-{i}"
        with pytest.raises(KeyError):
            only_old.open(Sealed(ciphertext, version))
    # idempotent: nothing left under an old version
    code, out, err = await run(sys.executable, "-m", "paycore.cli", "admin", "rotate-encryption-key", env=env)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["resealed"] == 0
    # the old key can now be dropped: the directory reads every secret with v2 only
    settings = load_settings({**env, "PAYCORE_ENCRYPTION_KEYS": f"v2:{new_key}"})
    db = await create_database(settings, clean_db, min_size=1, max_size=2)
    try:
        directory = build_merchant_directory(settings, db)
        for i, merchant in enumerate(merchants):
            secret = await directory.mac_secret(merchant.id)
            assert secret is not None and secret.reveal() == f"rotating-mac-{i}"
            assert "rotating" not in repr(secret)
    finally:
        await db.pool.close()
    dump = await pg_dump(clean_db)
    assert "rotating-mac-" not in dump and old_key not in dump and new_key not in dump
