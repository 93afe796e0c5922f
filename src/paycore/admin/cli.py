"""`paycore admin create-admin-token | revoke-admin-token | list-admin-tokens` (audit-logged)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Final

from paycore.config import load_settings
from paycore.kernel import codec

COMMANDS: Final = frozenset({"create-admin-token", "revoke-admin-token", "list-admin-tokens"})


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ct = sub.add_parser("create-admin-token", help="create an admin API token ak_… (shown once)")
    ct.add_argument("--name", required=True, help="who or what holds it (recorded as the audit actor)")
    rt = sub.add_parser("revoke-admin-token", help="revoke an admin API token by id")
    rt.add_argument("token_id")
    sub.add_parser("list-admin-tokens", help="list admin API tokens (never the secrets)")


def _out(value: object) -> None:
    sys.stdout.write((codec.pretty(value) if isinstance(value, list) else codec.line(value)) + "\n")


async def _run(args: argparse.Namespace) -> int:
    from paycore.admin.repository import AdminRepository
    from paycore.admin.service import AdminTokens
    from paycore.platform.db.pool import create_database

    settings = load_settings()
    if settings.database_url is None:
        sys.stderr.write("paycore admin: DATABASE_URL is required\n")
        return 2
    db = await create_database(
        settings, settings.database_url, application_name="paycore-admin", min_size=1, max_size=2
    )
    try:
        tokens = AdminTokens(db, AdminRepository(db), token_secret=settings.api_key_secret)
        cmd = args.admin_command
        if cmd == "create-admin-token":
            new = await tokens.create_token(args.name)
            _out(
                {
                    "id": str(new.id),
                    "name": new.name,
                    "admin_token": new.secret,
                    "note": "shown once; store it now",
                }
            )
        elif cmd == "revoke-admin-token":
            try:
                token_id = uuid.UUID(args.token_id)
            except ValueError:
                raise ValueError(f"not a token id: {args.token_id!r}") from None
            ok = await tokens.revoke_token(token_id)
            _out({"revoked": ok})
            return 0 if ok else 1
        else:
            rows = await tokens.list_tokens()
            _out(
                [
                    {
                        "id": str(r.id),
                        "name": r.name,
                        "prefix": r.prefix,
                        "created_at": r.created_at.isoformat(),
                        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                        "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
                    }
                    for r in rows
                ]
            )
        return 0
    finally:
        await db.pool.close()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except ValueError as exc:
        sys.stderr.write(f"paycore admin: {exc}\n")
        return 1
