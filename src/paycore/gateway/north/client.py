"""North's dispute reporting client (epx-protocol.md §8).

`GET {base}/merchant/disputes/mid/search?findBy=byMerchant:<MERCH_NBR>,fromDate:YYYY-MM-DD,toDate:…`
with `Accept: application/json`, through the `reporting_api` breaker.

* Authentication is unverified: requests carry whatever the pluggable `Authenticator` adds
  (configured from North's onboarding); the default adds nothing.
* A `status` other than `"success"`, a non-200 answer, a timeout, malformed JSON or an open circuit
  raise `DisputesUnavailable` (the sync tries again next period). Cancellation propagates.
* Paging is unverified: when `currentResultCount < totalDisputes`, the date window is split in two
  and each half queried again, down to single days (`fetch_window`). A single day that is still
  incomplete is reported (`complete=False`) rather than silently truncated.
* Amounts are JSON numbers parsed as `Decimal` from the raw text, converted to integer cents;
  never a float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Final, Protocol

import aiohttp
import msgspec
import structlog

from paycore.gateway.port import CircuitOpenError
from paycore.kernel.money import decimal_to_cents
from paycore.platform.http import UpstreamFailure, get_bounded
from paycore.platform.resilience.breaker import CircuitBreaker, record_health

__all__ = [
    "Authenticator",
    "DisputesUnavailable",
    "NoAuthenticator",
    "NorthDispute",
    "NorthDisputeClient",
    "NorthPage",
    "WindowResult",
    "split_window",
    "to_cents",
]

_log = structlog.get_logger("paycore.gateway.north")
SEARCH_PATH: Final = "/merchant/disputes/mid/search"
MAX_BODY: Final = 8 * 1024 * 1024


class DisputesUnavailable(Exception):
    """The dispute report could not be read now; try again later."""


class Authenticator(Protocol):
    """Adds North's credentials to a request (header names and signing are set at onboarding)."""

    def headers(self, method: str, url: str, query: Mapping[str, str]) -> Mapping[str, str]: ...


class NoAuthenticator:
    def headers(self, method: str, url: str, query: Mapping[str, str]) -> Mapping[str, str]:
        return {}


class NorthDispute(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    case_number: str
    status: str
    dispute_date: str | None = None
    chargeback_date: str | None = None
    transaction_date: str | None = None
    dispute_type: str | None = None
    card_brand: str | None = None
    card_number_last_four: str | None = None
    transaction_number: str | int | None = None
    reason_code: str | None = None
    reason_description: str | None = None
    transaction_amount: Decimal | None = None
    chargeback_amount: Decimal | None = None


class _Meta(msgspec.Struct, rename="camel"):
    total_disputes: int = 0
    current_result_count: int = 0


class _Data(msgspec.Struct):
    disputes: list[NorthDispute] = msgspec.field(default_factory=list)
    meta: _Meta = msgspec.field(default_factory=_Meta)


class _Envelope(msgspec.Struct):
    status: str
    data: _Data | None = None


_decoder: Final = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True, slots=True)
class NorthPage:
    disputes: list[NorthDispute]
    total: int
    count: int

    @property
    def complete(self) -> bool:
        return self.count >= self.total and len(self.disputes) >= self.total


@dataclass(frozen=True, slots=True)
class WindowResult:
    disputes: list[NorthDispute]
    complete: bool
    queries: int


def to_cents(amount: Decimal | None) -> int | None:
    """Decimal dollars → integer cents; more than two decimals or a negative value is refused."""
    return None if amount is None else decimal_to_cents(amount)


def split_window(start: date, end: date) -> tuple[tuple[date, date], tuple[date, date]] | None:
    """Two halves of an inclusive date window, or None for a single day."""
    if end <= start:
        return None
    middle = start + timedelta(days=(end - start).days // 2)
    return (start, middle), (middle + timedelta(days=1), end)


class NorthDisputeClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        breaker: CircuitBreaker | None = None,
        timeout: float = 30.0,
        authenticator: Authenticator | None = None,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + SEARCH_PATH
        self._breaker = breaker
        self._timeout = timeout
        self._auth = authenticator or NoAuthenticator()

    async def search(self, merch_nbr: str, start: date, end: date) -> NorthPage:
        """One query of an inclusive date window."""
        permit = None
        if self._breaker is not None:
            try:
                permit = self._breaker.acquire()
            except CircuitOpenError as exc:
                raise DisputesUnavailable("reporting circuit is open") from exc
        healthy: bool | None = None
        try:
            page = await self._search(merch_nbr, start, end)
            healthy = True
            return page
        except _Failure as exc:
            healthy = exc.healthy
            raise
        finally:
            record_health(permit, healthy)

    async def _search(self, merch_nbr: str, start: date, end: date) -> NorthPage:
        query = {"findBy": f"byMerchant:{merch_nbr},fromDate:{start.isoformat()},toDate:{end.isoformat()}"}
        headers = {**self._auth.headers("GET", self._url, query), "Accept": "application/json"}
        try:
            body = await get_bounded(
                self._session,
                self._url,
                params=query,
                headers=headers,
                budget=self._timeout,
                max_body=MAX_BODY,
                what="North dispute report",
            )
        except UpstreamFailure as exc:
            raise _Failure(str(exc), healthy=exc.healthy) from None
        try:
            envelope = _decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise _Failure("malformed dispute report", healthy=False) from None
        if envelope.status != "success" or envelope.data is None:
            raise _Failure(f"dispute report status is {envelope.status!r}", healthy=True)
        data = envelope.data
        return NorthPage(
            disputes=data.disputes, total=data.meta.total_disputes, count=data.meta.current_result_count
        )

    async def fetch_window(
        self, merch_nbr: str, start: date, end: date, *, max_queries: int = 200
    ) -> WindowResult:
        """Every dispute of the window, splitting it while North answers partial pages."""
        found: dict[str, NorthDispute] = {}
        complete = True
        queries = 0
        pending = [(start, end)]
        while pending:
            window = pending.pop()
            if queries >= max_queries:
                complete = False
                break
            page = await self.search(merch_nbr, *window)
            queries += 1
            for dispute in page.disputes:
                found[dispute.case_number] = dispute
            if page.complete:
                continue
            halves = split_window(*window)
            if halves is None:
                complete = False
                _log.error(
                    "north_partial_page_single_day",
                    day=window[0].isoformat(),
                    total=page.total,
                    count=page.count,
                )
                continue
            pending.extend(reversed(halves))
        return WindowResult(disputes=list(found.values()), complete=complete, queries=queries)


class _Failure(DisputesUnavailable):
    def __init__(self, message: str, *, healthy: bool) -> None:
        super().__init__(message)
        self.healthy = healthy
