"""State records of the simulator: merchants, instruments, transactions, BRICs, TACs, the ledger.

Pure data (slotted dataclasses); the rules that change them live in `engine.py`. Card and account
numbers are held in memory only, never serialised: `LedgerEntry.to_json` is masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

MerchantKey = tuple[str, str, str, str]  # CUST_NBR, MERCH_NBR, DBA_NBR, TERMINAL_NBR

DEFAULT_MERCHANT_KEY: Final[MerchantKey] = ("9001", "900300", "2", "77")
DEFAULT_MAC: Final = "sim-dev-mac-not-a-secret"  # placeholder dev value, not an EPX secret


class SimClock:
    """The simulated clock: real UTC time plus an offset, or frozen at a set instant."""

    __slots__ = ("_frozen_at", "_offset")

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def now(self) -> datetime:
        if self._frozen_at is not None:
            return self._frozen_at
        return datetime.now(UTC) + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def set(self, at: datetime) -> None:
        at = _aware(at)
        if self._frozen_at is not None:
            self._frozen_at = at
        else:
            self._offset = at - datetime.now(UTC)

    def advance(self, delta: timedelta) -> None:
        if self._frozen_at is not None:
            self._frozen_at += delta
        else:
            self._offset += delta

    def freeze(self, frozen: bool) -> None:
        if frozen and self._frozen_at is None:
            self._frozen_at = self.now()
        elif not frozen and self._frozen_at is not None:
            self._offset = self._frozen_at - datetime.now(UTC)
            self._frozen_at = None

    def reset(self) -> None:
        self._offset = timedelta(0)
        self._frozen_at = None


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("naive datetime: the simulated clock is UTC")
    return at.astimezone(UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def add_months(at: datetime, months: int) -> datetime:
    month_index = at.month - 1 + months
    year = at.year + month_index // 12
    month = month_index % 12 + 1
    day = min(at.day, _days_in_month(year, month))
    return at.replace(year=year, month=month, day=day)


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (nxt - timedelta(days=1)).day


def cents_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(slots=True)
class Settings:
    """Runtime switches; the CLI sets the defaults, `POST /_sim/settings` changes them."""

    duplicate_mode: str = "reject"  # reject | replay
    storage_code: str = "00"  # 00 | 85
    allow_any_pan: bool = False
    batch_cutoff: time | None = time(0, 0)
    auth_lapse_days: int = 30
    single_capture: bool = False
    response_format: str = "xml"  # xml | kv | detail
    strict: bool = False
    ach_return_delay_days: int = 2
    tac_lifetime_s: float = 900.0
    tac_single_use: bool = True
    redirect_mode: str = "post"  # post | 303
    north_page_cap: int | None = None
    north_status: str = "success"
    latency_ms: float = 0.0
    hang_max_s: float = 600.0
    oversize_bytes: int = 2_000_000
    rate_limit_rps: float | None = None
    rate_limit_mode: str = "queue"  # queue | 503

    def to_json(self) -> dict[str, Any]:
        return {
            "duplicate_mode": self.duplicate_mode,
            "storage_code": self.storage_code,
            "allow_any_pan": self.allow_any_pan,
            "batch_cutoff": None if self.batch_cutoff is None else self.batch_cutoff.strftime("%H:%M"),
            "auth_lapse_days": self.auth_lapse_days,
            "single_capture": self.single_capture,
            "response_format": self.response_format,
            "strict": self.strict,
            "ach_return_delay_days": self.ach_return_delay_days,
            "tac_lifetime_s": self.tac_lifetime_s,
            "tac_single_use": self.tac_single_use,
            "redirect_mode": self.redirect_mode,
            "north_page_cap": self.north_page_cap,
            "north_status": self.north_status,
            "latency_ms": self.latency_ms,
            "hang_max_s": self.hang_max_s,
            "oversize_bytes": self.oversize_bytes,
            "rate_limit_rps": self.rate_limit_rps,
            "rate_limit_mode": self.rate_limit_mode,
        }


@dataclass(slots=True)
class Merchant:
    key: MerchantKey
    mac: str
    response_format: str | None = None
    single_capture: bool | None = None

    @property
    def merch_nbr(self) -> str:
        return self.key[1]

    def to_json(self) -> dict[str, Any]:
        c, m, d, t = self.key
        return {
            "cust_nbr": c,
            "merch_nbr": m,
            "dba_nbr": d,
            "terminal_nbr": t,
            "response_format": self.response_format,
            "single_capture": self.single_capture,
            "mac": "[REDACTED]",
        }


@dataclass(slots=True, eq=False)
class Card:
    pan: str
    exp: str  # YYMM
    brand: str
    address: str = ""
    zip_code: str = ""

    @property
    def last4(self) -> str:
        return self.pan[-4:]

    @property
    def masked(self) -> str:
        return "*" * (len(self.pan) - 4) + self.pan[-4:]


@dataclass(slots=True, eq=False)
class BankAccount:
    account: str
    routing: str
    account_type: str  # checking | savings
    first_name: str = ""
    last_name: str = ""

    @property
    def last4(self) -> str:
        return self.account[-4:]

    @property
    def masked(self) -> str:
        return "*" * max(0, len(self.account) - 4) + self.account[-4:]


Instrument = Card | BankAccount


@dataclass(slots=True, eq=False)
class Txn:
    """One processed transaction (its TRAN_NBR is consumed)."""

    seq: int
    merchant: MerchantKey
    tran_nbr: int
    tran_type: str
    op: str
    amount: int  # cents
    auth_resp: str
    auth_resp_text: str
    auth_guid: str | None
    auth_code: str
    batch_id: str
    processed_at: datetime
    instrument: Instrument | None = None
    parent: Txn | None = None
    root: Txn | None = None
    sec_code: str = ""
    ntid: str = ""
    captured: int = 0
    capture_count: int = 0
    refunded: int = 0  # on a sale/auth/debit root: refunded or credited total
    voided: bool = False
    settled: bool = False
    settled_at: datetime | None = None
    ach_settle_date: date | None = None
    avs: str = ""
    cvv: str = ""
    echo_amount: int | None = None  # AMOUNT as sent (validated, so cents_text() gives it back)
    user_data: tuple[tuple[str, str], ...] | None = None

    @property
    def approved(self) -> bool:
        return self.auth_resp in ("00", "85")


@dataclass(slots=True, eq=False)
class Bric:
    guid: str
    kind: str  # financial | storage
    method: str  # card | ach
    account_type: str | None  # checking | savings for ACH
    merchant: MerchantKey
    txn: Txn | None
    instrument: Instrument
    created_at: datetime
    expires_at: datetime | None


@dataclass(slots=True, eq=False)
class Tac:
    value: str
    merchant: MerchantKey
    tran_nbr: str
    amount: str
    tran_group: str
    redirect_url: str
    expires_at: datetime
    used: bool = False


@dataclass(slots=True, eq=False)
class AchReturn:
    txn: Txn
    return_date: date
    return_code: str | None  # R01..; None for a NOC
    change_code: str | None = None  # C01..
    corrected_data: str | None = None
    injected: bool = False

    def to_json(self) -> dict[str, Any]:
        inst = self.txn.instrument
        out: dict[str, Any] = {
            "tranNbr": self.txn.tran_nbr,
            "authGuid": self.txn.auth_guid,
            "returnCode": self.return_code,
            "returnDate": self.return_date.isoformat(),
            "amount": cents_text(self.txn.amount),
            "accountLast4": inst.last4 if inst is not None else None,
            "secCode": self.txn.sec_code or None,
            "tranType": self.txn.tran_type,
        }
        if self.change_code is not None:
            out["changeCode"] = self.change_code
            out["correctedData"] = self.corrected_data
        return out


@dataclass(slots=True, eq=False)
class Dispute:
    case_number: str
    merch_nbr: str
    tran_nbr: int
    status: str
    dispute_date: date
    chargeback_date: date
    transaction_date: date
    dispute_type: str
    card_brand: str
    last4: str
    reason_code: str
    reason_description: str
    transaction_amount: int
    chargeback_amount: int
    created_seq: int = 0

    def to_json(self) -> dict[str, Any]:
        """North's shape (epx-protocol.md §8.3); amounts are rendered as JSON numbers by the caller."""
        return {
            "caseNumber": self.case_number,
            "disputeDate": self.dispute_date.isoformat(),
            "chargebackDate": self.chargeback_date.isoformat(),
            "transactionDate": self.transaction_date.isoformat(),
            "disputeType": self.dispute_type,
            "status": self.status,
            "cardBrand": self.card_brand,
            "cardNumberLastFour": self.last4,
            "transactionNumber": str(self.tran_nbr),
            "reasonCode": self.reason_code,
            "reasonDescription": self.reason_description,
            "transactionAmount": self.transaction_amount,
            "chargebackAmount": self.chargeback_amount,
        }


