"""`paycore up`: the whole stack on embedded defaults, for a newcomer's first payment.

1. PostgreSQL: `DATABASE_URL` when set, otherwise an embedded server (the `pgserver` wheel) in
   `PAYCORE_DATA_DIR/pgdata`.
2. Migrations.
3. The EPX simulator (unless `PAYCORE_EPX_SERVER_POST_URL` points elsewhere).
4. The API (`paycore serve`) and the background worker (when present), as child processes.
5. A demo merchant with a test API key and a demo card token, printed with a curl that pays.
Ctrl-C (or SIGTERM) stops everything in reverse order, each process gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from paycore.kernel import codec

DEMO_SLUG = "demo"
DEMO_EPX = {"cust_nbr": "9001", "merch_nbr": "900300", "dba_nbr": "2", "terminal_nbr": "77"}
DEMO_MAC = "demo-mac-secret"  # a placeholder for the local simulator only, not an EPX secret
# A public sandbox test card (epx-protocol.md §9), used only to mint a demo token in the simulator.
DEMO_TEST_CARD = ("4111111111111111", "123")


def _log(message: str) -> None:
    print(f"paycore up: {message}", flush=True)


def _start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    import warnings

    warnings.filterwarnings("ignore", module="platformdirs")
    import pgserver  # type: ignore[attr-defined,unused-ignore]

    pgdata = data_dir / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(pgdata), cleanup_mode="stop")  # type: ignore[attr-defined]
    return server.get_uri(), server


def _start_simulator(env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paycore.cli",
            "epx-sim",
            "--port",
            "0",
            "--keyexch-port",
            "0",
            "--control-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("the EPX simulator exited during start-up")
            continue
        with contextlib.suppress(ValueError):
            event = codec.decode(line)
            if isinstance(event, dict) and event.get("event") == "epx_sim_ready":
                return proc, {k: str(v) for k, v in event.items()}
    proc.kill()
    raise RuntimeError("the EPX simulator did not become ready")


async def _seed(env: dict[str, str]) -> tuple[str, str | None]:
    """The demo merchant, its API key (kept in the data folder, dev only) and a demo token."""
    from paycore.bootstrap import build_merchant_directory
    from paycore.config import load_settings
    from paycore.gateway.port import MerchantKey
    from paycore.merchants import model as merchant_model
    from paycore.platform.db.pool import create_database

    settings = load_settings(env)
    assert settings.database_url is not None
    db = await create_database(
        settings, settings.database_url, application_name="paycore-up", min_size=1, max_size=2
    )
    try:
        directory = build_merchant_directory(settings, db)
        merchant = await directory.get_by_slug(DEMO_SLUG)
        if merchant is None:
            merchant = await directory.create_merchant(
                slug=DEMO_SLUG,
                name="Demo Merchant",
                environment="sandbox",
                epx=MerchantKey(**DEMO_EPX),
                mac_secret=env.get("PAYCORE_DEMO_MAC_SECRET", DEMO_MAC),
                return_urls=(
                    f"{settings.callback_base_url}/demo/return",
                    f"{settings.callback_base_url}/demo/decline",
                ),
                actor="paycore-up",
            )
        key_file = Path(settings.data_dir) / "demo-api-key"
        api_key = key_file.read_text().strip() if key_file.exists() else ""
        if not api_key or merchant_model.key_mode(api_key) is None or await _key_invalid(directory, api_key):
            api_key = (
                await directory.create_api_key(merchant.id, name="paycore up demo", actor="paycore-up")
            ).secret
            key_file.write_text(api_key + "\n")
            key_file.chmod(0o600)
        token = await _demo_token(settings, merchant.epx)
        return api_key, token
    finally:
        await db.pool.close()


async def _key_invalid(directory: Any, api_key: str) -> bool:
    from paycore.kernel.errors import PaycoreError

    try:
        await directory.authenticate(api_key)
    except PaycoreError:
        return True
    return False


async def _demo_token(settings: Any, epx: Any) -> str | None:
    """Mint a Storage BRIC for the public test card with a CCE8 against the simulator."""
    import uuid

    from paycore.gateway.epx import wire
    from paycore.gateway.epx.client import EpxServerPostClient
    from paycore.kernel.clock import now_utc
    from paycore.platform import http
    from paycore.platform.resilience.breaker import GATEWAY_BRIC_STORAGE, BreakerRegistry

    session = http.create_session(http.gateway_profile(settings))
    try:
        client = EpxServerPostClient.from_settings(
            session, BreakerRegistry.from_settings(settings)[GATEWAY_BRIC_STORAGE], settings
        )
        pan, cvv = DEMO_TEST_CARD
        request = wire.for_card_storage(
            merchant=epx,
            tran_nbr=wire.tran_nbr_for(uuid.uuid4()),
            at=now_utc(),
            card=wire.KeyedCard(pan=pan, exp_yymm=f"{(now_utc().year + 3) % 100:02d}12", cvv2=cvv),
            billing=wire.Billing(address="123 Main St", zip_code="12345"),
        )
        result = await client.process(request)
        return result.response.auth_guid if result.response else None
    finally:
        await session.close()


def run() -> int:
    env = dict(os.environ)
    env.setdefault("PAYCORE_ENV", "development")
    data_dir = Path(env.setdefault("PAYCORE_DATA_DIR", ".paycore")).resolve()
    env["PAYCORE_DATA_DIR"] = str(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = env.setdefault("PAYCORE_HTTP_PORT", "8080")
    children: list[tuple[str, subprocess.Popen[Any]]] = []
    pg_server = None
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if not env.get("DATABASE_URL"):
            _log(f"starting embedded PostgreSQL in {data_dir / 'pgdata'}")
            dsn, pg_server = _start_embedded_postgres(data_dir)
            env["DATABASE_URL"] = dsn
        _log("applying migrations")
        subprocess.run([sys.executable, "-m", "paycore.cli", "migrate"], env=env, check=True)
        if not env.get("PAYCORE_EPX_SERVER_POST_URL"):
            _log("starting the EPX simulator")
            # the simulator's preloaded merchant gets the demo merchant's MAC (Key Exchange identity)
            env.setdefault("PAYCORE_EPX_SIM_MAC", env.get("PAYCORE_DEMO_MAC_SECRET", DEMO_MAC))
            sim, urls = _start_simulator(env)
            children.append(("epx-sim", sim))
            env["PAYCORE_EPX_SERVER_POST_URL"] = urls["server_post_url"]
            env.setdefault("PAYCORE_EPX_KEY_EXCHANGE_URL", urls.get("key_exchange_url", ""))
            env.setdefault("PAYCORE_EPX_BROWSER_POST_URL", urls.get("browser_post_url", ""))
            env.setdefault("PAYCORE_EPX_REPORTING_URL", urls.get("reporting_url", ""))
            env.setdefault("PAYCORE_NORTH_API_URL", urls.get("reporting_url", ""))
        api_key, token = asyncio.run(_seed(env))
        _log(f"starting the API on http://127.0.0.1:{port}")
        children.append(("api", subprocess.Popen([sys.executable, "-m", "paycore.cli", "serve"], env=env)))
        if _has_worker():
            children.append(
                ("worker", subprocess.Popen([sys.executable, "-m", "paycore.cli", "worker"], env=env))
            )
        _wait_ready(int(port))
        _banner(port, api_key, token)
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    _log(f"{name} exited with {proc.returncode}; stopping")
                    stopping = True
            time.sleep(0.5)
    finally:
        for name, proc in reversed(children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    _log(f"{name} did not stop in time; killing it")
                    proc.kill()
        if pg_server is not None:
            _log("stopping embedded PostgreSQL")
            pg_server.cleanup()
        _log("stopped")
    return 0


def _has_worker() -> bool:
    import importlib.util

    return importlib.util.find_spec("paycore.worker") is not None


def _wait_ready(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError("the API did not become ready")


def _banner(port: str, api_key: str, token: str | None) -> None:
    token_text = token or "<BRIC>"
    print(
        f"""
paycore is up.
  API           http://127.0.0.1:{port}/v1   docs: http://127.0.0.1:{port}/docs
  demo API key  {api_key}
  demo token    {token_text}   (a Storage BRIC for the sandbox test card 4111…1111)

Take a payment:

  curl -s http://127.0.0.1:{port}/v1/payments \\
    -H "Authorization: Bearer {api_key}" \\
    -H "Idempotency-Key: $(uuidgen || date +%s%N)" \\
    -H "Content-Type: application/json" \\
    -d '{{"amount": 1050, "currency": "USD", "token": "{token_text}"}}'

Or pay in a browser (hosted checkout, EPX Browser Post): http://127.0.0.1:{port}/demo/checkout
  test cards 4111111111111111 (approved) and 4000000000000002 (declined), expiry YYMM, CVV 123.

Ctrl-C stops everything.
""",
        flush=True,
    )
