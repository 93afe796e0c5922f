"""The request envelope as raw ASGI (cheap): request id, readiness/draining, body limit,
body-read deadline (API-3), deadline (RES-7), client-disconnect cancellation (CRITICAL-1), HTTP
metrics, query counting, and the per-request INFO line of the `detailed_logging` kill switch
(RES-11; read once per request, off by default and under `degraded`)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from typing import Any, Final

import structlog

from paycore.kernel import codec, errors
from paycore.kernel.errors import PaycoreError
from paycore.platform.context import request_id_var
from paycore.platform.db.database import query_counter
from paycore.platform.flags import Switch, constant
from paycore.platform.observability import metrics as m
from paycore.platform.observability import tracing
from paycore.platform.resilience import deadline as dl
from paycore.platform.shutdown import Lifecycle

log = structlog.get_logger("paycore.http")

ASGIApp = Any
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
ALWAYS_SERVED: Final = frozenset({"/healthz", "/readyz", "/metrics", "/health"})


async def send_problem(send: Any, exc: PaycoreError, request_id: str | None) -> None:
    body = codec.encode(exc.problem(request_id))
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    headers.extend((k.lower().encode(), v.encode()) for k, v in exc.headers.items())
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _BodyReadTimeout(PaycoreError):
    """The client did not finish sending its body within the body-read deadline (API-3): 408, and
    the connection is not reused (the rest of the body may still be on its way)."""

    def __init__(self) -> None:
        super().__init__(errors.BODY_READ_TIMEOUT, headers={"Connection": "close"})


class RequestEnvelope:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        request_timeout: float,
        max_body_bytes: int,
        slow_request: float,
        max_queries: int,
        body_read_timeout: float = 10.0,
        detailed_logging: Switch | None = None,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.request_timeout = request_timeout
        self.max_body_bytes = max_body_bytes
        self.slow_request = slow_request
        self.max_queries = max_queries
        self.body_read_timeout = body_read_timeout
        # `detailed_logging` (RES-11): one INFO line per request while on — method, route template,
        # status, duration, request id; never bodies, headers or query strings
        self.detailed_logging = detailed_logging or constant(False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id: str | None = None
        timeout = self.request_timeout
        content_length = -1
        traceparent: str | None = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"x-request-id":
                text = value.decode("latin-1")
                if _REQUEST_ID.match(text):
                    request_id = text
            elif name == b"x-request-timeout-ms":
                with contextlib.suppress(ValueError):
                    timeout = min(timeout, max(int(value) / 1000.0, 0.001))
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif name == b"transfer-encoding":
                content_length = -2  # a streamed body of unknown length
        if request_id is None:
            request_id = str(uuid.uuid4())
        rid_token = request_id_var.set(request_id)
        path = scope["path"]
        lifecycle = self.lifecycle
        status_holder = [0]
        traced = path not in ALWAYS_SERVED
        if traced:
            span, span_tokens = tracing.start_server_span(
                f"{scope.get('method', 'GET')} {scope.get('path_template') or 'unmatched'}",
                traceparent,
                {"http.request.method": scope.get("method", "GET"), "paycore.request_id": request_id},
            )
        try:
            if path not in ALWAYS_SERVED:
                if lifecycle.draining:
                    await send_problem(
                        send,
                        PaycoreError(
                            errors.SHUTTING_DOWN, headers={"Retry-After": "1", "Connection": "close"}
                        ),
                        request_id,
                    )
                    status_holder[0] = 503
                    return
                if not lifecycle.ready:
                    await send_problem(
                        send, PaycoreError(errors.NOT_READY, headers={"Retry-After": "1"}), request_id
                    )
                    status_holder[0] = 503
                    return
            if content_length > self.max_body_bytes:
                await send_problem(send, PaycoreError(errors.BODY_TOO_LARGE), request_id)
                status_holder[0] = 413
                return
            # HTTP/1.x without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3).
            bodyless = content_length == 0 or (
                content_length == -1 and str(scope.get("http_version", "1.1")).startswith("1")
            )
            await self._serve(scope, receive, send, request_id, timeout, status_holder, bodyless)
        finally:
            request_id_var.reset(rid_token)
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "GET")
            elapsed = time.perf_counter() - started
            m.HTTP_REQUESTS.labels(route, method, str(status_holder[0])).inc()
            m.HTTP_DURATION.labels(route, method).observe(elapsed)
            status = status_holder[0]
            if status >= 500 and path not in ALWAYS_SERVED and lifecycle.ready and not lifecycle.draining:
                # LOG-1: a failed request is one ERROR line with its duration (fast successes: none)
                log.error(
                    "request_failed",
                    route=route,
                    method=method,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                    request_id=request_id,
                )
            elif elapsed > self.slow_request and path not in ALWAYS_SERVED:
                log.warning(
                    "slow_request",
                    route=route,
                    method=method,
                    status=status_holder[0],
                    duration_ms=round(elapsed * 1000, 1),
                    request_id=request_id,
                )
            if traced and self.detailed_logging():
                log.info(
                    "request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                    request_id=request_id,
                )
            if traced:
                tracing.finish_server_span(span, span_tokens, status_holder[0], route)

    async def _serve(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        request_id: str,
        timeout: float,
        status_holder: list[int],
        bodyless: bool = False,
    ) -> None:
        """Run the app under the deadline. Once the request body has been read (at once for a
        request without one), a watcher is the only reader of `receive`: when the client goes
        away it cancels the handler (CRITICAL-1); the app sees `http.disconnect` as well.

        Body-read deadline (API-3): from the app's first read of a body, the whole body must
        arrive within `body_read_timeout`, else 408 `body_read_timeout` and nothing is processed.
        A request without a body never reads `receive` for one, so it is not concerned."""
        lifecycle = self.lifecycle
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        limit = self.max_body_bytes
        received = 0
        body_deadline: float | None = None  # set by the first read of the body
        body_done = asyncio.Event()
        disconnected = asyncio.Event()
        started_response = False
        response_done = False
        empty_body_pending = bodyless
        if bodyless:
            body_done.set()

        async def guarded_receive() -> dict[str, Any]:
            nonlocal received, empty_body_pending, body_deadline
            if body_done.is_set():
                if empty_body_pending:
                    empty_body_pending = False
                    return {"type": "http.request", "body": b"", "more_body": False}
                # The watcher owns `receive` now: never two concurrent readers.
                await disconnected.wait()
                return {"type": "http.disconnect"}
            if body_deadline is None:
                body_deadline = loop.time() + self.body_read_timeout
            try:
                async with asyncio.timeout_at(body_deadline):
                    message: dict[str, Any] = await receive()
            except TimeoutError:
                log.warning(
                    "body_read_timeout",
                    route=scope.get("path_template") or "unmatched",
                    received_bytes=received,
                    timeout=self.body_read_timeout,
                    request_id=request_id,
                )
                raise _BodyReadTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
                if not message.get("more_body", False):
                    body_done.set()
            elif message["type"] == "http.disconnect":
                disconnected.set()
                body_done.set()
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started_response, response_done
            if message["type"] == "http.response.start":
                started_response = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done = True  # a disconnect from now on has nothing left to cancel
            await send(message)

        handler = asyncio.current_task()
        assert handler is not None
        client_gone: list[bool] = []

        async def watch_disconnect() -> None:
            await body_done.wait()
            while not disconnected.is_set():
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
            if not response_done:
                client_gone.append(True)
                handler.cancel("client disconnected")

        watcher = loop.create_task(watch_disconnect())
        counter = [0]
        qc_token = query_counter.set(counter)
        dl_token = dl.set_deadline(deadline)
        lifecycle.request_started()
        m.HTTP_IN_FLIGHT.inc()
        try:
            async with asyncio.timeout_at(deadline):
                await self.app(scope, guarded_receive, tracked_send)
        except _BodyTooLarge:
            if not started_response:
                await send_problem(send, PaycoreError(errors.BODY_TOO_LARGE), request_id)
                status_holder[0] = 413
        except _BodyReadTimeout as exc:  # raised outside the app's own error handling
            if not started_response:
                await send_problem(send, exc, request_id)
                status_holder[0] = 408
        except TimeoutError:
            if not started_response:
                await send_problem(send, PaycoreError(errors.DEADLINE_EXCEEDED), request_id)
                status_holder[0] = 504
        except asyncio.CancelledError:
            if client_gone and handler.cancelling():
                # The client went away: its work is cancelled (CRITICAL-1); nobody reads the answer.
                status_holder[0] = 499
                handler.uncancel()
            elif lifecycle.cancelled_at_drain_deadline(handler) and not started_response:
                # Still running at the drain deadline (RES-M2): its transaction is left for
                # reconciliation; the client gets a problem it can retry with the same
                # Idempotency-Key, not the server's bare 500.
                handler.uncancel()
                await send_problem(
                    send,
                    PaycoreError(
                        errors.SHUTTING_DOWN,
                        "The server stopped before this request finished; its outcome is settled by "
                        "reconciliation. Retry with the same Idempotency-Key.",
                        headers={"Retry-After": "1", "Connection": "close"},
                    ),
                    request_id,
                )
                status_holder[0] = 503
            else:
                raise
        finally:
            watcher.cancel()
            dl.reset_deadline(dl_token)
            query_counter.reset(qc_token)
            lifecycle.request_finished()
            m.HTTP_IN_FLIGHT.dec()
            if counter[0]:
                route = scope.get("path_template") or "unmatched"
                m.DB_QUERIES_PER_REQUEST.labels(route).observe(counter[0])
                if counter[0] > self.max_queries:
                    log.warning("many_queries_per_request", route=route, queries=counter[0])
