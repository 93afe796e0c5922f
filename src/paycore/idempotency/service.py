"""Idempotency for any money- or state-changing POST (conventions.md), for every capability.

Two shapes of use:

* **one transaction** (no gateway call): `run_once(merchant_id, idem, work)` claims the key, runs
  `work(con)` and stores its response, all in one database transaction. If `work` raises, nothing
  is stored and the key stays free.
* **two phases** (a gateway call in the middle, like payments): inside your first transaction call
  `claim(con, merchant_id, idem, resource_id)`; after the gateway answers, inside the outcome
  transaction call `complete(con, merchant_id, idem.key, status, body, resource_id)` (or
  `release(...)` when the request provably did nothing, so the caller may retry with the same key).

A replay raises `Replay(status, body)`, which the API renders with `Idempotent-Replayed: true`;
a reused key raises 422 `idempotency_key_reused`; a key still running raises 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from paycore.idempotency.model import IdempotencyRequest, Replay, decide
from paycore.idempotency.repository import IdempotencyRepository
from paycore.platform.db import Connection, Database
from paycore.platform.observability import metrics as m


@dataclass(frozen=True, slots=True)
class ServiceResponse:
    """What the API answers: a status and an encoded body, stored as is for idempotent replays."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class Idempotency:
    def __init__(self, db: Database, repository: IdempotencyRepository) -> None:
        self.db = db
        self.repo = repository

    async def claim(
        self, con: Connection, merchant_id: uuid.UUID, idem: IdempotencyRequest, resource_id: uuid.UUID | None
    ) -> None:
        """Own the key inside `con`'s transaction, or raise Replay / 422 / 409."""
        if await self.repo.claim(con, merchant_id, idem, resource_id):
            m.IDEMPOTENCY_OUTCOMES.labels("new").inc()
            return
        stored = await self.repo.get(con, merchant_id, idem.key)
        if stored is None:  # released between our insert attempt and the read
            from paycore.kernel import errors
            from paycore.kernel.errors import PaycoreError

            raise PaycoreError(errors.IDEMPOTENCY_IN_FLIGHT, headers={"Retry-After": "1"})
        decided = decide(stored, idem)
        m.IDEMPOTENCY_OUTCOMES.labels("replayed").inc()
        assert decided.response_status is not None and decided.response_body is not None
        raise Replay(decided.response_status, decided.response_body)

    async def complete(
        self,
        con: Connection,
        merchant_id: uuid.UUID,
        key: str,
        response: ServiceResponse,
        resource_id: uuid.UUID | None = None,
    ) -> None:
        await self.repo.complete(con, merchant_id, key, response.status, response.body, resource_id)

    async def release(self, con: Connection | None, merchant_id: uuid.UUID, key: str) -> None:
        await self.repo.release(con, merchant_id, key)

    async def run_once(
        self,
        merchant_id: uuid.UUID,
        idem: IdempotencyRequest | None,
        work: Callable[[Connection], Awaitable[ServiceResponse]],
        *,
        resource_id: uuid.UUID | None = None,
    ) -> ServiceResponse:
        """Claim, work and store in one transaction (or just work when there is no key)."""
        async with self.db.transaction() as con:
            if idem is not None:
                await self.claim(con, merchant_id, idem, resource_id)
            response = await work(con)
            if idem is not None:
                await self.complete(con, merchant_id, idem.key, response, resource_id)
            return response
