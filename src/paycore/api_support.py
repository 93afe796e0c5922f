"""Shared pieces of the HTTP layer: problem responses, Idempotency-Key, paging, raw responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.middleware.compression import CompressionMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from litestar.types import Receive, Scope, Send

from paycore.idempotency import model as idem_model
from paycore.idempotency.model import IdempotencyRequest
from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError

# Route `opt` key: the response is a single small object, not worth the compression wrapper.
SKIP_COMPRESSION = "skip_compression"
NO_COMPRESSION: dict[str, object] = {SKIP_COMPRESSION: True}


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, plus paycore's stable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    param: str | None = None
    request_id: str | None = None


def _problem_spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem, description=description, media_type="application/problem+json"
    )


PROBLEM_RESPONSES: dict[int, ResponseSpec] = {
    400: _problem_spec("Malformed request, missing or invalid Idempotency-Key, bad cursor"),
    401: _problem_spec("Missing or invalid API key"),
    402: _problem_spec("Declined by the gateway: `decline_category`, `gateway_code`, `payment`"),
    403: _problem_spec("Not allowed for this merchant"),
    404: _problem_spec("Not found (also another merchant's object)"),
    409: _problem_spec("State conflict, or the same Idempotency-Key still in flight"),
    413: _problem_spec("Body too large"),
    422: _problem_spec("Semantically invalid, or the Idempotency-Key reused with another body"),
    424: _problem_spec("The gateway failed or is unavailable (circuit open); nothing was charged"),
    429: _problem_spec("Rate limited (see Retry-After)"),
    503: _problem_spec("Shutting down, not ready, or the database is unavailable (see Retry-After)"),
    504: _problem_spec("The request deadline was exceeded"),
}


def problem_responses(accepted: type | None = None) -> dict[int, ResponseSpec]:
    """The problem responses of a route, plus 202 (outcome unknown) for money-moving routes."""
    out = dict(PROBLEM_RESPONSES)
    if accepted is not None:
        out[202] = ResponseSpec(
            data_container=accepted,
            description="Accepted: the gateway's outcome is unknown; reconciliation resolves it",
        )
    return out


# Declared on each handler as `idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None` so that
# OpenAPI lists it; the handler checks it with `idempotency_for`, so a missing required key is
# paycore's own 400 `idempotency_key_missing`, not a framework validation error.
IDEMPOTENCY_KEY = HeaderParameter(
    name="Idempotency-Key",
    description=(
        "Required. 1-255 visible ASCII characters, unique per operation. A retry with the same key and "
        "body replays the first answer (`Idempotent-Replayed: true`)."
    ),
    required=True,
)
IDEMPOTENCY_KEY_OPTIONAL = HeaderParameter(
    name="Idempotency-Key",
    description="Optional: a retry with the same key and body replays the first answer",
    required=False,
)


def idempotency_for(
    request: Request[Any, Any, Any], body: Any, *, required: bool
) -> IdempotencyRequest | None:
    key = idem_model.validate_key(request.headers.get("idempotency-key"), required=required)
    if key is None:
        return None
    return idem_model.request_for(key, request.method, request.url.path, msgspec.to_builtins(body))


def page_limit(limit: int | None, *, default: int = 20, maximum: int = 100) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise PaycoreError(errors.INVALID_PARAMETER, f"limit must be between 1 and {maximum}", param="limit")
    return limit


def check_listing(
    starting_after: str | None,
    ending_before: str | None,
    *,
    created_gte: datetime | None = None,
    created_lt: datetime | None = None,
) -> None:
    """The rules every listing shares: one cursor direction at a time, aware created bounds."""
    if starting_after and ending_before:
        raise PaycoreError(
            errors.INVALID_PARAMETER, "use starting_after or ending_before, not both", param="ending_before"
        )
    for name, value in (("created_gte", created_gte), ("created_lt", created_lt)):
        if value is not None and value.tzinfo is None:
            raise PaycoreError(errors.INVALID_PARAMETER, f"{name} needs a time zone", param=name)


def raw_response(result: Any, *, replayed: bool = False) -> Response[Any]:
    headers = dict(getattr(result, "headers", ()))
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        content=result.body, status_code=result.status, media_type=result.content_type, headers=headers
    )


def switchable_compression(switch: Callable[[], bool]) -> type[CompressionMiddleware]:
    """Litestar's compression middleware behind the `compression` kill switch, read per request
    (hot-toggled through the admin API): off, responses pass through uncompressed."""

    class SwitchableCompression(CompressionMiddleware):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if switch():
                await super().__call__(scope, receive, send)
            else:
                await self.app(scope, receive, send)

    return SwitchableCompression
