"""ACH returns from the gateway's returns report: the `AchReturnSource` port and its EPX client.

How EPX delivers ACH returns is unverified (epx-protocol.md §7.3). paycore reads a report
(paycore convention, served by the simulator until EPX's real interface is known)::

    GET {PAYCORE_EPX_REPORTING_URL}/reporting/ach/returns?merchant=<MERCH_NBR>&fromDate=YYYY-MM-DD
    {"status": "success", "data": {"returns": [
        {"tranNbr": 1234567890, "authGuid": "09…", "returnCode": "R03", "returnDate": "2026-03-04",
         "amount": "0.00", "accountLast4": "0003", "secCode": "WEB", "tranType": "CKC0"},
        {"tranNbr": …, "returnCode": null, "changeCode": "C01", "correctedData": "…"}]}}

Only what matching needs is kept: TRAN_NBR, return or change code, date, amount and TRAN_TYPE.
The BRIC and a NOC's corrected data (which can be a full account number) are dropped while
parsing and never logged. A non-200 answer, a non-`success` status, malformed JSON, a timeout or an
open `reporting_api` circuit raise `ReturnsUnavailable` (the job tries again next run).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Protocol

import aiohttp
import msgspec
import structlog

from paycore.gateway.epx import wire
from paycore.gateway.port import CircuitOpenError, MerchantKey
from paycore.kernel.money import decimal_to_cents
from paycore.platform.http import UpstreamFailure, get_bounded
from paycore.platform.resilience.breaker import CircuitBreaker, record_health

if TYPE_CHECKING:
    from paycore.config import Settings

__all__ = ["AchReturn", "AchReturnSource", "EpxAchReturnsClient", "ReturnsUnavailable"]

_log = structlog.get_logger("paycore.gateway.epx.ach_returns")
_HEADERS: Final[Mapping[str, str]] = {"Accept": "application/json"}
DEFAULT_MAX_BODY: Final = 4 * 1024 * 1024


class AchReturn(msgspec.Struct, frozen=True, kw_only=True):
    """One return (`return_code` R01…) or notification of change (`change_code` C01…)."""

    tran_nbr: int
    return_code: str | None
    change_code: str | None
    return_date: date
    amount_cents: int | None
    tran_type: str | None


class AchReturnSource(Protocol):
    """Where ACH returns come from (a report poll here; a file import would fit the same port)."""

    async def returns_since(self, merchant: MerchantKey, from_date: date) -> list[AchReturn]: ...


class ReturnsUnavailable(RuntimeError):
    pass


class _Entry(msgspec.Struct, rename="camel"):
    tran_nbr: int | str
    return_date: str
    return_code: str | None = None
    change_code: str | None = None
    amount: Decimal | None = None
    tran_type: str | None = None


class _Data(msgspec.Struct):
    returns: list[_Entry] = msgspec.field(default_factory=list)


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
        return None


def parse_returns(body: bytes) -> list[AchReturn]:
    """The returns of a report body. Entries without a usable TRAN_NBR, code or date are skipped."""
    try:
        envelope = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ReturnsUnavailable("malformed returns report") from None
    if envelope.status != "success" or envelope.data is None:
        raise ReturnsUnavailable("returns report status is not success")
    out: list[AchReturn] = []
    for entry in envelope.data.returns:
        tran_nbr = wire.parse_tran_nbr(entry.tran_nbr)
        code = (entry.return_code or "").strip().upper() or None
        change = (entry.change_code or "").strip().upper() or None
        try:
            when = date.fromisoformat(entry.return_date[:10])
        except ValueError:
            when = None
        if tran_nbr is None or when is None or (code is None and change is None):
            _log.warning("ach_return_entry_skipped", reason="incomplete entry")
            continue
        out.append(
            AchReturn(
                tran_nbr=tran_nbr,
                return_code=code,
                change_code=None if code else change,
                return_date=when,
                amount_cents=_cents(entry.amount),
                tran_type=entry.tran_type,
            )
        )
    return out


class EpxAchReturnsClient:
    """`AchReturnSource` over the reporting session, through the `reporting_api` breaker."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        breaker: CircuitBreaker | None = None,
        timeout: float = 30.0,
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/reporting/ach/returns"
        self._breaker = breaker
        self._timeout = timeout
        self._max_body = max_body_bytes

    @classmethod
    def from_settings(
        cls, session: aiohttp.ClientSession, settings: Settings, *, breaker: CircuitBreaker | None = None
    ) -> EpxAchReturnsClient:
        if not settings.epx_reporting_url:
            raise ValueError("PAYCORE_EPX_REPORTING_URL is not configured")
        return cls(session, settings.epx_reporting_url, breaker=breaker, timeout=settings.reporting_timeout)

    async def returns_since(self, merchant: MerchantKey, from_date: date) -> list[AchReturn]:
        permit = None
        if self._breaker is not None:
            try:
                permit = self._breaker.acquire()
            except CircuitOpenError as exc:
                raise ReturnsUnavailable("reporting circuit is open") from exc
        healthy: bool | None = None
        try:
            body = await self._fetch(merchant, from_date)
            parsed = parse_returns(body)
            healthy = True
        except _Failed as exc:
            healthy = exc.healthy
            raise
        except ReturnsUnavailable:
            healthy = False
            raise
        finally:
            record_health(permit, healthy)
        return parsed

    async def _fetch(self, merchant: MerchantKey, from_date: date) -> bytes:
        params = {"merchant": merchant.merch_nbr, "fromDate": from_date.isoformat()}
        try:
            return await get_bounded(
                self._session,
                self._url,
                params=params,
                headers=_HEADERS,
                budget=self._timeout,
                max_body=self._max_body,
                what="ACH returns report",
            )
        except UpstreamFailure as exc:
            raise _Failed(str(exc), healthy=exc.healthy) from None


class _Failed(ReturnsUnavailable):
    def __init__(self, message: str, *, healthy: bool) -> None:
        super().__init__(message)
        self.healthy = healthy
