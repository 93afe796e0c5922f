"""`paycore admin …`: merchants, API keys, service clients and grants, key rotation (audit-logged)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from paycore.config import load_settings
from paycore.gateway.port import MerchantKey
from paycore.kernel import codec

if TYPE_CHECKING:
    from paycore.merchants.service import MerchantDirectory


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
    from paycore.admin import cli as admin_tokens_cli

    admin_tokens_cli.add_arguments(sub)  # create-admin-token, revoke-admin-token, list-admin-tokens
    _add_service_auth_arguments(sub)


def _add_service_auth_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Service-to-service credentials: client services (RS256 public keys), grants, revoked tokens."""
    sc = sub.add_parser("create-service-client", help="register a client service and its RSA public key")
    sc.add_argument("--issuer", required=True, help="the `iss` its tokens carry (never reused)")
    sc.add_argument("--name", required=True)
    sc.add_argument("--public-key-file", required=True, help="PEM file of the RSA (>= 2048 bits) public key")
    sub.add_parser("list-service-clients", help="list client services (issuer, key fingerprint, status)")
    rc = sub.add_parser("revoke-service-client", help="refuse every token of a client service")
    rc.add_argument("client", help="client id or issuer")
    gr = sub.add_parser("grant", help="allow a client service to act for a merchant")
    gr.add_argument("--client", required=True, help="client id or issuer")
    gr.add_argument("--merchant", required=True, help="merchant id or slug")
    rg = sub.add_parser("revoke-grant", help="withdraw a client service's grant for a merchant")
    rg.add_argument("--client", required=True, help="client id or issuer")
    rg.add_argument("--merchant", required=True, help="merchant id or slug")
    lg = sub.add_parser("list-grants", help="list grants (optionally of one client or merchant)")
    lg.add_argument("--client", help="client id or issuer")
    lg.add_argument("--merchant", help="merchant id or slug")
    rj = sub.add_parser("revoke-jti", help="refuse one service token by its `jti` until it expires")
    rj.add_argument("--client", required=True, help="client id or issuer")
    rj.add_argument("--jti", required=True)
    rj.add_argument(
        "--expires-at",
        required=True,
        help="the token's `exp`: RFC 3339 (2026-11-27T10:00:00Z) or epoch seconds",
    )


def _parse_expiry(text: str) -> datetime:
    if text.isdigit():
        return datetime.fromtimestamp(int(text), tz=UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "--expires-at: RFC 3339 with a zone (2026-11-27T10:00:00Z) or epoch seconds"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("--expires-at needs a time zone (e.g. 2026-11-27T10:00:00Z)")
    return parsed


async def _merchant_id(directory: MerchantDirectory, ref: str) -> uuid.UUID:
    """A merchant named by id or slug; an unknown one ends the command."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        found = await directory.get_by_slug(ref)
        if found is None:
            raise SystemExit(f"paycore admin: no merchant {ref!r}") from None
        return found.id


async def _run_service_auth(args: argparse.Namespace, directory: MerchantDirectory) -> int | None:
    """The service-credential commands; None when `args` is not one of them."""
    cmd = args.admin_command

    async def client_id(ref: str) -> uuid.UUID:
        found = await directory.find_service_client(ref)
        if found is None:
            raise SystemExit(f"paycore admin: no service client {ref!r}")
        return found.id

    async def merchant_id(ref: str) -> uuid.UUID:
        return await _merchant_id(directory, ref)

    if cmd == "create-service-client":
        try:
            pem = await asyncio.to_thread(Path(args.public_key_file).read_text, encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--public-key-file: {exc.strerror or exc}") from None
        client = await directory.create_service_client(issuer=args.issuer, name=args.name, public_key_pem=pem)
        print(
            codec.line(
                {
                    "id": str(client.id),
                    "issuer": client.issuer,
                    "name": client.name,
                    "key_fingerprint": client.key_fingerprint,
                }
            )
        )
    elif cmd == "list-service-clients":
        print(codec.pretty(await directory.list_service_clients()))
    elif cmd == "revoke-service-client":
        ok = await directory.revoke_service_client(await client_id(args.client))
        print(codec.line({"revoked": ok}))
        return 0 if ok else 1
    elif cmd == "grant":
        grant_id = await directory.grant(await client_id(args.client), await merchant_id(args.merchant))
        print(codec.line({"id": str(grant_id), "status": "active"}))
    elif cmd == "revoke-grant":
        ok = await directory.revoke_grant(await client_id(args.client), await merchant_id(args.merchant))
        print(codec.line({"revoked": ok}))
        return 0 if ok else 1
    elif cmd == "list-grants":
        grants = await directory.list_grants(
            client_id=await client_id(args.client) if args.client else None,
            merchant_id=await merchant_id(args.merchant) if args.merchant else None,
        )
        print(codec.pretty(grants))
    elif cmd == "revoke-jti":
        expires_at = _parse_expiry(args.expires_at)
        await directory.revoke_jti(await client_id(args.client), args.jti, expires_at)
        print(codec.line({"revoked": True, "jti": args.jti, "expires_at": expires_at.isoformat()}))
    else:
        return None
    return 0


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
            return await _merchant_id(directory, ref)

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
                codec.line(
                    {"id": str(merchant.id), "slug": merchant.slug, "environment": merchant.environment}
                )
            )
        elif cmd == "create-api-key":
            key = await directory.create_api_key(
                await merchant_id(args.merchant), mode=args.mode, name=args.name
            )
            print(codec.line({"id": str(key.id), "api_key": key.secret, "note": "shown once; store it now"}))
        elif cmd == "revoke-api-key":
            ok = await directory.revoke_api_key(uuid.UUID(args.key_id))
            print(codec.line({"revoked": ok}))
            return 0 if ok else 1
        elif cmd == "list-api-keys":
            keys = await directory.list_api_keys(await merchant_id(args.merchant))
            print(codec.pretty(keys))
        elif cmd == "list-merchants":
            merchants = await directory.list_all()
            print(
                codec.pretty(
                    [
                        {
                            "id": str(mm.id),
                            "slug": mm.slug,
                            "name": mm.name,
                            "environment": mm.environment,
                            "status": mm.status,
                        }
                        for mm in merchants
                    ]
                )
            )
        elif cmd == "rotate-encryption-key":
            count = await directory.rotate_encryption_key()
            print(codec.line({"resealed": count, "primary_version": directory.keyring.primary_version}))
        else:
            handled = await _run_service_auth(args, directory)
            if handled is not None:
                return handled
        return 0
    finally:
        await db.pool.close()


def run(args: argparse.Namespace) -> int:
    from paycore.admin import cli as admin_tokens_cli
    from paycore.kernel.errors import PaycoreError

    if args.admin_command in admin_tokens_cli.COMMANDS:
        return admin_tokens_cli.run(args)

    try:
        return asyncio.run(_run(args))
    except (ValueError, PaycoreError) as exc:
        print(f"paycore admin: {exc}", file=sys.stderr)
        return 1
