"""HTTP routes for payments: decode → service → encode. No SQL, no gateway calls here."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import Example
from litestar.params import Parameter

from paycore.api_support import (
    CREATED_GTE,
    CREATED_LT,
    IDEMPOTENCY_KEY,
    NO_COMPRESSION,
    check_listing,
    idempotency_for,
    page_limit,
    problem_responses,
    raw_response,
)
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import parse_uuid
from paycore.merchants.model import Principal
from paycore.payments import schemas
from paycore.payments.service import ListQuery, PaymentService

_STATUSES = frozenset({"pending", "approved", "declined", "failed", "unknown"})


def _payment_id(raw: str) -> uuid.UUID:
    parsed = parse_uuid(raw)
    if parsed is None:
        raise PaycoreError(errors.PAYMENT_NOT_FOUND)
    return parsed


class PaymentController(Controller):
    path = "/v1/payments"
    tags = ["payments"]

    @post(
        "/",
        summary="Create a payment (sale, or authorization with capture=false)",
        description=(
            "Charges a card given by its EPX token (BRIC). Requires an `Idempotency-Key`. Answers "
            "201 approved, 402 declined (problem details with `decline_category` and `gateway_code`), "
            "202 when the gateway's answer is unknown (resolved by reconciliation), 424 when the "
            "gateway is unavailable (nothing was charged; the key may be reused)."
        ),
        status_code=201,
        opt=NO_COMPRESSION,
        responses=problem_responses(schemas.PaymentOut),
        request_body_examples=[
            Example(value={"amount": 1050, "currency": "USD", "token": "09LMQ8YKX6YTRR5TEUW1"})
        ],
    )
    async def create_payment(
        self,
        request: Request[Any, Any, Any],
        data: schemas.CreatePayment,
        principal: Principal,
        payments: PaymentService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.PaymentOut]:
        idem = idempotency_for(request, data, required=True)
        assert idem is not None
        return raw_response(await payments.create(principal, data, idem))

    @post(
        "/batch-get",
        summary="Get up to 100 payments at once (one query); unknown or foreign ids are `not_found`",
        status_code=200,
        responses=problem_responses(),
    )
    async def batch_get_payments(
        self, data: schemas.BatchGet, principal: Principal, payments: PaymentService
    ) -> schemas.BatchGetResult:
        return await payments.batch_get(principal, data.ids)

    @get("/{payment_id:str}", summary="Get a payment with its captures, refunds and voids")
    async def get_payment(
        self, payment_id: str, principal: Principal, payments: PaymentService
    ) -> schemas.PaymentOut:
        return await payments.get(principal, _payment_id(payment_id))

    @get("/", summary="List payments (newest first, cursor pagination)")
    async def list_payments(
        self,
        principal: Principal,
        payments: PaymentService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
        starting_after: Annotated[str | None, Parameter(description="cursor: next page")] = None,
        ending_before: Annotated[str | None, Parameter(description="cursor: previous page")] = None,
        status: Annotated[
            str | None, Parameter(description="pending|approved|declined|failed|unknown")
        ] = None,
        customer_id: Annotated[str | None, Parameter(max_length=64)] = None,
        created_gte: Annotated[str | None, CREATED_GTE] = None,
        created_lt: Annotated[str | None, CREATED_LT] = None,
    ) -> schemas.PaymentList:
        if status is not None and status not in _STATUSES:
            raise PaycoreError(errors.INVALID_PARAMETER, f"unknown status {status!r}", param="status")
        created_from, created_until = check_listing(
            starting_after, ending_before, created_gte=created_gte, created_lt=created_lt
        )
        query = ListQuery(
            limit=page_limit(limit),
            status=status,
            customer_id=customer_id,
            created_gte=created_from,
            created_lt=created_until,
            starting_after=starting_after,
            ending_before=ending_before,
        )
        return await payments.list(principal, query)

    @post(
        "/{payment_id:str}/capture",
        summary="Capture an authorization (all, or part; several partial captures allowed)",
        status_code=201,
        opt=NO_COMPRESSION,
        responses=problem_responses(schemas.OperationOut),
    )
    async def capture_payment(
        self,
        request: Request[Any, Any, Any],
        payment_id: str,
        principal: Principal,
        payments: PaymentService,
        data: schemas.CapturePayment | None = None,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.OperationOut]:
        body = data or schemas.CapturePayment()
        idem = idempotency_for(request, body, required=True)
        assert idem is not None
        return raw_response(await payments.capture(principal, _payment_id(payment_id), body, idem))

    @post(
        "/{payment_id:str}/refunds",
        summary="Refund a payment (all that remains, or part; several partial refunds allowed)",
        status_code=201,
        opt=NO_COMPRESSION,
        responses=problem_responses(schemas.OperationOut),
    )
    async def refund_payment(
        self,
        request: Request[Any, Any, Any],
        payment_id: str,
        principal: Principal,
        payments: PaymentService,
        data: schemas.RefundPayment | None = None,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.OperationOut]:
        body = data or schemas.RefundPayment()
        idem = idempotency_for(request, body, required=True)
        assert idem is not None
        return raw_response(await payments.refund(principal, _payment_id(payment_id), body, idem))

    @post(
        "/{payment_id:str}/void",
        summary="Void a payment (an authorization with nothing captured, an unsettled sale) or one capture",
        status_code=200,
        opt=NO_COMPRESSION,
        responses=problem_responses(schemas.OperationOut),
    )
    async def void_payment(
        self,
        request: Request[Any, Any, Any],
        payment_id: str,
        principal: Principal,
        payments: PaymentService,
        data: schemas.VoidPayment | None = None,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.OperationOut]:
        body = data or schemas.VoidPayment()
        idem = idempotency_for(request, body, required=True)
        assert idem is not None
        return raw_response(await payments.void(principal, _payment_id(payment_id), body, idem))
