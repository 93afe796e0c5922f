"""EPX transaction reporting: the `TransactionReport` implementation used by reconciliation.

`GET {reporting_url}/reporting/transactions?merchant=<MERCH_NBR>&tranNbr=<n>` with
`Accept: application/json` answers::

    {"status": "success", "data": {"transactions": [
        {"tranNbr": ..., "tranType": "CCE1", "authResp": "00", "authGuid": "...", "authCode": "...",
         "amount": "10.50", "batchId": "20250102", "processedAt": "..."}]}}

(a paycore convention, served by the simulator, until EPX's real reporting interface is known).

* An empty list means the gateway has no record of the TRAN_NBR: `None`.
* A non-`success` status, a non-200 HTTP status, a timeout, a connection error, malformed JSON or
  an open `reporting_api` circuit: `ReportUnavailable` (the caller keeps the transaction unresolved
  and tries later). `CancelledError` propagates untouched.
* Amounts are decoded as `Decimal` from the raw JSON text (string or number), never via float,
  and must have at most two decimals.
* When several entries carry the TRAN_NBR, an approved one wins (money moved), else the first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import aiohttp
import msgspec
import structlog

from paycore.gateway.epx import codes, wire
from paycore.gateway.port import (
    Category,
    CircuitOpenError,
    MerchantKey,
    ReportedTransaction,
    ReportUnavailable,
)
from paycore.kernel.money import decimal_to_cents
from paycore.platform.http import UpstreamFailure, get_bounded
from paycore.platform.resilience.breaker import CircuitBreaker, record_health

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = ["EpxReportingClient"]

_log = structlog.get_logger("paycore.gateway.epx.reporting")
_HEADERS: Final[Mapping[str, str]] = {"Accept": "application/json"}
DEFAULT_MAX_BODY: Final = 1024 * 1024


class _Transaction(msgspec.Struct, rename="camel"):
    tran_nbr: int | str
    tran_type: str
    auth_resp: str
    auth_guid: str | None = None
    auth_code: str | None = None
    amount: Decimal | None = None
    batch_id: str | None = None
    processed_at: str | None = None


class _Data(msgspec.Struct):
    transactions: list[_Transaction] = msgspec.field(default_factory=list)


class _Envelope(msgspec.Struct):
    status: str
    data: _Data | None = None


_decoder: Final = msgspec.json.Decoder(_Envelope)


def _cents(amount: Decimal | None) -> int | None:
    if amount is None:
        return None
    try:
        return decimal_to_cents(amount)
    except ValueError:
        raise _Unavailable("the report carries an invalid amount", healthy=False) from None


class EpxReportingClient:
    """Reads the gateway's record of one TRAN_NBR, through the `reporting_api` breaker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        breaker: CircuitBreaker | None = None,
        timeout: float = 30.0,
        headers_factory: Callable[[], Mapping[str, str]] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/reporting/transactions"
        self._breaker = breaker
        self._timeout = timeout
        self._headers_factory = headers_factory
        self._max_body = max_body_bytes

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        breaker: CircuitBreaker | None = None,
        headers_factory: Callable[[], Mapping[str, str]] | None = None,
    ) -> EpxReportingClient:
        if not settings.epx_reporting_url:
            raise ValueError("PAYCORE_EPX_REPORTING_URL is not configured")
        return cls(
            session,
            settings.epx_reporting_url,
            breaker=breaker,
            timeout=settings.reporting_timeout,
            headers_factory=headers_factory,
        )

    async def lookup(self, merchant: MerchantKey, tran_nbr: int) -> ReportedTransaction | None:
        permit = None
        if self._breaker is not None:
            try:
                permit = self._breaker.acquire()
            except CircuitOpenError as exc:
                raise ReportUnavailable("reporting circuit is open") from exc
        healthy: bool | None = None  # stays None when cancelled: no verdict on the upstream
        try:
            body = await self._fetch(merchant, tran_nbr)
            found = self._select(body, tran_nbr)
            healthy = True
        except _Unavailable as exc:
            healthy = exc.healthy
            raise
        finally:
            record_health(permit, healthy)
        return found

    async def _fetch(self, merchant: MerchantKey, tran_nbr: int) -> bytes:
        headers = dict(_HEADERS)
        if self._headers_factory is not None:
            headers = {**self._headers_factory(), **_HEADERS}
        params = {"merchant": merchant.merch_nbr, "tranNbr": str(tran_nbr)}
        try:
            return await get_bounded(
                self._session,
                self._url,
                params=params,
                headers=headers,
                budget=self._timeout,
                max_body=self._max_body,
                what="transaction report",
            )
        except UpstreamFailure as exc:
            raise _Unavailable(str(exc), healthy=exc.healthy) from None

    @staticmethod
    def _select(body: bytes, tran_nbr: int) -> ReportedTransaction | None:
        try:
            envelope = _decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise _Unavailable("malformed report", healthy=False) from None
        if envelope.status != "success" or envelope.data is None:
            raise _Unavailable("report status is not success", healthy=True)
        matches = [t for t in envelope.data.transactions if wire.parse_tran_nbr(t.tran_nbr) == tran_nbr]
        if not matches:
            return None
        chosen = matches[0]
        for entry in matches:
            zero = wire.is_zero_dollar(entry.tran_type)
            if codes.categorize(entry.auth_resp.strip(), zero_dollar=zero) is Category.APPROVED:
                chosen = entry
                break
        auth_resp = chosen.auth_resp.strip()
        return ReportedTransaction(
            tran_nbr=tran_nbr,
            tran_type=chosen.tran_type,
            auth_resp=auth_resp,
            category=codes.categorize(auth_resp, zero_dollar=wire.is_zero_dollar(chosen.tran_type)),
            auth_guid=chosen.auth_guid or None,
            auth_code=chosen.auth_code or None,
            amount_cents=_cents(chosen.amount),
            batch_id=chosen.batch_id or None,
        )


class _Unavailable(ReportUnavailable):
    """`ReportUnavailable` that also says whether the upstream itself looked healthy."""

    def __init__(self, message: str, *, healthy: bool) -> None:
        super().__init__(message)
        self.healthy = healthy
