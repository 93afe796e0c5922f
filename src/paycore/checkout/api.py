"""HTTP routes for hosted checkout: decode → service → encode.

* `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`,
  `POST /v1/checkout/sessions/{id}/form` — merchant API key.
* `GET|POST /v1/epx/browser-post/callback` — public: EPX sends the shopper's browser here. It answers
  a 303 to the session's allow-listed return/decline URL, or an HTML error page; never JSON.
* `/demo/checkout`, `/demo/return`, `/demo/decline` — development and test environments only.

The public routes are limited per client IP (SEC-4).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl

import msgspec
from litestar import Controller, Request, Response, get, post, route
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Parameter

from paycore.api_support import IDEMPOTENCY_KEY, idempotency_for, problem_responses, raw_response
from paycore.checkout import model, pages, schemas
from paycore.checkout.service import SESSION_NOT_FOUND, CheckoutService
from paycore.idempotency import model as idem_model
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import parse_uuid
from paycore.merchants.model import Principal
from paycore.platform.context import current_request_id
from paycore.platform.observability import metrics as m
from paycore.platform.ratelimit import RateLimits, retry_after_header

CALLBACK_PATH: Final = "/v1/epx/browser-post/callback"
DEMO_SLUG: Final = "demo"
DEMO_ENVIRONMENTS: Final = frozenset({"development", "test"})
_FORM_TYPE: Final = "application/x-www-form-urlencoded"


def provide_checkout(request: Request[Any, Any, Any]) -> CheckoutService:
    container = request.app.state.get("container")
    checkout: CheckoutService | None = getattr(container, "checkout", None) if container else None
    if checkout is None:
        raise PaycoreError(errors.NOT_READY)
    return checkout


async def rate_limited(request: Request[Any, Any, Any], route_name: str) -> Response[str] | None:
    """None when the client may proceed, else the 429 page (SEC-4): the API's per-IP limit
    (`PAYCORE_IP_RATE_LIMIT_*`, memory or Redis, the `rate_limit` kill switch), answered as text."""
    limits: RateLimits | None = request.app.state.get("rate_limits")
    if limits is None:
        return None
    decision = await limits.ip_decision(request.scope)
    if decision.allowed:
        return None
    m.IP_RATE_LIMITED.labels(route_name).inc()
    return Response(
        "Too many requests. Please wait a moment and try again.\n",
        status_code=429,
        media_type="text/plain",
        headers={"Retry-After": retry_after_header(decision.retry_after), **pages.SECURITY_HEADERS},
    )


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        body,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={**pages.SECURITY_HEADERS, **(headers or {})},
    )


def _session_id(raw: str) -> uuid.UUID:
    parsed = parse_uuid(raw)
    if parsed is None:
        raise PaycoreError(SESSION_NOT_FOUND)
    return parsed


_FORM_EXAMPLE = {
    "mode": "sale",
    "amount": 1050,
    "currency": "USD",
    "customer_id": "cus_42",
    "return_url": "https://shop.example/checkout/return",
    "decline_url": "https://shop.example/checkout/declined",
}


class CheckoutController(Controller):
    path = "/v1/checkout/sessions"
    tags = ["checkout"]
    dependencies = {"checkout": Provide(provide_checkout, sync_to_thread=False)}

    @post(
        "/",
        summary="Create a hosted-checkout session (EPX Browser Post form for a sale, auth or card save)",
        description=(
            "Creates a pending Browser Post transaction and answers the form to render: POST `fields` "
            "(plus the shopper's card fields, typed into the page and sent by the shopper's browser "
            "straight to the gateway) to `action`. `fields.TAC` is a one-time key valid until "
            "`expires_at`. `return_url` and `decline_url` (default: `return_url`) must be among the "
            "merchant's registered return URLs; after the payment the shopper is sent there with "
            "`payment_id` and `status` appended. `save` stores the card for `customer_id` (no amount). "
            "Requires an `Idempotency-Key`. 424 when the gateway's Key Exchange fails (the key may "
            "then be reused)."
        ),
        status_code=201,
        responses=problem_responses(),
        request_body_examples=[Example(value=_FORM_EXAMPLE)],
    )
    async def create_session(
        self,
        request: Request[Any, Any, Any],
        data: schemas.CreateCheckoutSession,
        principal: Principal,
        checkout: CheckoutService,
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.CheckoutForm]:
        idem = idempotency_for(request, data, required=True)
        assert idem is not None
        return raw_response(await checkout.create(principal, data, idem))

    @get("/{session_id:str}", summary="Get a hosted-checkout session and its payment's status")
    async def get_session(
        self, session_id: str, principal: Principal, checkout: CheckoutService
    ) -> schemas.CheckoutSessionOut:
        return await checkout.get(principal, _session_id(session_id))

    @post(
        "/{session_id:str}/form",
        summary="Get the session's form again: same TRAN_NBR, a fresh TAC (while the payment is pending)",
        description=(
            "For a page reload or a form whose TAC expired. 409 `checkout_session_not_open` once the "
            "payment was completed, failed or expired."
        ),
        status_code=200,
        responses=problem_responses(),
    )
    async def new_form(
        self, session_id: str, principal: Principal, checkout: CheckoutService
    ) -> Response[schemas.CheckoutForm]:
        body = await checkout.new_form(principal, _session_id(session_id))
        return Response(content=body, media_type="application/json")  # type: ignore[arg-type]


_CALLBACK_RESPONSES: Final = {
    303: ResponseSpec(
        data_container=None,
        description=(
            "Sent on to the session's registered return URL (approved; `unknown` while being confirmed) "
            "or decline URL, with `payment_id` and `status` appended. Replays get the same redirect."
        ),
    ),
    400: ResponseSpec(
        data_container=str,
        generate_examples=False,
        media_type="text/html",
        description="Refused (malformed, mismatched, unsigned or unknown): an HTML page; nothing recorded",
    ),
    429: ResponseSpec(
        data_container=str,
        generate_examples=False,
        media_type="text/plain",
        description="Rate limited per IP",
    ),
}


@route(
    CALLBACK_PATH,
    http_method=["GET", "POST"],
    summary="EPX Browser Post result (the shopper's browser, sent by EPX)",
    description=(
        "Public (no API key). Query `txn` (paycore's transaction id) and `m` (merchant id) come from the "
        "`REDIRECT_URL` bound into the TAC; the result "
        "arrives as an auto-submitted form (POST) or as query parameters (GET). Verified (formats, "
        "transaction, amount, TRAN_NBR, USER_DATA, MAC) and recorded at most once."
    ),
    tags=["checkout"],
    security=[{}],
    status_code=303,
    responses=_CALLBACK_RESPONSES,
    dependencies={"checkout": Provide(provide_checkout, sync_to_thread=False)},
    response_headers=[
        ResponseHeader(name="Location", description="the merchant's page", documentation_only=True)
    ],
)
async def browser_post_callback(request: Request[Any, Any, Any], checkout: CheckoutService) -> Response[str]:
    limited = await rate_limited(request, CALLBACK_PATH)
    if limited is not None:
        return limited
    query = parse_qsl(
        request.scope.get("query_string", b"").decode("utf-8", "replace"), keep_blank_values=True
    )
    body: list[tuple[str, str]] = []
    if request.method == "POST":
        raw = await request.body()
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if raw:
            if content_type not in {_FORM_TYPE, ""}:
                return _html(pages.callback_error(current_request_id()), 400)
            try:
                body = parse_qsl(
                    raw.decode("utf-8", "strict"),
                    keep_blank_values=True,
                    strict_parsing=False,
                    max_num_fields=model.MAX_PARAMS + 1,
                )
            except (UnicodeDecodeError, ValueError):
                return _html(pages.callback_error(current_request_id()), 400)
    answer = await checkout.handle_callback(query, body)
    if answer.location is not None:
        return Response("", status_code=303, headers={"Location": answer.location, **pages.SECURITY_HEADERS})
    return _html(pages.callback_error(current_request_id()), answer.status)


# --- the development demo ------------------------------------------------------------------------
class DemoController(Controller):
    """A tiny merchant site for trying hosted checkout locally (`paycore up`). Never in production."""

    path = "/demo"
    tags = ["demo (development only)"]
    dependencies = {"checkout": Provide(provide_checkout, sync_to_thread=False)}

    @get(
        "/checkout",
        summary="Demo checkout page (development/test only): a card form posting straight to EPX",
        description=(
            "`amount` in cents (default 1050), `mode` sale|auth, `entry=hosted` for the gateway's own page."
        ),
        security=[{}],
        media_type="text/html",
    )
    async def demo_checkout(
        self,
        request: Request[Any, Any, Any],
        checkout: CheckoutService,
        amount: int = Parameter(default=1050, ge=1, le=99_999_999),
        mode: str = Parameter(default="sale", pattern="^(sale|auth)$"),
        entry: str = Parameter(default="direct", pattern="^(direct|hosted)$"),
    ) -> Response[str]:
        limited = await rate_limited(request, "/demo/checkout")
        if limited is not None:
            return limited
        principal, base = await _demo_principal(request)
        urls = set(principal.merchant.return_urls)
        return_url = f"{base}/demo/return"
        decline_url = f"{base}/demo/decline" if f"{base}/demo/decline" in urls else return_url
        cmd = schemas.CreateCheckoutSession(
            mode=mode,  # type: ignore[arg-type]
            amount=amount,
            currency="USD",
            return_url=return_url,
            decline_url=decline_url,
            description="paycore demo checkout",
        )
        idem = idem_model.request_for(uuid.uuid4().hex, "POST", "/demo/checkout", {"amount": amount})
        created = await checkout.create(principal, cmd, idem)
        form = msgspec.json.decode(created.body, type=schemas.CheckoutForm)
        html = pages.demo_checkout(
            action=form.action,
            fields=form.fields,
            amount=amount,
            currency="USD",
            mode=mode,
            merchant_name=principal.merchant.name,
            hosted_entry=entry == "hosted",
            session_id=str(form.session_id),
            payment_id=str(form.payment_id),
            expires_at=form.expires_at.isoformat(timespec="seconds"),
        )
        return _html(html)

    @get("/return", summary="Demo return page (development/test only)", security=[{}], media_type="text/html")
    async def demo_return(
        self, request: Request[Any, Any, Any], checkout: CheckoutService, payment_id: str = ""
    ) -> Response[str]:
        return await _demo_result(request, checkout, payment_id, declined=False)

    @get(
        "/decline", summary="Demo decline page (development/test only)", security=[{}], media_type="text/html"
    )
    async def demo_decline(
        self, request: Request[Any, Any, Any], checkout: CheckoutService, payment_id: str = ""
    ) -> Response[str]:
        return await _demo_result(request, checkout, payment_id, declined=True)


async def _demo_principal(request: Request[Any, Any, Any]) -> tuple[Principal, str]:
    container = request.app.state.get("container")
    if container is None:
        raise PaycoreError(errors.NOT_READY)
    merchant = await container.merchants.get_by_slug(DEMO_SLUG)
    if merchant is None or not merchant.active:
        raise PaycoreError(errors.NOT_FOUND, "No demo merchant: run `paycore up`")
    base: str = container.settings.callback_base_url.rstrip("/")
    return Principal(merchant=merchant, mode="test"), base


async def _demo_result(
    request: Request[Any, Any, Any], checkout: CheckoutService, payment_id: str, *, declined: bool
) -> Response[str]:
    limited = await rate_limited(request, "/demo/result")
    if limited is not None:
        return limited
    principal, _ = await _demo_principal(request)
    parsed = parse_uuid(payment_id)
    session = await checkout.payment_status(principal.merchant.id, parsed) if parsed else None
    if session is None:
        raise PaycoreError(errors.NOT_FOUND, "No such demo payment")
    txn = session.txn
    card = " ".join(
        part for part in (txn.card_brand or "", f"…{txn.card_last4}" if txn.card_last4 else "") if part
    )
    html = pages.demo_result(
        declined=declined,
        status=txn.status,
        payment_id=str(txn.id),
        amount=txn.amount,
        currency=txn.currency.strip(),
        card=card,
        again="/demo/checkout",
    )
    return _html(html)


def route_handlers(env: str) -> list[Any]:
    """The checkout routes of this environment (the demo only in development and test)."""
    handlers: list[Any] = [CheckoutController, browser_post_callback]
    if env in DEMO_ENVIRONMENTS:
        handlers.append(DemoController)
    return handlers
