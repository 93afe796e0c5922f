"""HTTP routes for subscriptions: decode → service → encode. No SQL, no gateway calls here."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.openapi.spec import Example
from litestar.params import Parameter

from paycore.api_support import (
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_OPTIONAL,
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
from paycore.subscriptions import model, schemas
from paycore.subscriptions.service import ListQuery, SubscriptionService


def _sub_id(raw: str) -> uuid.UUID:
    parsed = parse_uuid(raw)
    if parsed is None:
        raise PaycoreError(model.SUBSCRIPTION_NOT_FOUND)
    return parsed


class SubscriptionController(Controller):
    path = "/v1/subscriptions"
    tags = ["subscriptions"]

    @post(
        "/",
        summary="Create a subscription (recurring charges of a saved payment method)",
        description=(
            "Charges `amount` to the saved payment method every `interval_count` × `interval` "
            "(day, week, month, year) from `start_date` (default now). Periods are billed in advance "
            "by the billing job, the first at the start date. Month ends are kept: started on Jan 31, "
            "monthly bills Feb 28/29, then Mar 31. Requires an `Idempotency-Key`."
        ),
        status_code=201,
        responses=problem_responses(),
        request_body_examples=[
            Example(
                value={
                    "amount": 1999,
                    "currency": "USD",
                    "interval": "month",
                    "payment_method_id": "0193a5b2-7c1e-7d3a-9f00-2b6f1c9e4d21",
                }
            )
        ],
    )
    async def create_subscription(
        self,
        request: Request[Any, Any, Any],
        data: schemas.CreateSubscription,
        principal: Principal,
        subscriptions: SubscriptionService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.SubscriptionOut]:
        idem = idempotency_for(request, data, required=True)
        assert idem is not None
        return raw_response(await subscriptions.create(principal, data, idem))

    @get("/{subscription_id:str}", summary="Get a subscription", responses=problem_responses())
    async def get_subscription(
        self, subscription_id: str, principal: Principal, subscriptions: SubscriptionService
    ) -> schemas.SubscriptionOut:
        return await subscriptions.get(principal, _sub_id(subscription_id))

    @get("/", summary="List subscriptions (newest first, cursor pagination)", responses=problem_responses())
    async def list_subscriptions(
        self,
        principal: Principal,
        subscriptions: SubscriptionService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
        starting_after: Annotated[str | None, Parameter(description="cursor: next page")] = None,
        ending_before: Annotated[str | None, Parameter(description="cursor: previous page")] = None,
        status: Annotated[str | None, Parameter(description="active|paused|past_due|canceled")] = None,
        customer_id: Annotated[str | None, Parameter(max_length=64)] = None,
        payment_method_id: Annotated[str | None, Parameter(description="a saved payment method id")] = None,
    ) -> schemas.SubscriptionList:
        if status is not None and status not in model.STATUSES:
            raise PaycoreError(errors.INVALID_PARAMETER, f"unknown status {status!r}", param="status")
        check_listing(starting_after, ending_before)
        method_id = None
        if payment_method_id is not None:
            method_id = parse_uuid(payment_method_id)
            if method_id is None:
                raise PaycoreError(
                    errors.INVALID_PARAMETER, "not a payment method id", param="payment_method_id"
                )
        query = ListQuery(
            limit=page_limit(limit),
            status=status,
            customer_id=customer_id,
            payment_method_id=method_id,
            starting_after=starting_after,
            ending_before=ending_before,
        )
        return await subscriptions.list_subscriptions(principal, query)

    @get(
        "/{subscription_id:str}/charges",
        summary="List a subscription's charge attempts (newest period and attempt first)",
        responses=problem_responses(),
    )
    async def list_charges(
        self,
        subscription_id: str,
        principal: Principal,
        subscriptions: SubscriptionService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
    ) -> schemas.ChargeList:
        return await subscriptions.list_charges(principal, _sub_id(subscription_id), page_limit(limit))

    async def _update(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        data: schemas.UpdateSubscription,
        principal: Principal,
        subscriptions: SubscriptionService,
    ) -> Response[schemas.SubscriptionOut]:
        idem = idempotency_for(request, data, required=False)
        return raw_response(await subscriptions.update(principal, _sub_id(subscription_id), data, idem))

    @patch(
        "/{subscription_id:str}",
        summary="Update a subscription (amount, interval, payment method from the next period)",
        description=(
            "Amount, interval and payment method take effect at the next period (`pending_update` "
            "shows them and when); while a period is unpaid a new payment method applies to its next "
            "attempt at once. Description and metadata change at once. `cancel_at_period_end: false` "
            "withdraws a scheduled cancellation."
        ),
        responses=problem_responses(),
    )
    async def patch_subscription(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        data: schemas.UpdateSubscription,
        principal: Principal,
        subscriptions: SubscriptionService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY_OPTIONAL] = None,
    ) -> Response[schemas.SubscriptionOut]:
        return await self._update(request, subscription_id, data, principal, subscriptions)

    @post(
        "/{subscription_id:str}/update",
        summary="Update a subscription (same as PATCH)",
        status_code=200,
        responses=problem_responses(),
    )
    async def update_subscription(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        data: schemas.UpdateSubscription,
        principal: Principal,
        subscriptions: SubscriptionService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY_OPTIONAL] = None,
    ) -> Response[schemas.SubscriptionOut]:
        return await self._update(request, subscription_id, data, principal, subscriptions)

    @post(
        "/{subscription_id:str}/pause",
        summary="Pause billing (periods that start and end while paused are not billed)",
        status_code=200,
        responses=problem_responses(),
    )
    async def pause_subscription(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        principal: Principal,
        subscriptions: SubscriptionService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY_OPTIONAL] = None,
    ) -> Response[schemas.SubscriptionOut]:
        idem = idempotency_for(request, {}, required=False)
        return raw_response(await subscriptions.pause(principal, _sub_id(subscription_id), idem))

    @post(
        "/{subscription_id:str}/resume",
        summary="Resume a paused or past-due subscription (the period in progress is billed at once)",
        status_code=200,
        responses=problem_responses(),
    )
    async def resume_subscription(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        principal: Principal,
        subscriptions: SubscriptionService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY_OPTIONAL] = None,
    ) -> Response[schemas.SubscriptionOut]:
        idem = idempotency_for(request, {}, required=False)
        return raw_response(await subscriptions.resume(principal, _sub_id(subscription_id), idem))

    @post(
        "/{subscription_id:str}/cancel",
        summary="Cancel now, or at the end of the paid period (at_period_end: true)",
        status_code=200,
        responses=problem_responses(),
    )
    async def cancel_subscription(
        self,
        request: Request[Any, Any, Any],
        subscription_id: str,
        principal: Principal,
        subscriptions: SubscriptionService,
        data: schemas.CancelSubscription | None = None,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY_OPTIONAL] = None,
    ) -> Response[schemas.SubscriptionOut]:
        body = data or schemas.CancelSubscription()
        idem = idempotency_for(request, body, required=False)
        return raw_response(await subscriptions.cancel(principal, _sub_id(subscription_id), body, idem))
