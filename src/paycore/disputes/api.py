"""HTTP routes for disputes (read only: merchants respond in North's portal)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter

from paycore.api_support import CREATED_GTE, CREATED_LT, check_listing, page_limit, problem_responses
from paycore.disputes import schemas
from paycore.disputes.model import STATUSES
from paycore.disputes.service import DISPUTE_NOT_FOUND, DisputeService, ListDisputes
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import parse_uuid
from paycore.merchants.model import Principal

_STATUSES = frozenset(STATUSES.values())


class DisputeController(Controller):
    path = "/v1/disputes"
    tags = ["disputes"]

    @get("/{dispute_id:str}", summary="Get a dispute (chargeback)", responses=problem_responses())
    async def get_dispute(
        self, dispute_id: str, principal: Principal, disputes: DisputeService
    ) -> schemas.DisputeOut:
        parsed = parse_uuid(dispute_id)
        if parsed is None:
            raise PaycoreError(DISPUTE_NOT_FOUND)
        return await disputes.get(principal, parsed)

    @get("/", summary="List disputes (newest first, cursor pagination)", responses=problem_responses())
    async def list_disputes(
        self,
        principal: Principal,
        disputes: DisputeService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
        starting_after: Annotated[str | None, Parameter(description="cursor: next page")] = None,
        ending_before: Annotated[str | None, Parameter(description="cursor: previous page")] = None,
        status: Annotated[
            str | None, Parameter(description="new|pending|responded|won|lost|accepted")
        ] = None,
        payment_id: Annotated[uuid.UUID | None, Parameter(description="the disputed payment")] = None,
        created_gte: Annotated[str | None, CREATED_GTE] = None,
        created_lt: Annotated[str | None, CREATED_LT] = None,
    ) -> schemas.DisputeList:
        if status is not None and status not in _STATUSES:
            raise PaycoreError(errors.INVALID_PARAMETER, f"unknown status {status!r}", param="status")
        created_from, created_until = check_listing(
            starting_after, ending_before, created_gte=created_gte, created_lt=created_lt
        )
        return await disputes.list(
            principal,
            ListDisputes(
                limit=page_limit(limit),
                status=status,
                payment_id=payment_id,
                created_gte=created_from,
                created_lt=created_until,
                starting_after=starting_after,
                ending_before=ending_before,
            ),
        )
