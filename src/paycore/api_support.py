"""Shared pieces of the HTTP layer: problem responses, Idempotency-Key, paging, raw responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
from litestar import Request, Response
from litestar.config.compression import CompressionConfig
from litestar.enums import CompressionEncoding
from litestar.middleware.compression import CompressionMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, Parameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from paycore.conditional import ConditionalGet, merge_vary
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


# Answers any route can give (malformed input, credentials, unknown object, body size, validation,
# rate limit, not ready, deadline): `complete_problem_responses` documents them on every operation.
GENERIC_PROBLEMS: Final = (400, 401, 403, 404, 413, 422, 429, 503, 504)
# Routes whose failures are not problem documents (probes and scrapes).
_PLAIN_ROUTES: Final = frozenset({"/healthz", "/readyz", "/health", "/metrics"})
_HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def complete_problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the RFC 9457 answers every operation can give (`GENERIC_PROBLEMS`)
    declared on each one, and the framework's own `application/json` error entries corrected to
    `application/problem+json` (what the exception handlers send). Entries a route declares itself
    with another media type (the hosted-checkout HTML pages) are kept."""
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in schema.get("paths", {}).items():
        if path in _PLAIN_ROUTES:
            continue
        for method, operation in item.items():
            if method not in _HTTP_METHODS or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for code, entry in responses.items():
                if (
                    code.isdigit()
                    and int(code) >= 400
                    and set(entry.get("content", {})) == {"application/json"}
                ):
                    entry["content"] = dict(problem)
            for code in GENERIC_PROBLEMS:
                responses.setdefault(
                    str(code), {"description": PROBLEM_RESPONSES[code].description, "content": dict(problem)}
                )
    return schema


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


# RFC 3339 date-time with an explicit offset, as the listings' `created_gte`/`created_lt` take it
RFC3339: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
CREATED_GTE = Parameter(
    pattern=RFC3339, description="RFC 3339 with an offset (2026-11-27T10:00:00Z), inclusive"
)
CREATED_LT = Parameter(
    pattern=RFC3339, description="RFC 3339 with an offset (2026-11-27T10:00:00Z), exclusive"
)


def _instant(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows `t` and `z`
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise PaycoreError(errors.INVALID_PARAMETER, f"{name} is not an RFC 3339 date-time", param=name)
    return parsed


def check_listing(
    starting_after: str | None,
    ending_before: str | None,
    *,
    created_gte: str | None = None,
    created_lt: str | None = None,
) -> tuple[datetime | None, datetime | None]:
    """The rules every listing shares: one cursor direction at a time; the created bounds are RFC
    3339 date-times with an offset (returned parsed: `created_gte`, `created_lt`)."""
    if starting_after and ending_before:
        raise PaycoreError(
            errors.INVALID_PARAMETER, "use starting_after or ending_before, not both", param="ending_before"
        )
    return _instant("created_gte", created_gte), _instant("created_lt", created_lt)


def raw_response(result: Any, *, replayed: bool = False) -> Response[Any]:
    headers = dict(getattr(result, "headers", ()))
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        content=result.body, status_code=result.status, media_type=result.content_type, headers=headers
    )


def switchable_compression(
    switch: Callable[[], bool], *, etag_max_age: int | None = None
) -> type[CompressionMiddleware]:
    """Litestar's compression middleware behind the `compression` kill switch, read per request
    (hot-toggled through the admin API): off, responses pass through uncompressed.

    With `etag_max_age` set, the conditional-GET layer (API-9, `paycore.conditional`) runs directly
    inside it on every route: it tags the uncompressed body, so gzip and identity answers share
    one `ETag`, and a 304 has no body left to compress. The `Vary` value it sets is kept free of
    duplicates when compression appends `Accept-Encoding`."""

    class SwitchableCompression(CompressionMiddleware):
        def __init__(self, app: ASGIApp, config: CompressionConfig) -> None:
            if etag_max_age is not None:
                app = ConditionalGet(app, max_age=etag_max_age)  # type: ignore[assignment]
            super().__init__(app, config)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if switch():
                await super().__call__(scope, receive, send)
            else:
                await self.app(scope, receive, send)

        def create_compression_send_wrapper(
            self,
            send: Send,
            compression_encoding: Literal[CompressionEncoding.BROTLI, CompressionEncoding.GZIP] | str,
            scope: Scope,
        ) -> Send:
            async def single_vary(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", ()))
                    varies = [v for n, v in headers if n.lower() == b"vary"]
                    if len(varies) > 1 or (varies and b"," in varies[0]):
                        headers = [h for h in headers if h[0].lower() != b"vary"]
                        headers.append((b"vary", merge_vary(varies)))
                        message = {**message, "headers": headers}
                await send(message)

            return super().create_compression_send_wrapper(single_vary, compression_encoding, scope)

    return SwitchableCompression
