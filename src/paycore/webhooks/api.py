"""HTTP routes for webhook endpoints and events: decode → service → encode."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import Parameter

from paycore.api_support import CREATED_GTE, CREATED_LT, check_listing, page_limit, problem_responses
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import parse_uuid
from paycore.merchants.model import Principal
from paycore.webhooks import schemas
from paycore.webhooks.model import EVENT_TYPES
from paycore.webhooks.service import ENDPOINT_NOT_FOUND, EVENT_NOT_FOUND, ListEvents, WebhookService


def _id(raw: str, spec: errors.ProblemSpec) -> uuid.UUID:
    parsed = parse_uuid(raw)
    if parsed is None:
        raise PaycoreError(spec)
    return parsed


class WebhookEndpointController(Controller):
    path = "/v1/webhook_endpoints"
    tags = ["webhooks"]

    @post(
        "/",
        summary="Register a webhook endpoint (the answer carries its signing secret, shown once)",
        description=(
            "HTTPS URL and the event types to receive (or `*`). Deliveries are signed per Standard "
            "Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with the `whsec_…` "
            "secret. Private, loopback and link-local targets are refused."
        ),
        status_code=201,
        responses=problem_responses(),
    )
    async def create_endpoint(
        self, data: schemas.CreateEndpoint, principal: Principal, webhooks: WebhookService
    ) -> schemas.EndpointOut:
        return await webhooks.create_endpoint(principal, data)

    @get(
        "/", summary="List webhook endpoints (newest first, cursor pagination)", responses=problem_responses()
    )
    async def list_endpoints(
        self,
        principal: Principal,
        webhooks: WebhookService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
        starting_after: Annotated[str | None, Parameter(description="cursor: next page")] = None,
        ending_before: Annotated[str | None, Parameter(description="cursor: previous page")] = None,
    ) -> schemas.EndpointList:
        check_listing(starting_after, ending_before)
        return await webhooks.list_endpoints(principal, page_limit(limit), starting_after, ending_before)

    @get("/{endpoint_id:str}", summary="Get a webhook endpoint", responses=problem_responses())
    async def get_endpoint(
        self, endpoint_id: str, principal: Principal, webhooks: WebhookService
    ) -> schemas.EndpointOut:
        return await webhooks.get_endpoint(principal, _id(endpoint_id, ENDPOINT_NOT_FOUND))

    @patch(
        "/{endpoint_id:str}",
        summary="Update a webhook endpoint (URL, event types, description, metadata, disabled)",
        responses=problem_responses(),
    )
    async def update_endpoint(
        self, endpoint_id: str, data: schemas.UpdateEndpoint, principal: Principal, webhooks: WebhookService
    ) -> schemas.EndpointOut:
        return await webhooks.update_endpoint(principal, _id(endpoint_id, ENDPOINT_NOT_FOUND), data)

    @delete(
        "/{endpoint_id:str}",
        summary="Delete a webhook endpoint (its pending deliveries are dropped)",
        status_code=204,
        responses=problem_responses(),
    )
    async def delete_endpoint(self, endpoint_id: str, principal: Principal, webhooks: WebhookService) -> None:
        await webhooks.delete_endpoint(principal, _id(endpoint_id, ENDPOINT_NOT_FOUND))

    @post(
        "/{endpoint_id:str}/rotate_secret",
        summary="Rotate the signing secret; the old one keeps signing during the overlap window",
        description=(
            "Answers the endpoint with its new `secret`. Until `previous_secret_expires_at` every "
            "delivery carries two signatures (`v1,<new> v1,<old>`), so receivers can switch at leisure."
        ),
        status_code=200,
        responses=problem_responses(),
    )
    async def rotate_secret(
        self,
        endpoint_id: str,
        principal: Principal,
        webhooks: WebhookService,
        data: schemas.RotateSecret | None = None,
    ) -> schemas.EndpointOut:
        return await webhooks.rotate_secret(
            principal, _id(endpoint_id, ENDPOINT_NOT_FOUND), data or schemas.RotateSecret()
        )


class EventController(Controller):
    path = "/v1/events"
    tags = ["webhooks"]

    @get(
        "/",
        summary="List events of the last 30 days (newest first, cursor pagination)",
        responses=problem_responses(),
    )
    async def list_events(
        self,
        principal: Principal,
        webhooks: WebhookService,
        limit: Annotated[int | None, Parameter(description="1-100, default 20")] = None,
        starting_after: Annotated[str | None, Parameter(description="cursor: next page")] = None,
        ending_before: Annotated[str | None, Parameter(description="cursor: previous page")] = None,
        type: Annotated[str | None, Parameter(description="an event type, e.g. payment.succeeded")] = None,
        created_gte: Annotated[str | None, CREATED_GTE] = None,
        created_lt: Annotated[str | None, CREATED_LT] = None,
    ) -> schemas.EventList:
        created_from, created_until = check_listing(
            starting_after, ending_before, created_gte=created_gte, created_lt=created_lt
        )
        if type is not None and type not in EVENT_TYPES:
            raise PaycoreError(errors.INVALID_PARAMETER, f"unknown event type {type!r}", param="type")
        return await webhooks.list_events(
            principal,
            ListEvents(
                limit=page_limit(limit),
                event_type=type,
                created_gte=created_from,
                created_lt=created_until,
                starting_after=starting_after,
                ending_before=ending_before,
            ),
        )

    @get(
        "/{event_id:str}",
        summary="Get an event with its deliveries and their attempt log",
        responses=problem_responses(),
    )
    async def get_event(
        self, event_id: str, principal: Principal, webhooks: WebhookService
    ) -> schemas.EventDetail:
        return await webhooks.get_event(principal, _id(event_id, EVENT_NOT_FOUND))

    @post(
        "/{event_id:str}/resend",
        summary="Send an event again (to every subscribed enabled endpoint, or to one)",
        status_code=202,
        responses=problem_responses(),
    )
    async def resend_event(
        self,
        event_id: str,
        principal: Principal,
        webhooks: WebhookService,
        data: schemas.ResendEvent | None = None,
    ) -> schemas.ResendOut:
        return await webhooks.resend(principal, _id(event_id, EVENT_NOT_FOUND), data or schemas.ResendEvent())
