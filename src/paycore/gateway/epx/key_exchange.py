"""EPX Key Exchange client: one TAC per Browser Post form display (epx-protocol.md §5).

The request is a form-encoded `POST` with the merchant's `MAC` (its identity at Key Exchange; no
4-part key is sent), the coming transaction's `TRAN_NBR`, `AMOUNT` (`0.00` for `STORAGE`),
`TRAN_GROUP` (spelled in full) and the full `REDIRECT_URL`, query string included: the TAC is bound
to all of them.

* **Answer.** HTTP 200 with `<RESPONSE><FIELDS><FIELD KEY="TAC">…</FIELD></FIELDS></RESPONSE>`;
  `TAC=<value>` and a bare TAC string are accepted too. The TAC is opaque (base64-looking).
* **Failure.** A non-200 status, an empty or unparseable body or an empty TAC is an error
  (`KeyExchangeError`). The call is retried **at most once** (a 4xx is not retried: the same request
  would get the same answer), always inside the caller's deadline.
* **Breaker.** Every attempt goes through the `gateway_key_exchange` circuit breaker. Connection
  errors, timeouts, HTTP 5xx and unparseable answers are failures; a 4xx is an answer (the upstream
  is healthy, the request or the MAC is wrong). An open circuit fails at once, without a socket.
* **Secrets.** The MAC and the TAC never reach a log line, an exception message or a `repr`; the
  TAC is returned as a `SecretStr`.

Cancellation propagates at once; a TAC that was issued but never read simply expires at EPX.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as StdET
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlencode

import aiohttp
import defusedxml
import defusedxml.ElementTree as SafeET
import structlog

from paycore.gateway.port import CircuitOpenError
from paycore.kernel.money import to_gateway_amount
from paycore.platform.crypto import SecretStr
from paycore.platform.observability import metrics
from paycore.platform.resilience import deadline
from paycore.platform.resilience.breaker import CircuitBreaker

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = ["TRAN_GROUPS", "KeyExchangeClient", "KeyExchangeError", "parse_tac"]

TRAN_GROUPS: Final = frozenset({"SALE", "AUTH", "STORAGE"})
MAX_ATTEMPTS: Final = 2  # "retry at most once" (§5)
MAX_BODY: Final = 16 * 1024
RETRY_DELAY: Final = 0.1
_TAC: Final = re.compile(r"[A-Za-z0-9+/=_.:-]{1,1024}")
_HEADERS: Final = {
    "Content-Type": "application/x-www-form-urlencoded",
    "Accept": "application/xml, text/xml, text/plain, */*",
}
_log = structlog.get_logger("paycore.gateway.epx.key_exchange")

Sleep = Callable[[float], Awaitable[None]]


class KeyExchangeError(Exception):
    """No TAC could be obtained. `reason` is a bounded code, safe to log and to show."""

    def __init__(self, reason: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(f"key exchange failed: {reason}")
        self.reason = reason
        self.status = status
        self.retryable = retryable


class _BodyTooLarge(Exception):
    pass


def parse_tac(body: bytes) -> str:
    """The TAC of a Key Exchange answer: XML `FIELD KEY="TAC"` (or a `<TAC>` element), `TAC=…`, or
    a bare string. Raises `KeyExchangeError` for an empty, malformed or TAC-less body."""
    text = body.decode("utf-8", errors="replace").strip().lstrip("\ufeff").strip()
    if not text:
        raise KeyExchangeError("empty_body")
    if text.startswith("<"):
        try:
            root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except defusedxml.DefusedXmlException:
            raise KeyExchangeError("forbidden_xml") from None
        except StdET.ParseError:
            raise KeyExchangeError("malformed_xml") from None
        value = ""
        for element in root.iter("FIELD"):
            if element.get("KEY") == "TAC":
                value = (element.text or "").strip()
                break
        else:
            found = root if root.tag == "TAC" else root.find(".//TAC")
            value = (found.text or "").strip() if found is not None else ""
    elif text.upper().startswith("TAC="):
        pairs = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=16))
        value = (pairs.get("TAC") or pairs.get("tac") or "").strip()
    else:
        value = text
    if not value:
        raise KeyExchangeError("empty_tac")
    if _TAC.fullmatch(value) is None:
        raise KeyExchangeError("malformed_tac")
    return value


class KeyExchangeClient:
    """Obtains TACs over a pooled aiohttp session (the gateway session) through a breaker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        breaker: CircuitBreaker,
        *,
        attempt_timeout: float = 10.0,
        call_timeout: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if attempt_timeout <= 0 or call_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._session = session
        self._url = url
        self._breaker = breaker
        self._attempt_timeout = attempt_timeout
        self._call_timeout = call_timeout
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls, session: aiohttp.ClientSession, breaker: CircuitBreaker, settings: Settings
    ) -> KeyExchangeClient:
        if not settings.epx_key_exchange_url:
            raise ValueError("PAYCORE_EPX_KEY_EXCHANGE_URL is not set")
        return cls(
            session,
            settings.epx_key_exchange_url,
            breaker,
            attempt_timeout=settings.gateway_attempt_timeout,
            call_timeout=settings.gateway_timeout,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def request_tac(
        self,
        *,
        mac: SecretStr,
        tran_nbr: int,
        amount_cents: int,
        tran_group: str,
        redirect_url: str,
    ) -> SecretStr:
        """A fresh TAC bound to this TRAN_NBR, amount, group and redirect URL."""
        if tran_group not in TRAN_GROUPS:
            raise ValueError("TRAN_GROUP must be SALE, AUTH or STORAGE")
        if (tran_group == "STORAGE") != (amount_cents == 0):
            raise ValueError("STORAGE is 0.00; SALE and AUTH need an amount")
        body = urlencode(
            [
                ("MAC", mac.reveal()),
                ("TRAN_NBR", str(tran_nbr)),
                ("AMOUNT", to_gateway_amount(amount_cents)),
                ("TRAN_GROUP", tran_group),
                ("REDIRECT_URL", redirect_url),
            ]
        ).encode()
        last: KeyExchangeError | None = None
        try:
            async with deadline.budget(self._call_timeout):
                for attempt in range(MAX_ATTEMPTS):
                    if attempt:
                        assert last is not None
                        left = deadline.remaining()
                        if left is not None and left <= RETRY_DELAY:
                            break
                        metrics.GATEWAY_RETRIES.labels("key_exchange", last.reason[:32]).inc()
                        _log.warning("key_exchange_retry", tran_nbr=tran_nbr, reason=last.reason)
                        await self._sleep(RETRY_DELAY)
                    try:
                        return await self._attempt(body)
                    except KeyExchangeError as exc:
                        last = exc
                        if not exc.retryable:
                            break
        except deadline.DeadlineExceeded:
            last = KeyExchangeError("timeout")
        assert last is not None
        _log.error(
            "key_exchange_failed",
            tran_nbr=tran_nbr,
            tran_group=tran_group,
            reason=last.reason,
            status=last.status,
        )
        raise last

    async def _attempt(self, body: bytes) -> SecretStr:
        try:
            permit = self._breaker.acquire()
        except CircuitOpenError:
            raise KeyExchangeError("circuit_open", retryable=False) from None
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = deadline.bounded(self._attempt_timeout)
        outcome = "error"
        settled = False
        try:
            try:
                async with (
                    asyncio.timeout(budget),
                    self._session.post(self._url, data=body, headers=_HEADERS, allow_redirects=False) as resp,
                ):
                    status = resp.status
                    raw = await _read_limited(resp)
            except _BodyTooLarge:
                permit.failure()
                settled = True
                raise KeyExchangeError("oversized_body") from None
            except TimeoutError:
                outcome = "timeout"
                permit.failure()
                settled = True
                raise KeyExchangeError("timeout") from None
            except (aiohttp.ClientError, OSError) as exc:
                permit.failure()
                settled = True
                raise KeyExchangeError("connect_error" if _is_connect(exc) else "connection_error") from None
            if status >= 500:
                permit.failure()
                settled = True
                raise KeyExchangeError(f"http_{status}", status=status)
            if status != 200:
                permit.success()  # the upstream answered: the request or the MAC is at fault
                settled = True
                raise KeyExchangeError(f"http_{status}", status=status, retryable=False)
            try:
                tac = parse_tac(raw)
            except KeyExchangeError:
                permit.failure()
                settled = True
                raise
            permit.success()
            settled = True
            outcome = "ok"
            return SecretStr(tac)
        finally:
            if not settled:
                permit.release()  # cancelled: no verdict on the upstream's health
            metrics.GATEWAY_DURATION.labels("key_exchange", outcome).observe(loop.time() - started)


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    buffer = bytearray()
    async for chunk in resp.content.iter_chunked(4096):
        buffer.extend(chunk)
        if len(buffer) > MAX_BODY:
            raise _BodyTooLarge
    return bytes(buffer)


def _is_connect(exc: BaseException) -> bool:
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
