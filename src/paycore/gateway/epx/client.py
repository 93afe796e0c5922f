"""EPX Server Post client: the `TransactionProcessor` implementation (epx-protocol.md §2-§3).

One `process()` call sends one transaction and classifies what happened (see `GatewayResult`):

* The form body is encoded **once**; every retry resends the identical bytes, so the TRAN_NBR and
  the LOCAL_DATE/LOCAL_TIME never change between attempts (§2.4, §2.5).
* Up to `max_attempts` attempts (default 3), each through the circuit breaker (the breaker wraps
  one attempt) and under `min(attempt_timeout, remaining)`. All attempts and waits run inside
  `deadline.budget(call_timeout)`, so the call never outlives `call_timeout` nor the request's own
  deadline; a retry is not scheduled when its backoff would pass the deadline.
* Retried (same bytes): a connection error before any byte was sent; a timeout, reset, HTTP 5xx or
  unparseable answer after sending. Never retried: declines (`91` included), `96`, HTTP 3xx/4xx,
  validation texts, a "Duplicate TRAN_NBR" answer, an open circuit.

Outcomes:

====================================================  ============  ========================
situation                                             outcome       error_code
====================================================  ============  ========================
`00` (or `85` on a $0 type) with a BRIC               approved      -
decline codes, unknown codes                          declined      -
`96`, `12`, `58` (category error)                     failed        gateway_error
validation text (`Invalid <FIELD>[..]`, `Missing..`)  failed        gateway_validation
HTTP 400/401/other 4xx, 3xx                           failed        http_<status>
"Duplicate TRAN_NBR" on the first attempt             failed        duplicate_tran_nbr (ERROR log: a bug)
"Duplicate TRAN_NBR" on a retry / a re-drive          unknown       duplicate_tran_nbr
approval with AUTH_AMOUNT ≠ AMOUNT                    unknown       amount_mismatch
`85` on a non-$0 type                                 unknown       unexpected_code_85
all attempts failed, at least one may have arrived    unknown       timeout / http_503 / protocol_error / ...
all attempts provably not delivered                   failed        gateway_unreachable
circuit open on the first attempt                     failed        circuit_open
budget spent before anything was sent                 failed        deadline_exceeded
====================================================  ============  ========================

`result.detail` says why retrying stopped early (`circuit_open` when the breaker opened mid-call,
`no time left for a retry`) or names the protocol problem (`missing_auth_resp`, `tran_nbr_mismatch`,
`oversized_body`, ...). It never contains body content.

`amount_mismatch` (paycore convention, §3.2): a partial approval is unverified at EPX, so an approval
for a different amount is an anomaly. It is reported as `unknown` with the response attached: the
service must not fulfil, should void it (the BRIC is in `result.response`) and alerts.

**Cancellation.** `CancelledError` (client gone, shutdown, an outer `asyncio.timeout`) always
propagates at once: no shield, no swallowing, the backoff wait is a plain `await sleep()`. The
caller learns whether the request may have reached EPX through a `CallTrace` it passes in and
reads afterwards — also after an exception::

    trace = CallTrace()
    try:
        result = await client.process(request, trace=trace)
    except asyncio.CancelledError:
        if trace.may_have_reached_gateway:
            ...  # leave the transaction `unknown`: reconciliation resolves it, never a new TRAN_NBR
        raise

`may_have_reached_gateway` is False only when no byte of any attempt left the process (proved by
the session's trace config, see `platform.http.RequestProbe`); on a session without that trace
config it is conservatively True once an attempt was started. A subclass of `CancelledError` was
rejected on purpose: `asyncio.timeout()` only converts an exact `CancelledError` into
`TimeoutError`.

**Tracing hook.** `headers_factory` (optional) returns extra headers for each attempt, e.g. a W3C
`traceparent` once OpenTelemetry is wired in; it cannot override Content-Type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import aiohttp
import msgspec
import structlog

from paycore.gateway.epx import codes, wire
from paycore.gateway.port import (
    CallTrace,
    Category,
    CircuitOpenError,
    GatewayRequest,
    GatewayResponse,
    GatewayResult,
    Outcome,
)
from paycore.platform.http import RequestProbe
from paycore.platform.observability import metrics
from paycore.platform.resilience import deadline
from paycore.platform.resilience.breaker import BreakerState, CircuitBreaker, Permit
from paycore.platform.resilience.retry import RetryPolicy, retry_fits

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = ["CallTrace", "EpxServerPostClient", "HeadersFactory"]

HeadersFactory = Callable[[], Mapping[str, str]]
Sleep = Callable[[float], Awaitable[None]]

_log = structlog.get_logger("paycore.gateway.epx")

_BASE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/xml, text/xml, text/plain, */*",
}
DEFAULT_MAX_BODY: Final = 64 * 1024
# A retry is only worth scheduling when at least this much time is left for the attempt itself.
MIN_ATTEMPT_TIME: Final = 0.01


@dataclass(frozen=True, slots=True)
class _Final:
    """A definitive classification: stop and return it."""

    result: GatewayResult


@dataclass(frozen=True, slots=True)
class _Failed:
    """A failed attempt that may be retried with the identical body."""

    reason: str  # error_code of the final result if this is the last attempt
    retry_label: str  # bounded `reason` label of gateway_retries_total
    delivered: bool  # the request may have reached the gateway
    retryable: bool = True
    detail: str | None = None


class EpxServerPostClient:
    """`TransactionProcessor` over one pooled aiohttp session (see `platform.http.create_session`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        breaker: CircuitBreaker,
        *,
        attempt_timeout: float = 10.0,
        call_timeout: float = 30.0,
        max_attempts: int = 3,
        backoff_base: float = 0.1,
        backoff_multiplier: float = 2.0,
        backoff_cap: float = 30.0,
        backoff_jitter: float = 0.1,
        rand: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
        headers_factory: HeadersFactory | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        if attempt_timeout <= 0 or call_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._session = session
        self._url = url
        self._breaker = breaker
        self._attempt_timeout = attempt_timeout
        self._call_timeout = call_timeout
        self._policy = RetryPolicy(
            max_attempts=max_attempts,
            base=backoff_base,
            multiplier=backoff_multiplier,
            cap=backoff_cap,
            jitter=backoff_jitter,
        )
        self._rand = rand
        self._sleep = sleep
        self._headers_factory = headers_factory
        self._max_body = max_body_bytes

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        breaker: CircuitBreaker,
        settings: Settings,
        *,
        headers_factory: HeadersFactory | None = None,
    ) -> EpxServerPostClient:
        return cls(
            session,
            settings.epx_server_post_url,
            breaker,
            attempt_timeout=settings.gateway_attempt_timeout,
            call_timeout=settings.gateway_timeout,
            max_attempts=settings.gateway_max_attempts,
            backoff_base=settings.retry_base,
            backoff_multiplier=settings.retry_multiplier,
            backoff_cap=settings.retry_cap,
            backoff_jitter=settings.retry_jitter,
            headers_factory=headers_factory,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    # --- the port ---------------------------------------------------------------------------------
    async def process(
        self,
        request: GatewayRequest,
        *,
        trace: CallTrace | None = None,
        previously_sent: bool = False,
    ) -> GatewayResult:
        """Send `request` (retrying safely) and classify the outcome.

        `previously_sent=True` re-drives a stored request that an earlier call may already have
        delivered: a "Duplicate TRAN_NBR" answer is then `unknown` even on the first attempt.
        Raises only `CancelledError` (and what the event loop raises); read `trace` afterwards.
        """
        if trace is None:
            trace = CallTrace()
        if previously_sent:
            trace.may_have_reached_gateway = True
        body = wire.encode(request)
        last: _Failed | None = None
        try:
            async with deadline.budget(self._call_timeout):
                for attempt in range(self._policy.max_attempts):
                    if attempt:
                        assert last is not None
                        wait = self._policy.delay(attempt - 1, self._rand)
                        if not retry_fits(wait, deadline.remaining(), min_attempt=MIN_ATTEMPT_TIME):
                            last = dataclasses.replace(last, detail="no time left for a retry")
                            break
                        if self._breaker.enabled and self._breaker.state is BreakerState.OPEN:
                            last = dataclasses.replace(last, detail="circuit_open")
                            break
                        metrics.GATEWAY_RETRIES.labels(request.operation.value, last.retry_label).inc()
                        _log.warning(
                            "gateway_retry",
                            operation=request.operation.value,
                            tran_nbr=request.tran_nbr,
                            attempt=attempt + 1,
                            reason=last.reason,
                            delay_ms=round(wait * 1000),
                        )
                        await self._sleep(wait)
                    left = deadline.remaining()
                    if left is not None and left <= 0:
                        break
                    budget = self._attempt_timeout if left is None else min(self._attempt_timeout, left)
                    outcome = await self._attempt(
                        request,
                        body,
                        budget,
                        trace,
                        retry=attempt > 0 or previously_sent,
                    )
                    if isinstance(outcome, _Final):
                        trace.completed = True
                        return msgspec.structs.replace(outcome.result, attempts=trace.attempts)
                    if outcome.reason == "circuit_open" and last is not None:
                        # Opened mid-call: keep the earlier, possibly delivered, failure.
                        last = dataclasses.replace(last, retryable=False, detail="circuit_open")
                        break
                    last = outcome
                    trace.last_error = outcome.reason
                    if not outcome.retryable:
                        break
        except deadline.DeadlineExceeded:
            # The call budget fired in the middle of an attempt or a wait (the attempt's own
            # timeout normally fires first). The trace already says whether bytes went out.
            last = _Failed("timeout", "timeout", trace.may_have_reached_gateway, detail="call budget spent")
            trace.last_error = "timeout"
        result = self._exhausted(request, last, trace)
        trace.completed = True
        return result

    # --- one attempt ----------------------------------------------------------------------------
    async def _attempt(
        self,
        request: GatewayRequest,
        body: bytes,
        attempt_budget: float,
        trace: CallTrace,
        *,
        retry: bool,
    ) -> _Final | _Failed:
        operation = request.operation.value
        try:
            permit = self._breaker.acquire()
        except CircuitOpenError:
            return _Failed("circuit_open", "circuit_open", False, retryable=False)
        trace.attempts += 1
        probe = RequestProbe()
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome: _Final | _Failed | None = None
        try:
            try:
                async with (
                    asyncio.timeout(attempt_budget),
                    self._session.post(
                        self._url,
                        data=body,
                        headers=self._headers(),
                        allow_redirects=False,
                        trace_request_ctx=probe,
                    ) as response,
                ):
                    status = response.status
                    raw = await self._read_body(response)
            except _BodyTooLarge:
                outcome = _Failed("protocol_error", "protocol_error", True, detail="oversized_body")
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # Refused, unreachable, DNS, TLS handshake, connect timeout: nothing was sent.
                delivered = self._delivered(probe, connect_phase=True)
                outcome = _Failed("connect_error", "connect_error", delivered, detail=type(exc).__name__)
            except TimeoutError:
                outcome = _Failed("timeout", "timeout", self._delivered(probe))
            except (aiohttp.ClientError, OSError) as exc:
                delivered = self._delivered(probe)
                outcome = _Failed(
                    "connection_reset", "connection_reset", delivered, detail=type(exc).__name__
                )
            else:
                outcome = self._interpret(request, status, raw, retry=retry)
        finally:
            if outcome is None:
                # Cancelled (or an unexpected error): tell the caller what may have gone out, and
                # free the breaker slot without a verdict on the upstream's health.
                if self._delivered(probe):
                    trace.may_have_reached_gateway = True
                permit.release()
        if isinstance(outcome, _Final) or outcome.delivered:
            trace.may_have_reached_gateway = True
        self._record(permit, outcome)
        self._observe(operation, outcome, loop.time() - started)
        return outcome

    def _headers(self) -> Mapping[str, str]:
        if self._headers_factory is None:
            return _BASE_HEADERS
        try:
            extra = self._headers_factory()
        except Exception:
            _log.warning("gateway_headers_factory_failed", exc_info=True)
            return _BASE_HEADERS
        return {**extra, **_BASE_HEADERS}

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        buffer = bytearray()
        async for chunk in response.content.iter_chunked(16384):
            buffer.extend(chunk)
            if len(buffer) > self._max_body:
                raise _BodyTooLarge
        return bytes(buffer)

    @staticmethod
    def _delivered(probe: RequestProbe, *, connect_phase: bool = False) -> bool:
        """May this attempt have reached the gateway? False only when provably not."""
        if probe.tracked:
            return probe.headers_sent
        return not connect_phase

    # --- classification ---------------------------------------------------------------------------
    def _interpret(
        self, request: GatewayRequest, status: int, raw: bytes, *, retry: bool
    ) -> _Final | _Failed:
        fields = _log_fields(request)
        if status >= 500:
            return _Failed(f"http_{status}", "http_5xx", True)
        if 300 <= status < 500:
            _log.error("gateway_http_refused", status=status, **fields)
            return _Final(GatewayResult(outcome="failed", error_code=f"http_{status}", attempts=0))
        zero_dollar = wire.is_zero_dollar(request.tran_type)
        try:
            response = wire.parse_response(raw, zero_dollar=zero_dollar)
        except wire.ProtocolError as exc:
            return _Failed("protocol_error", "protocol_error", True, detail=exc.reason)
        if response.tran_nbr is not None and response.tran_nbr != request.tran_nbr:
            return _Failed("protocol_error", "protocol_error", True, detail="tran_nbr_mismatch")
        metrics.GATEWAY_RESPONSES.labels(
            wire.payment_type(request.tran_type),
            codes.metric_code(response.auth_resp),
            response.category.value,
        ).inc()
        category = response.category
        text = response.auth_resp_text
        if category is not Category.APPROVED:
            if codes.is_duplicate_tran_nbr(text):
                if retry:
                    _log.error("gateway_duplicate_on_retry_outcome_unknown", **fields)
                    return _result("unknown", response, "duplicate_tran_nbr")
                _log.error("gateway_duplicate_tran_nbr_first_attempt", **fields)
                return _result("failed", response, "duplicate_tran_nbr")
            field = codes.validation_field(text)
            if field is not None:
                _log.error("gateway_validation_error", field=field, auth_resp=response.auth_resp, **fields)
                return _result("failed", response, "gateway_validation", detail=f"invalid field {field}")
        if category is Category.APPROVED:
            if not response.auth_guid:
                return _Failed("protocol_error", "protocol_error", True, detail="approval_without_auth_guid")
            if (
                request.amount_cents is not None
                and response.auth_amount_cents is not None
                and response.auth_amount_cents != request.amount_cents
            ):
                _log.error(
                    "gateway_amount_mismatch",
                    requested_cents=request.amount_cents,
                    approved_cents=response.auth_amount_cents,
                    **fields,
                )
                return _result("unknown", response, "amount_mismatch")
            return _result("approved", response, None)
        if response.auth_resp == "85":
            _log.error("gateway_unexpected_code_85", **fields)
            return _result("unknown", response, "unexpected_code_85")
        if category is Category.ERROR:
            _log.warning("gateway_error_code", auth_resp=response.auth_resp, **fields)
            return _result("failed", response, "gateway_error")
        return _result("declined", response, None)

    def _exhausted(self, request: GatewayRequest, last: _Failed | None, trace: CallTrace) -> GatewayResult:
        fields = _log_fields(request)
        if last is None:  # the budget was spent before the first attempt could start
            outcome: Outcome = "unknown" if trace.may_have_reached_gateway else "failed"
            return GatewayResult(outcome=outcome, error_code="deadline_exceeded", attempts=trace.attempts)
        if trace.may_have_reached_gateway:
            _log.error(
                "gateway_outcome_unknown",
                reason=last.reason,
                detail=last.detail,
                attempts=trace.attempts,
                **fields,
            )
            return GatewayResult(
                outcome="unknown", error_code=last.reason, detail=last.detail, attempts=trace.attempts
            )
        code = "circuit_open" if last.reason == "circuit_open" else "gateway_unreachable"
        _log.warning("gateway_unreachable", reason=last.reason, attempts=trace.attempts, **fields)
        return GatewayResult(
            outcome="failed", error_code=code, detail=last.detail or last.reason, attempts=trace.attempts
        )

    # --- accounting -------------------------------------------------------------------------------
    @staticmethod
    def _record(permit: Permit, outcome: _Final | _Failed) -> None:
        if permit.done:
            return
        if isinstance(outcome, _Failed):
            permit.failure()
            return
        response = outcome.result.response
        if response is not None and codes.lookup(response.auth_resp).breaker_failure:
            permit.failure()  # 96: the gateway's own system error
        else:
            permit.success()  # any answer, declines, 91, 4xx and validation errors included

    @staticmethod
    def _observe(operation: str, outcome: _Final | _Failed, seconds: float) -> None:
        if isinstance(outcome, _Final):
            label = "error" if (outcome.result.error_code or "").startswith("http_") else "ok"
        else:
            label = "timeout" if outcome.reason == "timeout" else "error"
        metrics.GATEWAY_DURATION.labels(operation, label).observe(seconds)


class _BodyTooLarge(Exception):
    pass


def _result(
    outcome: Outcome, response: GatewayResponse, error_code: str | None, detail: str | None = None
) -> _Final:
    return _Final(
        GatewayResult(
            outcome=outcome,
            response=response,
            error_code=error_code,
            detail=detail,
        )
    )


def _log_fields(request: GatewayRequest) -> dict[str, object]:
    return {
        "operation": request.operation.value,
        "tran_type": request.tran_type,
        "tran_nbr": request.tran_nbr,
    }
