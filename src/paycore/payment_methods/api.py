"""HTTP routes for a customer's saved payment methods: decode → service → encode.

`/v1/customers/{customer_id}/payment_methods`. `customer_id` is the merchant's own reference for
the customer (1-64 of `A-Za-z0-9_.:-`), the same value as a payment's `customer_id`.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.spec import Example
from litestar.params import Parameter, QueryParameter

from paycore.api_support import IDEMPOTENCY_KEY, page_limit, problem_responses, raw_response
from paycore.idempotency import model as idem_model
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import parse_uuid
from paycore.merchants.model import Principal
from paycore.payment_methods import schemas
from paycore.payment_methods.model import PAYMENT_METHOD_NOT_FOUND
from paycore.payment_methods.service import STATES, TYPES, ListQuery, PaymentMethodService

_CUSTOMER = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CUSTOMER_PARAM = Parameter(description="The merchant's customer reference (1-64 of A-Za-z0-9_.:-)")
_STATE_CHANGE = (
    "Naturally idempotent (no `Idempotency-Key` needed). Answers the payment method; 404 when it "
    "does not exist, is deleted or belongs to another customer or merchant."
)


def _customer(raw: str) -> str:
    if _CUSTOMER.match(raw) is None:
        raise PaycoreError(
            errors.INVALID_PARAMETER, "customer_id is 1-64 of A-Za-z0-9_.:-", param="customer_id"
        )
    return raw


def _method_id(raw: str) -> uuid.UUID:
    parsed = parse_uuid(raw)
    if parsed is None:
        raise PaycoreError(PAYMENT_METHOD_NOT_FOUND)
    return parsed


class PaymentMethodController(Controller):
    path = "/v1/customers/{customer_id:str}/payment_methods"
    tags = ["payment methods"]

    @post(
        "/",
        summary="Save a card (from a gateway token) or a bank account (ACH)",
        description=(
            "**Card** (`type: card`): `token` is a Financial BRIC (e.g. of a Browser Post sale); the "
            "gateway converts it into a Storage BRIC with a $0 account verification (`CCE8`). Never "
            "send a card number (422 `token_looks_like_card_number`). The card is `verified` at once. "
            "402 `card_declined` when the verification fails.\n\n"
            "**Bank account** (`type: ach`): the routing number must pass the ABA check digit (422 "
            "`routing_number_invalid`), the account number is 4-17 digits (422 `account_number_invalid`). "
            "A $0 pre-note (`CKC0`/`CKS0`) is sent, then for checking the storage of its token (`CKC8`); "
            "the account number is used for these requests only and never stored (paycore keeps the "
            "token and the last 4 digits). The account is `pending` and becomes `verified` (usable) "
            "3 banking days later if no return arrives (a return fails it). 402 `bank_account_declined` "
            "when the gateway refuses the account.\n\n"
            "Requires an `Idempotency-Key`. 424 when the gateway did not complete (nothing saved; the "
            "same key may be retried). 409 `payment_method_limit_reached` past 100 saved methods."
        ),
        status_code=201,
        responses=problem_responses(),
        request_body_examples=[
            Example(
                summary="card",
                value={
                    "type": "card",
                    "token": "09LMQ8YKX6YTRR5TEUW1",
                    "billing": {"address": "123 Main St", "zip_code": "12345"},
                    "exp_month": 12,
                    "exp_year": 2029,
                },
            ),
            Example(
                summary="bank account",
                value={
                    "type": "ach",
                    "account_type": "checking",
                    "routing_number": "021000021",
                    "account_number": "1234567890",
                    "holder": {"first_name": "Ada", "last_name": "Lovelace"},
                    "sec_code": "WEB",
                },
            ),
        ],
    )
    async def create_payment_method(
        self,
        request: Request[Any, Any, Any],
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        data: schemas.SavePaymentMethod,
        principal: Principal,
        payment_methods: PaymentMethodService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.PaymentMethodOut]:
        customer = _customer(customer_id)
        key = idem_model.validate_key(idempotency_key, required=True)
        assert key is not None
        idem = idem_model.request_for(
            key, request.method, request.url.path, payment_methods.fingerprint_view(data)
        )
        return raw_response(await payment_methods.save(principal, customer, data, idem))

    @get(
        "/",
        summary="List a customer's payment methods (the default first, then newest)",
        description=(
            "Filters: `type` (card|ach) and `state` (active|inactive|pending|verified|failed). Deleted "
            "methods are not listed. Cursor pagination: `limit` 1-100 (default 20), `starting_after`."
        ),
        responses=problem_responses(),
    )
    async def list_payment_methods(
        self,
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        principal: Principal,
        payment_methods: PaymentMethodService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
        starting_after: Annotated[str | None, Parameter(description="cursor: next page")] = None,
        type: Annotated[str | None, Parameter(description="card|ach")] = None,
        state_filter: Annotated[
            str | None, QueryParameter(name="state", description="active|inactive|pending|verified|failed")
        ] = None,
    ) -> schemas.PaymentMethodList:
        if type is not None and type not in TYPES:
            raise PaycoreError(errors.INVALID_PARAMETER, f"unknown type {type!r}", param="type")
        if state_filter is not None and state_filter not in STATES:
            raise PaycoreError(errors.INVALID_PARAMETER, f"unknown state {state_filter!r}", param="state")
        query = ListQuery(
            limit=page_limit(limit), type=type, state=state_filter, starting_after=starting_after
        )
        return await payment_methods.list(principal, _customer(customer_id), query)

    @get(
        "/{payment_method_id:str}",
        summary="Get a payment method",
        responses=problem_responses(),
    )
    async def get_payment_method(
        self,
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        payment_method_id: str,
        principal: Principal,
        payment_methods: PaymentMethodService,
    ) -> schemas.PaymentMethodOut:
        return await payment_methods.get(principal, _customer(customer_id), _method_id(payment_method_id))

    @post(
        "/{payment_method_id:str}/default",
        summary="Make this payment method the customer's default (exactly one default per customer)",
        description=_STATE_CHANGE + " 409 `payment_method_inactive` for an inactive method.",
        status_code=200,
        responses=problem_responses(),
    )
    async def set_default_payment_method(
        self,
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        payment_method_id: str,
        principal: Principal,
        payment_methods: PaymentMethodService,
    ) -> schemas.PaymentMethodOut:
        return await payment_methods.set_default(
            principal, _customer(customer_id), _method_id(payment_method_id)
        )

    @post(
        "/{payment_method_id:str}/activate",
        summary="Activate a payment method",
        description=_STATE_CHANGE
        + " 409 `payment_method_verification_failed` for a bank account that failed verification.",
        status_code=200,
        responses=problem_responses(),
    )
    async def activate_payment_method(
        self,
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        payment_method_id: str,
        principal: Principal,
        payment_methods: PaymentMethodService,
    ) -> schemas.PaymentMethodOut:
        return await payment_methods.set_active(
            principal, _customer(customer_id), _method_id(payment_method_id), active=True
        )

    @post(
        "/{payment_method_id:str}/deactivate",
        summary="Deactivate a payment method (it cannot be charged until activated again)",
        description=_STATE_CHANGE + " Emits `payment_method.deactivated`.",
        status_code=200,
        responses=problem_responses(),
    )
    async def deactivate_payment_method(
        self,
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        payment_method_id: str,
        principal: Principal,
        payment_methods: PaymentMethodService,
    ) -> schemas.PaymentMethodOut:
        return await payment_methods.set_active(
            principal, _customer(customer_id), _method_id(payment_method_id), active=False
        )

    @delete(
        "/{payment_method_id:str}",
        summary="Delete a payment method (soft; purged for good after 90 days)",
        status_code=200,
        responses=problem_responses(),
    )
    async def delete_payment_method(
        self,
        customer_id: Annotated[str, _CUSTOMER_PARAM],
        payment_method_id: str,
        principal: Principal,
        payment_methods: PaymentMethodService,
    ) -> schemas.DeletedOut:
        return await payment_methods.delete(principal, _customer(customer_id), _method_id(payment_method_id))
