"""The `paycore` command: one package, several roles (design.md §1)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paycore", description="paycore payment service")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", help="the whole stack on embedded defaults (DB, simulator, API, worker)")
    serve = sub.add_parser("serve", help="the HTTP API")
    serve.add_argument("--workers", type=int, default=None, help="override PAYCORE_WORKERS")
    serve.add_argument("--port", type=int, default=None, help="override PAYCORE_HTTP_PORT")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser(
        "worker", help="background jobs: webhooks, disputes, reconciliation, retention, billing, ACH"
    )
    sim = sub.add_parser("epx-sim", help="the EPX gateway simulator")
    from paycore.epx_sim import cli as sim_cli

    sim_cli.add_arguments(sim)
    sub.add_parser("reconcile", help="resolve pending/unknown payments against the gateway report")
    admin = sub.add_parser("admin", help="merchants, API keys, key rotation")
    from paycore.merchants import admin_cli

    admin_cli.add_arguments(admin)
    bench = sub.add_parser("bench", help="load benchmark: starts what it needs, writes a JSON report")
    from paycore import bench as bench_mod

    bench_mod.add_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from paycore.config import ConfigError

    try:
        if args.command == "epx-sim":
            from paycore.epx_sim import cli as sim_cli

            return sim_cli.run(args)
        if args.command == "bench":
            from paycore import bench as bench_mod

            return bench_mod.run(args)
        from paycore import commands

        return commands.dispatch(args)
    except ConfigError as exc:
        print(f"paycore: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
