"""Problem codes: every error paycore answers has a stable `code`, an HTTP status and a title.

The API renders these as RFC 9457 problem details (`application/problem+json`). Codes are part of
the public contract: never rename one, only add.
"""

from __future__ import annotations

from typing import Any, Final

PROBLEM_BASE_URI: Final = "https://paycore.dev/problems/"


class ProblemSpec:
    __slots__ = ("code", "status", "title")

    def __init__(self, code: str, status: int, title: str) -> None:
        self.code = code
        self.status = status
        self.title = title


_CATALOGUE: dict[str, ProblemSpec] = {}


def _spec(code: str, status: int, title: str) -> ProblemSpec:
    spec = ProblemSpec(code, status, title)
    _CATALOGUE[code] = spec
    return spec


# 400
MALFORMED_REQUEST = _spec("malformed_request", 400, "The request is malformed")
IDEMPOTENCY_KEY_MISSING = _spec("idempotency_key_missing", 400, "An Idempotency-Key header is required")
IDEMPOTENCY_KEY_INVALID = _spec("idempotency_key_invalid", 400, "The Idempotency-Key header is invalid")
INVALID_CURSOR = _spec("invalid_cursor", 400, "The pagination cursor is invalid")
INVALID_PARAMETER = _spec("invalid_parameter", 400, "A query parameter is invalid")
# 401 / 403 / 404
UNAUTHENTICATED = _spec("unauthenticated", 401, "Missing or invalid credentials")
FORBIDDEN = _spec("forbidden", 403, "Not allowed for these credentials")
NOT_FOUND = _spec("not_found", 404, "Not found")
PAYMENT_NOT_FOUND = _spec("payment_not_found", 404, "No such payment")
METHOD_NOT_ALLOWED = _spec("method_not_allowed", 405, "Method not allowed")
# 402: the gateway declined
CARD_DECLINED = _spec("card_declined", 402, "The payment was declined")
# 409: state conflicts
IDEMPOTENCY_IN_FLIGHT = _spec(
    "idempotency_request_in_flight", 409, "A request with this Idempotency-Key is still in progress"
)
PAYMENT_NOT_CAPTURABLE = _spec("payment_not_capturable", 409, "The payment cannot be captured")
PAYMENT_NOT_REFUNDABLE = _spec("payment_not_refundable", 409, "The payment cannot be refunded")
PAYMENT_NOT_VOIDABLE = _spec("payment_not_voidable", 409, "The payment cannot be voided")
PAYMENT_ALREADY_VOIDED = _spec("payment_already_voided", 409, "The payment has been voided")
PAYMENT_SETTLED = _spec(
    "payment_settled", 409, "The batch has settled: refund the payment instead of voiding"
)
PAYMENT_OUTCOME_UNKNOWN = _spec(
    "payment_outcome_unknown", 409, "The payment's gateway outcome is still being reconciled"
)
OPERATION_IN_PROGRESS = _spec(
    "operation_in_progress", 409, "Another operation on this payment is still waiting for the gateway"
)
TRANSACTION_DEPTH_EXCEEDED = _spec("transaction_depth_exceeded", 409, "The transaction chain is too deep")
# 408: the client sent its body too slowly (API-3)
BODY_READ_TIMEOUT = _spec("body_read_timeout", 408, "The request body did not arrive in time")
# 413 / 415
BODY_TOO_LARGE = _spec("body_too_large", 413, "The request body is too large")
UNSUPPORTED_MEDIA_TYPE = _spec("unsupported_media_type", 415, "Use Content-Type: application/json")
# 422
VALIDATION_FAILED = _spec("validation_failed", 422, "The request is not valid")
IDEMPOTENCY_KEY_REUSED = _spec(
    "idempotency_key_reused", 422, "This Idempotency-Key was used with a different request"
)
AMOUNT_INVALID = _spec("amount_invalid", 422, "The amount is not valid")
AMOUNT_EXCEEDS_CAPTURABLE = _spec(
    "amount_exceeds_capturable", 422, "The amount exceeds what remains capturable"
)
AMOUNT_EXCEEDS_REFUNDABLE = _spec(
    "amount_exceeds_refundable", 422, "The amount exceeds what remains refundable"
)
CURRENCY_NOT_SUPPORTED = _spec("currency_not_supported", 422, "The currency is not supported")
CURRENCY_MISMATCH = _spec("currency_mismatch", 422, "The currency differs from the payment's currency")
MULTI_CAPTURE_DISABLED = _spec(
    "multi_capture_not_enabled", 422, "This merchant allows only one capture per authorization"
)
# 424: the gateway failed or is unavailable
GATEWAY_UNAVAILABLE = _spec("gateway_unavailable", 424, "The payment gateway is unavailable")
GATEWAY_ERROR = _spec("gateway_error", 424, "The payment gateway returned an error")
# 429 / 503 / 504
RATE_LIMITED = _spec("rate_limited", 429, "Too many requests")
INTERNAL_ERROR = _spec("internal_error", 500, "Internal error")
DATABASE_UNAVAILABLE = _spec("database_unavailable", 503, "The database is unavailable")
SHUTTING_DOWN = _spec("shutting_down", 503, "The server is shutting down")
NOT_READY = _spec("not_ready", 503, "The server is not ready")
DEADLINE_EXCEEDED = _spec("deadline_exceeded", 504, "The request deadline was exceeded")


def catalogue() -> dict[str, ProblemSpec]:
    """Every problem code paycore can answer (used by the OpenAPI docs)."""
    return dict(_CATALOGUE)


def register(code: str, status: int, title: str) -> ProblemSpec:
    """Capabilities register their own codes at import time."""
    if code in _CATALOGUE:
        return _CATALOGUE[code]
    return _spec(code, status, title)


class PaycoreError(Exception):
    """A failure with a stable problem code. Raised anywhere, rendered by the API layer."""

    def __init__(
        self,
        spec: ProblemSpec,
        detail: str | None = None,
        *,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or spec.title)
        self.spec = spec
        self.detail = detail or spec.title
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def status(self) -> int:
        return self.spec.status

    def problem(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE_URI + self.spec.code,
            "title": self.spec.title,
            "status": self.spec.status,
            "detail": self.detail,
            "code": self.spec.code,
        }
        if self.param is not None:
            body["param"] = self.param
        if request_id is not None:
            body["request_id"] = request_id
        body.update(self.extra)
        return body
