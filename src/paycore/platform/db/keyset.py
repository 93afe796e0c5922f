"""Keyset pagination fragments shared by every listing (API-7): newest first on
`(created_at DESC, id DESC)`, served by the `(merchant_id, [filter,] created_at DESC, id DESC)` indexes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Keyset:
    where: str  # " AND …" fragments (possibly empty)
    order: str  # the ORDER BY expression
    reverse: bool  # an `ending_before` page is read oldest first: reverse its rows


def keyset(
    args: list[Any],
    *,
    equals: Sequence[tuple[str, Any]] = (),
    created_gte: datetime | None = None,
    created_lt: datetime | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
    before: tuple[datetime, uuid.UUID] | None = None,
    alias: str = "",
) -> Keyset:
    """Append the listing's parameters to `args` and return its WHERE fragments and order.

    `equals` are (column, value) filters; a None value is no filter. Column names come from the
    repository's code, never from input.
    """
    prefix = f"{alias}." if alias else ""
    where: list[str] = []

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in equals:
        if value is not None:
            where.append(f"AND {prefix}{column} = {param(value)}")
    if created_gte is not None:
        where.append(f"AND {prefix}created_at >= {param(created_gte)}")
    if created_lt is not None:
        where.append(f"AND {prefix}created_at < {param(created_lt)}")
    key = f"({prefix}created_at, {prefix}id)"
    if after is not None:
        where.append(f"AND {key} < ({param(after[0])}, {param(after[1])})")
    elif before is not None:
        where.append(f"AND {key} > ({param(before[0])}, {param(before[1])})")
        return Keyset(" ".join(where), f"{prefix}created_at ASC, {prefix}id ASC", True)
    return Keyset(" ".join(where), f"{prefix}created_at DESC, {prefix}id DESC", False)


def listing_name(base: str, equals: Sequence[tuple[str, Any]]) -> str:
    """A static query name per filter combination (the metric label): `payments.list.status`."""
    return base + "".join(f".{column}" for column, value in equals if value is not None)
