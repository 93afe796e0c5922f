"""`paycore epx-sim`: arguments, safety checks and the process (three listeners on one event loop).

At start it prints one JSON line to stdout, e.g.
`{"event":"epx_sim_ready","server_post_url":"http://127.0.0.1:8090/",...}`; port 0 picks a free port
and the line tells which one was chosen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import signal
import ssl
import sys
from datetime import datetime
from typing import IO, Final

from aiohttp import web

from paycore.epx_sim.app import Simulator, build_keyexch_app, build_main_app
from paycore.epx_sim.control import Control, build_control_app
from paycore.epx_sim.engine import Engine, parse_cutoff
from paycore.epx_sim.faults import FaultSet
from paycore.epx_sim.model import DEFAULT_MAC, Merchant, Settings

# Hosts of the real gateway and reporting API: the simulator never runs under these names.
PRODUCTION_HOST_MARKERS: Final = ("epxnow.com", "north.com", "epx.com", "northamericanbancard.com")


class UnsafeConfiguration(ValueError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("listeners")
    g.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    g.add_argument("--public-host", default=None, help="host name used in the printed URLs (default: --host)")
    g.add_argument(
        "--port", type=int, default=8090, help="Server Post, Browser Post, reporting, North (0: free)"
    )
    g.add_argument("--keyexch-port", type=int, default=8091, help="Key Exchange port (0: free)")
    g.add_argument("--control-port", type=int, default=8092, help="control API port (0: free)")
    g.add_argument(
        "--tls-cert", default=None, help="PEM certificate: serve HTTPS on the main and Key Exchange ports"
    )
    g.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    g.add_argument(
        "--tls-self-signed",
        default=None,
        metavar="DIR",
        help="generate a throw-away test CA and server certificate in DIR and serve HTTPS (ca.pem is the CA)",
    )
    b = parser.add_argument_group("behaviour")
    b.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency added before every answer")
    b.add_argument("--seed", type=int, default=1, help="RNG seed: BRICs, auth codes, fault sampling")
    b.add_argument("--duplicate-mode", choices=("reject", "replay"), default="reject")
    b.add_argument("--storage-code", choices=("00", "85"), default="00", help="AUTH_RESP of CCE8/CKC8/CCE0")
    b.add_argument(
        "--allow-any-pan", action="store_true", help="accept any Luhn-valid PAN, not only the §9 cards"
    )
    b.add_argument(
        "--batch-cutoff", default="00:00", help="daily batch close HH:MM on the simulated UTC clock, or none"
    )
    b.add_argument(
        "--auth-lapse-days", type=int, default=30, help="days after which an auth can no longer be captured"
    )
    b.add_argument("--single-capture", action="store_true", help="one capture per auth (default: several)")
    b.add_argument("--response-format", choices=("xml", "kv", "detail"), default="xml")
    b.add_argument(
        "--strict", action="store_true", help="require LOCAL_DATE/TIME, INDUSTRY_TYPE, NTID on RB, ..."
    )
    b.add_argument(
        "--default-mac",
        default=os.environ.get("PAYCORE_EPX_SIM_MAC", DEFAULT_MAC),
        help="MAC of the preloaded sandbox merchant 9001/900300/2/77 (a dev placeholder by default)",
    )
    b.add_argument(
        "--merchant",
        action="append",
        default=[],
        metavar="CUST:MERCH:DBA:TERM:MAC",
        help="register another merchant (repeatable)",
    )
    b.add_argument(
        "--ach-return-delay-days", type=int, default=2, help="banking days from settlement to return"
    )
    b.add_argument("--tac-lifetime-s", type=float, default=900.0, help="TAC lifetime (default 15 min)")
    b.add_argument("--tac-multi-use", action="store_true", help="a TAC may be used more than once")
    b.add_argument(
        "--redirect-mode", choices=("post", "303"), default="post", help="Browser Post redirect style"
    )
    b.add_argument("--north-page-cap", type=int, default=None, help="at most N disputes per North answer")
    b.add_argument(
        "--rate-limit-rps", type=float, default=None, help="mimic the sandbox limit (about 2 req/s)"
    )
    b.add_argument("--rate-limit-mode", choices=("queue", "503"), default="queue")
    b.add_argument(
        "--hang-max-s", type=float, default=600.0, help="how long a hanging fault holds a connection"
    )
    b.add_argument(
        "--clock-start", default=None, help="start the simulated clock at this ISO-8601 UTC instant"
    )
    b.add_argument("--frozen-clock", action="store_true", help="the simulated clock only moves when told to")
    o = parser.add_argument_group("output")
    o.add_argument("--ledger-file", default=None, help="append the masked ledger as JSON lines to this file")
    o.add_argument("--ledger-max", type=int, default=1_000_000, help="entries kept in memory")
    o.add_argument("--access-log", action="store_true", help="log every request to stderr (off by default)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        duplicate_mode=args.duplicate_mode,
        storage_code=args.storage_code,
        allow_any_pan=args.allow_any_pan,
        batch_cutoff=parse_cutoff(args.batch_cutoff),
        auth_lapse_days=args.auth_lapse_days,
        single_capture=args.single_capture,
        response_format=args.response_format,
        strict=args.strict,
        ach_return_delay_days=args.ach_return_delay_days,
        tac_lifetime_s=args.tac_lifetime_s,
        tac_single_use=not args.tac_multi_use,
        redirect_mode=args.redirect_mode,
        north_page_cap=args.north_page_cap,
        latency_ms=args.latency_ms,
        hang_max_s=args.hang_max_s,
        rate_limit_rps=args.rate_limit_rps,
        rate_limit_mode=args.rate_limit_mode,
    )


def check_safe(args: argparse.Namespace) -> None:
    """Refuse to run as, or next to, a production gateway."""
    if os.environ.get("PAYCORE_ENV", "").strip().lower() == "production":
        raise UnsafeConfiguration("PAYCORE_ENV=production: the EPX simulator never runs in production")
    for host in (args.host, args.public_host or ""):
        lowered = host.lower()
        if any(lowered == m or lowered.endswith("." + m) for m in PRODUCTION_HOST_MARKERS):
            raise UnsafeConfiguration(f"{host!r} is a production gateway host")


def parse_merchant(text: str) -> Merchant:
    parts = text.split(":", 4)
    if len(parts) != 5 or not all(p.isdigit() for p in parts[:4]) or not parts[4]:
        raise ValueError(f"--merchant must be CUST:MERCH:DBA:TERM:MAC, got {text.split(':')[:4]}")
    return Merchant((parts[0], parts[1], parts[2], parts[3]), parts[4])


def parse_instant(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError("--clock-start needs a time zone, e.g. 2026-03-02T10:00:00Z")
    return at


def run(args: argparse.Namespace) -> int:
    try:
        check_safe(args)
        settings = settings_from_args(args)
        merchants = [parse_merchant(m) for m in args.merchant]
        if args.clock_start:
            args.clock_start = parse_instant(args.clock_start)
    except (UnsafeConfiguration, ValueError) as exc:
        print(f"paycore epx-sim: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, settings, merchants))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"paycore epx-sim: {exc}", file=sys.stderr)
        return 1
    return 0


def _ssl_context(args: argparse.Namespace) -> tuple[ssl.SSLContext | None, str | None]:
    cert, key, ca_file = args.tls_cert, args.tls_key, None
    if args.tls_self_signed:
        from paycore.epx_sim.tls import write_test_pki

        hosts = sorted({args.public_host or args.host, "127.0.0.1", "localhost"})
        ca_file, cert, key = write_test_pki(args.tls_self_signed, hosts)
    if not cert:
        return None, None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, ca_file


def _open_ledger(path: str) -> IO[str]:
    """The masked ledger file (JSON lines); opened once at start, before the loop serves."""
    return open(path, "a", encoding="utf-8")  # closed at shutdown


async def _serve(args: argparse.Namespace, settings: Settings, merchants: list[Merchant]) -> None:
    engine = Engine(
        copy.copy(settings), seed=args.seed, default_mac=args.default_mac, ledger_max=args.ledger_max
    )
    engine.base_merchants.extend(merchants)
    for m in merchants:
        engine.add_merchant(m)
    engine.clock_frozen = args.frozen_clock
    engine.clock_start = args.clock_start
    engine.reset_clock()
    engine.last_close = engine.clock.now()
    ledger_file = _open_ledger(args.ledger_file) if args.ledger_file else None
    sim = Simulator(engine, FaultSet(args.seed), ledger_file=ledger_file)
    ssl_ctx, ca_file = _ssl_context(args)
    log_kwargs: dict[str, object] = {} if args.access_log else {"access_log": None}

    main_runner = web.AppRunner(build_main_app(sim), handler_cancellation=True, **log_kwargs)  # type: ignore[arg-type]
    kx_runner = web.AppRunner(build_keyexch_app(sim), handler_cancellation=True, **log_kwargs)  # type: ignore[arg-type]
    await main_runner.setup()
    await kx_runner.setup()
    main_site = web.TCPSite(
        main_runner, args.host, args.port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True
    )
    await main_site.start()
    main_port = int(main_runner.addresses[0][1])
    kx_site = web.TCPSite(kx_runner, args.host, args.keyexch_port, ssl_context=ssl_ctx, reuse_address=True)
    await kx_site.start()
    kx_port = int(kx_runner.addresses[0][1])

    sites: dict[str, web.TCPSite] = {"main": main_site}

    async def toggle_main(up: bool) -> None:
        if up and not sim.main_listener_up:
            site = web.TCPSite(
                main_runner, args.host, main_port, ssl_context=ssl_ctx, backlog=1024, reuse_address=True
            )
            await site.start()
            sites["main"] = site
            sim.main_listener_up = True
        elif not up and sim.main_listener_up:
            await sites["main"].stop()
            sim.main_listener_up = False

    control = Control(sim, copy.copy(settings), listener=toggle_main)
    ctl_runner = web.AppRunner(build_control_app(control), handler_cancellation=True, **log_kwargs)  # type: ignore[arg-type]
    await ctl_runner.setup()
    ctl_site = web.TCPSite(ctl_runner, args.host, args.control_port, reuse_address=True)
    await ctl_site.start()
    ctl_port = int(ctl_runner.addresses[0][1])

    host = args.public_host or ("127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host)
    scheme = "https" if ssl_ctx is not None else "http"
    main_base = f"{scheme}://{host}:{main_port}"
    ready = {
        "event": "epx_sim_ready",
        "server_post_url": f"{main_base}/",
        "key_exchange_url": f"{scheme}://{host}:{kx_port}/",
        "browser_post_url": f"{main_base}/browserpost/",
        "reporting_url": main_base,
        "north_url": main_base,
        "control_url": f"http://{host}:{ctl_port}",
        "ca_file": ca_file,
        "pid": os.getpid(),
        "seed": args.seed,
    }
    print(json.dumps(ready), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    async def flush_ledger() -> None:
        while ledger_file is not None:
            await asyncio.sleep(1.0)
            ledger_file.flush()

    flusher = asyncio.create_task(flush_ledger())
    try:
        await stop.wait()
    finally:
        flusher.cancel()
        for runner in (ctl_runner, kx_runner, main_runner):
            await runner.cleanup()
        if ledger_file is not None:
            ledger_file.close()