@dataclass(slots=True, eq=False)
class LedgerEntry:
    """One request as the simulator saw it; masked (never a PAN, CVV or account number)."""

    seq: int
    endpoint: str
    received_at: datetime  # simulated clock
    wall_received_at: float  # real time (epoch seconds)
    merchant: str | None = None  # MERCH_NBR
    tran_nbr: int | None = None
    tran_type: str | None = None
    amount: str | None = None
    auth_resp: str | None = None
    auth_resp_text: str | None = None
    auth_guid: str | None = None
    processed: bool = False
    duplicate: bool = False
    fault: str | None = None
    fault_action: str | None = None
    traceparent: str | None = None
    http_status: int | None = None
    responded_at: float | None = None  # real time (epoch seconds)
    client_gone: bool = False
    masked_account: str | None = None
    outcome: str = ""
    extra: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "endpoint": self.endpoint,
            "merchant": self.merchant,
            "tran_nbr": self.tran_nbr,
            "tran_type": self.tran_type,
            "amount": self.amount,
            "auth_resp": self.auth_resp,
            "auth_resp_text": self.auth_resp_text,
            "auth_guid": self.auth_guid,
            "processed": self.processed,
            "duplicate": self.duplicate,
            "fault": self.fault,
            "fault_action": self.fault_action,
            "traceparent": self.traceparent,
            "http_status": self.http_status,
            "outcome": self.outcome,
            "masked_account": self.masked_account,
            "client_gone": self.client_gone,
            "received_at": iso(self.received_at),
            "wall_received_at": iso(datetime.fromtimestamp(self.wall_received_at, UTC)),
            "responded_at": None
            if self.responded_at is None
            else iso(datetime.fromtimestamp(self.responded_at, UTC)),
            "latency_ms": None
            if self.responded_at is None
            else round((self.responded_at - self.wall_received_at) * 1000, 3),
            **(self.extra or {}),
        }
