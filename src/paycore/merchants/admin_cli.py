"""`paycore admin …`: merchants, API keys and key rotation from the command line (audit-logged)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from paycore.config import load_settings
from paycore.gateway.port import MerchantKey


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="admin_command", required=True)
    cm = sub.add_parser("create-merchant", help="create a merchant with its EPX 4-part key")
    cm.add_argument("--slug", required=True)
    cm.add_argument("--name", required=True)
    cm.add_argument("--environment", choices=["sandbox", "production"], default="sandbox")
    cm.add_argument("--cust-nbr", required=True)
    cm.add_argument("--merch-nbr", required=True)
    cm.add_argument("--dba-nbr", required=True)
    cm.add_argument("--terminal-nbr", required=True)
    cm.add_argument("--mac-secret-env", help="name of an environment variable holding the EPX MAC secret")
    cm.add_argument("--single-capture", action="store_true", help="one capture per authorization")
    cm.add_argument("--timezone", default="UTC")
    cm.add_argument("--return-url", action="append", default=[], help="allowed shopper return URL")
    ck = sub.add_parser("create-api-key", help="create an API key (shown once)")
    ck.add_argument("--merchant", required=True, help="merchant id or slug")
    ck.add_argument("--mode", choices=["test", "live"], default=None)
    ck.add_argument("--name", default="")
    rk = sub.add_parser("revoke-api-key", help="revoke an API key by id")
    rk.add_argument("key_id")
    lk = sub.add_parser("list-api-keys", help="list a merchant's API keys (never the secrets)")
    lk.add_argument("--merchant", required=True)
    sub.add_parser("list-merchants", help="list merchants")
    sub.add_parser("rotate-encryption-key", help="re-encrypt secrets at rest under the primary key")


async def _run(args: argparse.Namespace) -> int:
    from paycore.bootstrap import build_merchant_directory
    from paycore.platform.db.pool import create_database

    settings = load_settings()
    if settings.database_url is None:
        print("paycore admin: DATABASE_URL is required", file=sys.stderr)
        return 2
    db = await create_database(
        settings, settings.database_url, application_name="paycore-admin", min_size=1, max_size=2
    )
    try:
        directory = build_merchant_directory(settings, db)

        async def merchant_id(ref: str) -> uuid.UUID:
            try:
                return uuid.UUID(ref)
            except ValueError:
                found = await directory.get_by_slug(ref)
                if found is None:
                    raise SystemExit(f"paycore admin: no merchant {ref!r}") from None
                return found.id

        cmd = args.admin_command
        if cmd == "create-merchant":
            import os

            mac = os.environ.get(args.mac_secret_env) if args.mac_secret_env else None
            merchant = await directory.create_merchant(
                slug=args.slug,
                name=args.name,
                environment=args.environment,
                epx=MerchantKey(
                    cust_nbr=args.cust_nbr,
                    merch_nbr=args.merch_nbr,
                    dba_nbr=args.dba_nbr,
                    terminal_nbr=args.terminal_nbr,
                ),
                mac_secret=mac,
                multi_capture=False if args.single_capture else None,
                timezone=args.timezone,
                return_urls=tuple(args.return_url),
            )
            print(
                json.dumps(
                    {"id": str(merchant.id), "slug": merchant.slug, "environment": merchant.environment}
                )
            )
        elif cmd == "create-api-key":
            key = await directory.create_api_key(
                await merchant_id(args.merchant), mode=args.mode, name=args.name
            )
            print(json.dumps({"id": str(key.id), "api_key": key.secret, "note": "shown once; store it now"}))
        elif cmd == "revoke-api-key":
            ok = await directory.revoke_api_key(uuid.UUID(args.key_id))
            print(json.dumps({"revoked": ok}))
            return 0 if ok else 1
        elif cmd == "list-api-keys":
            keys = await directory.list_api_keys(await merchant_id(args.merchant))
            print(json.dumps(keys, default=str, indent=2))
        elif cmd == "list-merchants":
            merchants = await directory.list_all()
            print(
                json.dumps(
                    [
                        {
                            "id": str(mm.id),
                            "slug": mm.slug,
                            "name": mm.name,
                            "environment": mm.environment,
                            "status": mm.status,
                        }
                        for mm in merchants
                    ],
                    indent=2,
                )
            )
        elif cmd == "rotate-encryption-key":
            count = await directory.rotate_encryption_key()
            print(json.dumps({"resealed": count, "primary_version": directory.keyring.primary_version}))
        return 0
    finally:
        await db.pool.close()


def run(args: argparse.Namespace) -> int:
    from paycore.kernel.errors import PaycoreError

    try:
        return asyncio.run(_run(args))
    except (ValueError, PaycoreError) as exc:
        print(f"paycore admin: {exc}", file=sys.stderr)
        return 1
