"""The simulated gateway's rules: validation, card checks, BRICs, follow-ons, batches, ACH, TACs.

Synchronous and free of I/O: the HTTP layer (`app.py`) calls it, and unit tests drive it directly
with a frozen `SimClock`. One seeded RNG draws BRICs, auth codes, NTIDs, TACs and case numbers, so a
run with the same seed and the same request sequence gives the same values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import sys
import time as _time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from paycore.epx_sim import calendar
from paycore.epx_sim.model import (
    DEFAULT_MAC,
    DEFAULT_MERCHANT_KEY,
    AchReturn,
    BankAccount,
    Bric,
    Card,
    Dispute,
    Instrument,
    LedgerEntry,
    Merchant,
    MerchantKey,
    Settings,
    SimClock,
    Tac,
    Txn,
    add_months,
    cents_text,
)
from paycore.epx_sim.wire import Fields

# --- reference data (epx-protocol.md §2.1, §3.4, §9) -----------------------------------------------

TEST_PANS: Final = frozenset(
    {
        "4111111111111111",
        "4788250000028291",
        "5499740000000057",
        "5454545454545454",
        "5555555555554444",
        "371449635398431",
        "378282246310005",
        "6011000991001201",
        "6011111111111117",
        "4000000000000002",
    }
)
DECLINE_PAN: Final = "4000000000000002"
AMOUNT_TRIGGERS: Final = {105: "05", 120: "51", 154: "54", 182: "82", 191: "91"}
RESPONSE_TEXTS: Final = {
    "00": "APPROVAL",
    "85": "NO REASON TO DECLINE",
    "05": "DO NOT HONOR",
    "51": "INSUFF FUNDS",
    "61": "EXCEEDS WITHDRAWAL LIMIT",
    "65": "EXCEEDS FREQUENCY LIMIT",
    "91": "ISSUER UNAVAILABLE",
    "96": "SYSTEM ERROR",
    "14": "INVALID CARD NUMBER",
    "41": "LOST CARD",
    "43": "STOLEN CARD",
    "54": "EXPIRED CARD",
    "55": "INCORRECT PIN",
    "57": "TRANSACTION NOT PERMITTED",
    "82": "CVV ERROR",
    "12": "INVALID TRANSACTION",
    "58": "TAC VALIDATION FAILED",
}
# cents of a 1.CC amount that return that code (simulator convention; §9 triggers win)
CENT_CODES: Final = frozenset(RESPONSE_TEXTS) - {"00"}
NOC_CORRECTIONS: Final = {
    "C01": "1234567890",
    "C02": "021000021",
    "C03": "021000021/1234567890",
    "C05": "32",
    "C06": "1234567890/32",
    "C07": "021000021/1234567890/32",
}


@dataclass(frozen=True, slots=True)
class TypeSpec:
    op: str
    method: str  # card | ach
    amount: str  # positive | zero | zero_optional | optional
    needs_bric: bool = False
    account_type: str | None = None


def _ach(op: str, amount: str, needs_bric: bool = False) -> tuple[TypeSpec, TypeSpec]:
    return (
        TypeSpec(op, "ach", amount, needs_bric, "checking"),
        TypeSpec(op, "ach", amount, needs_bric, "savings"),
    )


_CKC0, _CKS0 = _ach("prenote", "zero")
_CKC1, _CKS1 = _ach("prenote", "zero")
_CKC2, _CKS2 = _ach("debit", "positive", True)
_CKC3, _CKS3 = _ach("credit", "positive", True)
_CKCX, _CKSX = _ach("void", "positive", True)

TRAN_TYPES: Final[dict[str, TypeSpec]] = {
    "CCE1": TypeSpec("sale", "card", "positive"),
    "CCE2": TypeSpec("auth", "card", "positive"),
    "CCE4": TypeSpec("capture", "card", "positive", True),
    "CCE9": TypeSpec("refund", "card", "positive", True),
    "CCEX": TypeSpec("void", "card", "positive", True),
    "CCE7": TypeSpec("reversal", "card", "optional", True),
    "CCE8": TypeSpec("storage", "card", "zero_optional"),
    "CCE0": TypeSpec("verify", "card", "zero"),
    "DB0P": TypeSpec("sale", "card", "positive"),
    "DB0S": TypeSpec("refund", "card", "positive", True),
    "DB0V": TypeSpec("void", "card", "positive", True),
    "CKC0": _CKC0,
    "CKS0": _CKS0,
    "CKC1": _CKC1,
    "CKS1": _CKS1,
    "CKC2": _CKC2,
    "CKS2": _CKS2,
    "CKC3": _CKC3,
    "CKS3": _CKS3,
    "CKCX": _CKCX,
    "CKSX": _CKSX,
    "CKC8": TypeSpec("storage", "ach", "zero_optional", False, "checking"),
}
# Types on which strict mode requires INDUSTRY_TYPE=E (§2.2).
_INDUSTRY_E: Final = frozenset({"CCE1", "CCE2", "CCE8", "CKC0", "CKS0", "CKC2", "CKS2"})
_BATCHED_OPS: Final = frozenset({"sale", "auth", "capture", "refund", "debit", "credit"})
BROWSER_POST_FIELDS: Final = frozenset(
    {
        "TAC",
        "CUST_NBR",
        "MERCH_NBR",
        "DBA_NBR",
        "TERMINAL_NBR",
        "TRAN_NBR",
        "AMOUNT",
        "TRAN_CODE",
        "INDUSTRY_TYPE",
        "ACCOUNT_NBR",
        "EXP_DATE",
        "CVV",
        "ADDRESS",
        "ZIP_CODE",
        "FIRST_NAME",
        "LAST_NAME",
        "USER_DATA_1",
        "USER_DATA_2",
        "USER_DATA_3",
        "REDIRECT_URL",
        "REDIRECT_URL_DECLINE",
        "REDIRECT_URL_ERROR",
    }
)
TRAN_GROUPS: Final = {"SALE": "CCE1", "AUTH": "CCE2", "STORAGE": "CCE8"}
_BRIC_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_AMOUNT_RE: Final = re.compile(r"(0|[1-9][0-9]{0,9})\.([0-9]{2})")
_ALNUM_UPPER: Final = frozenset(_BRIC_ALPHABET)
_ECHO_FIELDS: Final = ("USER_DATA_1", "USER_DATA_2", "USER_DATA_3")


@dataclass(slots=True)
class _Req:
    """One validated Server Post request on its way through the rules."""

    merchant: Merchant
    f: dict[str, str]
    spec: TypeSpec
    tran_type: str
    tran_nbr: int
    amount: int  # cents; 0 when AMOUNT was not sent
    amount_given: bool
    now: datetime


class Reject(Exception):
    """A request the gateway refuses without recording a transaction (AUTH_RESP 12)."""

    def __init__(self, text: str, code: str = "12") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(slots=True)
class PostOutcome:
    http_status: int
    fields: Fields
    fmt: str
    merchant: Merchant | None
    tran_type: str
    tran_nbr_raw: str
    amount_raw: str
    processed: bool = False
    duplicate: bool = False
    txn: Txn | None = None
    outcome: str = ""  # approved | declined | error | duplicate | unauthorized

    @property
    def auth_resp(self) -> str | None:
        for k, v in self.fields:
            if k == "AUTH_RESP":
                return v
        return None

    def field(self, name: str) -> str | None:
        for k, v in self.fields:
            if k == name:
                return v
        return None


@dataclass(slots=True)
class KeyExchangeOutcome:
    http_status: int
    tac: Tac | None
    error: str = ""
    merchant: Merchant | None = None


@dataclass(slots=True)
class BrowserPostOutcome:
    kind: str  # redirect | form | error_page
    target: str = ""
    fields: Fields | None = None
    post: PostOutcome | None = None
    merchant: Merchant | None = None
    tran_group: str = ""
    hidden: Fields | None = None
    reason: str = ""


# --- helpers ---------------------------------------------------------------------------------------


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def aba_ok(routing: str) -> bool:
    if len(routing) != 9 or not routing.isdigit():
        return False
    d = [ord(c) - 48 for c in routing]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8])) % 10 == 0


def card_brand(pan: str) -> str:
    if pan.startswith("4"):
        return "V"
    if pan[:2] in ("34", "37"):
        return "A"
    two = int(pan[:2])
    four = int(pan[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "M"
    if pan.startswith(("6011", "65")) or 644 <= int(pan[:3]) <= 649:
        return "D"
    if pan.startswith("35"):
        return "J"
    return "V"


def parse_amount(text: str) -> int | None:
    m = _AMOUNT_RE.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * 100 + int(m.group(2))


def redirect_mac(secret: str, fields: dict[str, str]) -> str:
    """epx-protocol.md §6.5 candidate scheme."""
    message = "".join(
        fields.get(k, "")
        for k in ("CUST_NBR", "MERCH_NBR", "AUTH_GUID", "AUTH_RESP", "AMOUNT", "TRAN_NBR", "TRAN_GROUP")
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _exp_ok(exp: str) -> bool:
    return len(exp) == 4 and exp.isdigit() and 1 <= int(exp[2:]) <= 12


def _expired(exp: str, now: datetime) -> bool:
    return (2000 + int(exp[:2])) * 12 + int(exp[2:]) < now.year * 12 + now.month


def response_fields(txn: Txn) -> Fields:
    """The Server Post answer of a processed transaction (rebuilt for duplicate replays)."""
    inst = txn.instrument
    fields: Fields = []
    if txn.auth_guid:
        fields.append(("AUTH_GUID", txn.auth_guid))
    fields.append(("AUTH_RESP", txn.auth_resp))
    fields.append(("AUTH_CODE", txn.auth_code))
    fields.append(("AUTH_RESP_TEXT", txn.auth_resp_text))
    if isinstance(inst, Card):
        fields.append(("AUTH_CARD_TYPE", inst.brand))
    elif isinstance(inst, BankAccount):
        fields.append(("AUTH_CARD_TYPE", ""))
    if txn.avs:
        fields.append(("AUTH_AVS", txn.avs))
        fields.append(("AUTH_CVV2", txn.cvv))
    if txn.approved and txn.amount > 0:
        fields.append(("AUTH_AMOUNT", cents_text(txn.amount)))
    if inst is not None:
        fields.append(("AUTH_MASKED_ACCOUNT_NBR", inst.masked))
    if txn.ntid:
        fields.append(("AUTH_TRAN_IDENT", txn.ntid))
    fields.append(("TRAN_NBR", str(txn.tran_nbr)))
    fields.append(("BATCH_ID", txn.batch_id))
    if txn.echo_amount is not None:
        fields.append(("AMOUNT", cents_text(txn.echo_amount)))
    if txn.user_data:
        fields.extend(txn.user_data)
    return fields


class Engine:
    """All simulated gateway state, in memory."""

    def __init__(
        self,
        settings: Settings,
        *,
        seed: int = 1,
        clock: SimClock | None = None,
        default_mac: str = DEFAULT_MAC,
        ledger_max: int = 1_000_000,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.clock = clock or SimClock()
        self.default_mac = default_mac
        self.ledger_max = ledger_max
        self.base_merchants: list[Merchant] = []  # from the command line
        self.extra_merchants: list[Merchant] = []  # added through the control API
        self.clock_start: datetime | None = None
        self.clock_frozen = False
        self._init_state(seed)

    # --- lifecycle ---------------------------------------------------------------------------------

    def _init_state(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.merchants: dict[MerchantKey, Merchant] = {}
        self._by_mac: dict[str, Merchant] = {}
        self.txns: dict[MerchantKey, dict[int, Txn]] = {}
        self.brics: dict[str, Bric] = {}
        self.tacs: dict[str, Tac] = {}
        self.open_batch: list[Txn] = []
        self.returns: list[AchReturn] = []
        # (routing, account) returned R02 "account closed": later entries are refused at once (05)
        self.closed_accounts: set[tuple[str, str]] = set()
        self.disputes: dict[str, Dispute] = {}
        self.ledger: deque[LedgerEntry] = deque(maxlen=self.ledger_max)
        self.redirects: deque[dict[str, Any]] = deque(maxlen=1000)
        self._cards: dict[tuple[str, str, str, str], Card] = {}
        self.batches_closed = 0
        self.last_close = self.clock.now()
        self._txn_seq = 0
        self._ledger_seq = 0
        self.add_merchant(Merchant(DEFAULT_MERCHANT_KEY, self.default_mac))
        for m in (*self.base_merchants, *self.extra_merchants):
            self.add_merchant(Merchant(m.key, m.mac, m.response_format, m.single_capture))

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        self.reset_clock()
        self._init_state(self.seed)

    def reset_clock(self) -> None:
        """Back to the start configuration: real time, or `--clock-start` / `--frozen-clock`."""
        self.clock.reset()
        if self.clock_frozen:
            self.clock.freeze(True)
        if self.clock_start is not None:
            self.clock.set(self.clock_start)
        self.clock_changed()

    def add_merchant(self, merchant: Merchant) -> None:
        old = self.merchants.get(merchant.key)
        if old is not None and self._by_mac.get(old.mac) is old:
            del self._by_mac[old.mac]
        self.merchants[merchant.key] = merchant
        self._by_mac.setdefault(merchant.mac, merchant)

    # --- random values -------------------------------------------------------------------------

    def _new_bric_value(self) -> str:
        while True:
            guid = "09" + "".join(self.rng.choices(_BRIC_ALPHABET, k=18))
            if guid not in self.brics:
                return guid

    def _auth_code(self) -> str:
        return f"{self.rng.randrange(1_000_000):06d}"

    def _ntid(self) -> str:
        return f"{self.rng.randrange(10**14, 10**15)}"

    # --- time-driven events --------------------------------------------------------------------

    def tick(self, now: datetime) -> None:
        """Apply the automatic batch close for every cut-off passed since the last close."""
        cutoff = self.settings.batch_cutoff
        if cutoff is None:
            return
        latest = datetime.combine(now.date(), cutoff, tzinfo=UTC)
        if latest > now:
            latest -= timedelta(days=1)
        if latest > self.last_close:
            self._settle(lambda t: t.processed_at <= latest, latest)
            self.last_close = latest

    def close_batch(self) -> dict[str, Any]:
        now = self.clock.now()
        self.tick(now)
        count = self._settle(lambda t: True, now)
        self.last_close = now
        return {"settled": count, "closed_at": now.isoformat(), "batches_closed": self.batches_closed}

    def _settle(self, due: Callable[[Txn], bool], at: datetime) -> int:
        keep: list[Txn] = []
        settled = 0
        for txn in self.open_batch:
            if txn.voided:
                continue
            if due(txn):
                txn.settled = True
                txn.settled_at = at
                settled += 1
            else:
                keep.append(txn)
        self.open_batch = keep
        self.batches_closed += 1
        return settled

    def clock_changed(self) -> None:
        now = self.clock.now()
        self.last_close = min(self.last_close, now)

    # --- ledger --------------------------------------------------------------------------------

    def new_ledger_entry(self, endpoint: str, traceparent: str | None) -> LedgerEntry:
        self._ledger_seq += 1
        entry = LedgerEntry(
            seq=self._ledger_seq,
            endpoint=endpoint,
            received_at=self.clock.now(),
            wall_received_at=_time.time(),
            traceparent=traceparent,
        )
        self.ledger.append(entry)
        return entry

    # --- Server Post ---------------------------------------------------------------------------

    def server_post(self, f: dict[str, str]) -> PostOutcome:
        key = (f.get("CUST_NBR", ""), f.get("MERCH_NBR", ""), f.get("DBA_NBR", ""), f.get("TERMINAL_NBR", ""))
        merchant = self.merchants.get(key)
        tran_type = f.get("TRAN_TYPE", "")
        if merchant is None:
            return PostOutcome(
                401,
                [],
                "xml",
                None,
                tran_type,
                f.get("TRAN_NBR", ""),
                f.get("AMOUNT", ""),
                outcome="unauthorized",
            )
        return self.post_for_merchant(merchant, f)

    def post_for_merchant(self, merchant: Merchant, f: dict[str, str]) -> PostOutcome:
        now = self.clock.now()
        self.tick(now)
        tran_type = f.get("TRAN_TYPE", "")
        tn_raw = f.get("TRAN_NBR", "")
        amt_raw = f.get("AMOUNT", "")
        fmt = merchant.response_format or self.settings.response_format
        out = PostOutcome(200, [], fmt, merchant, tran_type, tn_raw, amt_raw)
        try:
            spec, tran_nbr, amount = self._validate(f, tran_type)
        except Reject as r:
            out.fields = self._error_fields(r, f)
            out.outcome = "error"
            return out
        book = self.txns.get(merchant.key)
        if book is None:
            book = self.txns[merchant.key] = {}
        existing = book.get(tran_nbr)
        if existing is not None:
            out.duplicate = True
            out.outcome = "duplicate"
            if self.settings.duplicate_mode == "replay":
                out.fields = response_fields(existing)
            else:
                out.fields = self._error_fields(
                    Reject(f"Duplicate TRAN_NBR {tran_nbr}", "94"),
                    f,
                )
            return out
        try:
            txn = self._execute(
                _Req(merchant, f, spec, tran_type, tran_nbr, amount or 0, amount is not None, now)
            )
        except Reject as r:
            out.fields = self._error_fields(r, f)
            out.outcome = "error"
            return out
        book[tran_nbr] = txn
        if txn.op in _BATCHED_OPS and txn.approved:
            self.open_batch.append(txn)
        out.fields = response_fields(txn)
        out.txn = txn
        out.processed = True
        out.outcome = "approved" if txn.approved else "declined"
        return out

    def _error_fields(self, r: Reject, f: dict[str, str]) -> Fields:
        fields: Fields = [("AUTH_RESP", r.code), ("AUTH_RESP_TEXT", r.text)]
        for name in ("TRAN_NBR", "BATCH_ID", "AMOUNT"):
            value = f.get(name)
            if value is not None:
                fields.append((name, value))
        return fields

    def _validate(self, f: dict[str, str], tran_type: str) -> tuple[TypeSpec, int, int | None]:
        strict = self.settings.strict
        if "AUTH_GUID" in f:
            raise Reject("Invalid AUTH_GUID[REQUEST_FIELD]")
        if strict and "MAC" in f:
            raise Reject("Invalid MAC[NOT_ALLOWED]")
        spec = TRAN_TYPES.get(tran_type)
        if spec is None:
            raise Reject("Invalid TRAN_TYPE")
        tn = f.get("TRAN_NBR")
        if tn is None or tn == "":
            raise Reject("Missing required field TRAN_NBR")
        if len(tn) > 10 or not tn.isdigit():
            raise Reject("Invalid TRAN_NBR[LEN]")
        batch = f.get("BATCH_ID")
        if batch is None or batch == "":
            raise Reject("Missing required field BATCH_ID")
        if len(batch) > 8 or not batch.isdigit():
            raise Reject("Invalid BATCH_ID[LEN]")
        amount = self._validate_amount(f.get("AMOUNT"), spec.amount)
        guid = f.get("ORIG_AUTH_GUID")
        if guid is not None:
            if not 19 <= len(guid) <= 20:
                raise Reject("Invalid AUTH_GUID[LEN]")
            if not _ALNUM_UPPER.issuperset(guid):
                raise Reject("Invalid AUTH_GUID[FORMAT]")
        elif spec.needs_bric:
            raise Reject("Missing required field ORIG_AUTH_GUID")
        self._validate_optional(f, tran_type, spec, strict)
        return spec, int(tn), amount

    @staticmethod
    def _validate_amount(text: str | None, rule: str) -> int | None:
        if text is None or text == "":
            if rule in ("positive", "zero"):
                raise Reject("Missing required field AMOUNT")
            return None
        cents = parse_amount(text)
        if cents is None:
            raise Reject("Invalid AMOUNT format")
        if rule == "positive" and cents == 0:
            raise Reject("Invalid AMOUNT[ZERO]")
        if rule in ("zero", "zero_optional") and cents != 0:
            raise Reject("Invalid AMOUNT[NONZERO]")
        return cents

    def _validate_optional(self, f: dict[str, str], tran_type: str, spec: TypeSpec, strict: bool) -> None:
        g = f.get
        acct = g("ACCOUNT_NBR")
        if acct is not None:
            lo, hi = (13, 19) if spec.method == "card" else (4, 17)
            if not (lo <= len(acct) <= hi and acct.isdigit()):
                raise Reject("Invalid ACCOUNT_NBR[LEN]")
        exp = g("EXP_DATE")
        if exp is not None and not _exp_ok(exp):
            raise Reject("Invalid EXP_DATE[FORMAT]")
        cvv = g("CVV2")
        if cvv is not None and not (3 <= len(cvv) <= 4 and cvv.isdigit()):
            raise Reject("Invalid CVV2[LEN]")
        routing = g("ROUTING_NBR")
        if routing is not None and not (len(routing) == 9 and routing.isdigit()):
            raise Reject("Invalid ROUTING_NBR[LEN]")
        cem = g("CARD_ENT_METH")
        if cem is not None and cem not in ("E", "Z", "6", "X", "M"):
            raise Reject("Invalid CARD_ENT_METH[VALUE]")
        industry = g("INDUSTRY_TYPE")
        if industry is not None and industry not in ("E", "R"):
            raise Reject("Invalid INDUSTRY_TYPE[VALUE]")
        if strict and tran_type in _INDUSTRY_E and industry != "E":
            raise Reject("Missing required field INDUSTRY_TYPE")
        aci = g("ACI_EXT")
        if aci is not None and aci not in ("RB", "IP", "CA"):
            raise Reject("Invalid ACI_EXT[VALUE]")
        cof = g("COF_PERIOD")
        if cof is not None and cof not in ("0", "13", "18", "24"):
            raise Reject("Invalid COF_PERIOD[VALUE]")
        sec = g("STD_ENTRY_CLASS")
        if sec is not None and sec not in ("PPD", "CCD", "WEB", "TEL"):
            raise Reject("Invalid STD_ENTRY_CLASS[VALUE]")
        if spec.method == "ach" and spec.op in ("prenote", "debit") and not sec:
            raise Reject("Missing required field STD_ENTRY_CLASS")
        ntid = g("ORIG_AUTH_TRAN_IDENT")
        if ntid is not None and len(ntid) > 15:
            raise Reject("Invalid ORIG_AUTH_TRAN_IDENT[LEN]")
        if strict and aci == "RB" and spec.op in ("sale", "auth") and not ntid:
            raise Reject("Missing required field ORIG_AUTH_TRAN_IDENT")
        orig_amount = g("ORIG_AUTH_AMOUNT")
        if orig_amount is not None and parse_amount(orig_amount) is None:
            raise Reject("Invalid ORIG_AUTH_AMOUNT format")
        for name, limit in (("FIRST_NAME", 50), ("LAST_NAME", 50), ("ADDRESS", 100), ("ZIP_CODE", 10)):
            value = g(name)
            if value is not None and len(value) > limit:
                raise Reject(f"Invalid {name}[LEN]")
        state = g("STATE")
        if state is not None and state != "" and not (len(state) == 2 and state.isalpha()):
            raise Reject("Invalid STATE[LEN]")
        local_date = g("LOCAL_DATE")
        if local_date is not None and not (len(local_date) == 6 and local_date.isdigit()):
            raise Reject("Invalid LOCAL_DATE[FORMAT]")
        local_time = g("LOCAL_TIME")
        if local_time is not None and not (len(local_time) == 6 and local_time.isdigit()):
            raise Reject("Invalid LOCAL_TIME[FORMAT]")
        if strict:
            if local_date is None:
                raise Reject("Missing required field LOCAL_DATE")
            if local_time is None:
                raise Reject("Missing required field LOCAL_TIME")
            if g("ORIG_AUTH_GUID") is not None and cvv is not None:
                raise Reject("Invalid CVV2[TOKEN]")

    # --- execution -----------------------------------------------------------------------------

    def _execute(self, r: _Req) -> Txn:
        spec = r.spec
        op = spec.op
        if spec.method == "card":
            if op in ("sale", "auth"):
                return self._card_sale(r)
            if op == "capture":
                return self._capture(r)
            if op == "refund":
                return self._refund(r)
            if op in ("void", "reversal"):
                return self._void(r)
            return self._card_storage(r)
        if op == "prenote":
            return self._ach_prenote(r)
        if op == "storage":
            return self._ach_storage(r)
        if op == "debit":
            return self._ach_debit(r)
        if op == "credit":
            return self._ach_credit(r)
        return self._void(r)

    def _lookup_bric(self, r: _Req) -> Bric:
        bric = self.brics.get(r.f.get("ORIG_AUTH_GUID", ""))
        if bric is None:
            raise Reject("Invalid AUTH_GUID[NOT_FOUND]")
        if bric.merchant != r.merchant.key:
            raise Reject("Invalid AUTH_GUID[MERCHANT]")
        if bric.expires_at is not None and bric.expires_at <= r.now:
            raise Reject("Invalid AUTH_GUID[EXPIRED]")
        return bric

    def _issue_bric(self, r: _Req, txn: Txn, *, kind: str, expires_at: datetime | None) -> str:
        guid = self._new_bric_value()
        inst = txn.instrument
        assert inst is not None
        if isinstance(inst, BankAccount):
            method, account_type = "ach", inst.account_type
        else:
            method, account_type = "card", None
        self.brics[guid] = Bric(
            guid, kind, method, account_type, r.merchant.key, txn, inst, r.now, expires_at
        )
        return guid

    def _new_txn(
        self,
        r: _Req,
        op: str,
        code: str,
        instrument: Instrument | None,
        *,
        amount: int | None = None,
        parent: Txn | None = None,
        root: Txn | None = None,
    ) -> Txn:
        self._txn_seq += 1
        return Txn(
            seq=self._txn_seq,
            merchant=r.merchant.key,
            tran_nbr=r.tran_nbr,
            tran_type=r.tran_type,
            op=op,
            amount=r.amount if amount is None else amount,
            auth_resp=code,
            auth_resp_text=RESPONSE_TEXTS.get(code, "DECLINED"),
            auth_guid=None,
            auth_code="",
            batch_id=sys.intern(r.f.get("BATCH_ID", "")),
            processed_at=r.now,
            instrument=instrument,
            parent=parent,
            root=root,
            sec_code=r.f.get("STD_ENTRY_CLASS", ""),
        )

    def _finish(
        self,
        r: _Req,
        txn: Txn,
        *,
        bric_kind: str = "financial",
        bric_expiry: datetime | None = None,
        avs_cvv: tuple[str, str] | None = None,
    ) -> Txn:
        """Issue the transaction's BRIC and keep what its response needs (built by `response_fields`)."""
        f = r.f
        inst = txn.instrument
        if inst is not None:
            expiry = bric_expiry if bric_kind == "storage" else add_months(r.now, 13)
            txn.auth_guid = self._issue_bric(r, txn, kind=bric_kind, expires_at=expiry)
        if txn.approved:
            txn.auth_code = (
                ("ACH" + self._auth_code()) if isinstance(inst, BankAccount) else self._auth_code()
            )
        if avs_cvv is not None:
            txn.avs, txn.cvv = avs_cvv
        txn.echo_amount = r.amount if r.amount_given else None
        if "USER_DATA_1" in f or "USER_DATA_2" in f or "USER_DATA_3" in f:
            txn.user_data = tuple((name, f[name]) for name in _ECHO_FIELDS if name in f)
        return txn

    # card ----------------------------------------------------------------------------------------

    def _keyed_card(self, f: dict[str, str]) -> Card:
        """The card of a keyed request; identical cards share one (read-only) record."""
        pan = f.get("ACCOUNT_NBR")
        if not pan:
            raise Reject("Missing required field ACCOUNT_NBR")
        exp = f.get("EXP_DATE")
        if not exp:
            raise Reject("Missing required field EXP_DATE")
        cem = f.get("CARD_ENT_METH")
        if cem is not None and cem not in ("E", "6", "M"):
            raise Reject("Invalid CARD_ENT_METH[VALUE]")
        address = f.get("ADDRESS", "")
        zip_code = f.get("ZIP_CODE", "")
        key = (pan, exp, address, zip_code)
        card = self._cards.get(key)
        if card is None:
            if len(self._cards) >= 10_000:
                self._cards.clear()
            card = self._cards[key] = Card(pan, exp, card_brand(pan), address, zip_code)
        return card

    def _card_bric(self, r: _Req) -> Bric:
        bric = self._lookup_bric(r)
        if bric.method != "card":
            raise Reject("Invalid AUTH_GUID[KIND]")
        if bric.kind == "financial":
            txn = bric.txn
            if txn is None or not txn.approved or txn.op in ("void", "reversal", "refund"):
                raise Reject("Invalid AUTH_GUID[KIND]")
        cem = r.f.get("CARD_ENT_METH")
        if cem is not None and cem not in ("Z", "6"):
            raise Reject("Invalid CARD_ENT_METH[VALUE]")
        return bric

    def _card_check(self, card: Card, now: datetime) -> str | None:
        """The decline code for a card's data, or None when the data is good."""
        if not luhn_ok(card.pan):
            return "14"
        if card.pan not in TEST_PANS and not self.settings.allow_any_pan:
            return "14"
        if _expired(card.exp, now):
            return "54"
        return None

    @staticmethod
    def _amount_decision(card: Card, amount: int) -> str:
        trigger = AMOUNT_TRIGGERS.get(amount)
        if trigger is not None:
            return trigger
        if card.pan == DECLINE_PAN:
            return "05"
        if 100 <= amount < 200:
            cents = f"{amount - 100:02d}"
            if cents in CENT_CODES:
                return cents
        return "00"

    @staticmethod
    def _avs_cvv(card: Card, f: dict[str, str]) -> tuple[str, str]:
        zip_code = f.get("ZIP_CODE") or card.zip_code
        address = f.get("ADDRESS") or card.address
        if not zip_code:
            avs = "U"
        elif zip_code[:5] == "99999":
            avs = "N"
        else:
            avs = "Y" if address else "Z"
        cvv = f.get("CVV2")
        if not cvv:
            cvv_result = "P"
        elif cvv == ("1234" if card.brand == "A" else "123"):
            cvv_result = "M"
        else:
            cvv_result = "N"
        return avs, cvv_result

    def _card_sale(self, r: _Req) -> Txn:
        if r.f.get("ORIG_AUTH_GUID"):
            card = self._card_bric(r).instrument
            assert isinstance(card, Card)
        else:
            card = self._keyed_card(r.f)
        code = self._card_check(card, r.now) or self._amount_decision(card, r.amount)
        txn = self._new_txn(r, r.spec.op, code, card)
        txn.ntid = self._ntid() if txn.approved else ""
        return self._finish(r, txn, avs_cvv=self._avs_cvv(card, r.f))

    def _capture(self, r: _Req) -> Txn:
        bric = self._lookup_bric(r)
        auth = bric.txn
        if bric.method != "card" or auth is None or auth.op != "auth":
            raise Reject("Invalid AUTH_GUID[KIND]")
        if not auth.approved:
            raise Reject("Cannot capture a declined authorization")
        if auth.voided:
            raise Reject("Transaction voided")
        if r.now > auth.processed_at + timedelta(days=self.settings.auth_lapse_days):
            raise Reject("Authorization expired")
        single = r.merchant.single_capture
        if single is None:
            single = self.settings.single_capture
        if single and auth.capture_count >= 1:
            raise Reject("Authorization already captured")
        if r.amount > auth.amount - auth.captured:
            raise Reject("Amount exceeds authorized amount")
        auth.captured += r.amount
        auth.capture_count += 1
        txn = self._new_txn(r, "capture", "00", auth.instrument, parent=auth, root=auth)
        return self._finish(r, txn)

    def _refund(self, r: _Req) -> Txn:
        bric = self._lookup_bric(r)
        target = bric.txn
        if bric.method != "card" or target is None or target.op not in ("sale", "capture"):
            raise Reject("Invalid AUTH_GUID[KIND]")
        if not target.approved:
            raise Reject("Cannot refund a declined transaction")
        if target.voided:
            raise Reject("Transaction voided")
        if target.op == "sale":
            root = target
            refundable = root.amount - root.refunded
        else:
            root = target.root or target
            refundable = root.captured - root.refunded
        if r.amount > refundable:
            raise Reject("Amount exceeds refundable amount")
        root.refunded += r.amount
        txn = self._new_txn(r, "refund", "00", target.instrument, parent=target, root=root)
        return self._finish(r, txn)

    def _void(self, r: _Req) -> Txn:
        spec = r.spec
        bric = self._lookup_bric(r)
        target = bric.txn
        if spec.method == "card":
            allowed = ("sale", "auth", "capture", "refund") if spec.op == "void" else ("sale", "auth")
            if bric.method != "card" or target is None or target.op not in allowed:
                raise Reject("Invalid AUTH_GUID[KIND]")
        elif (
            bric.method != "ach"
            or target is None
            or target.op not in ("debit", "credit")
            or bric.account_type != spec.account_type
        ):
            raise Reject("Invalid AUTH_GUID[KIND]")
        if not target.approved:
            raise Reject("Cannot void a declined transaction")
        if target.voided:
            raise Reject("Transaction already voided")
        if target.settled:
            raise Reject("Void refused: batch settled, refund instead")
        if r.amount_given and r.amount != target.amount:
            raise Reject("Partial void not allowed: AMOUNT must equal the original amount")
        if target.op == "auth" and target.captured > 0:
            raise Reject("Authorization has captures: void them first")
        if target.op in ("sale", "debit") and target.refunded > 0:
            raise Reject("Transaction has refunds")
        if target.op == "capture":
            root = target.root or target
            if root.refunded > root.captured - target.amount:
                raise Reject("Transaction has refunds")
            root.captured -= target.amount
            root.capture_count -= 1
        elif target.op in ("refund", "credit") and target.root is not None and target.root is not target:
            target.root.refunded -= target.amount
        target.voided = True
        txn = self._new_txn(
            r, spec.op, "00", target.instrument, amount=target.amount, parent=target, root=target
        )
        return self._finish(r, txn)

    def _card_storage(self, r: _Req) -> Txn:
        f = r.f
        op = r.spec.op
        if f.get("ORIG_AUTH_GUID"):
            source = self._card_bric(r)
            old = source.instrument
            assert isinstance(old, Card)
            if source.kind == "storage" and op == "storage":
                card = old  # an update: the original Storage BRIC stays valid and sees the change
            else:
                card = Card(old.pan, old.exp, old.brand, old.address, old.zip_code)
            if f.get("EXP_DATE"):
                card.exp = f["EXP_DATE"]
            if "ADDRESS" in f:
                card.address = f["ADDRESS"]
            if "ZIP_CODE" in f:
                card.zip_code = f["ZIP_CODE"]
        else:
            shared = self._keyed_card(f)
            card = Card(shared.pan, shared.exp, shared.brand, shared.address, shared.zip_code)
        code = self._card_check(card, r.now) or self.settings.storage_code
        txn = self._new_txn(r, op, code, card, amount=0)
        txn.ntid = self._ntid() if txn.approved else ""
        expiry = None
        cof = f.get("COF_PERIOD", "0")
        if cof not in ("", "0"):
            expiry = add_months(r.now, int(cof))
        kind = "storage" if op == "storage" and txn.approved else "financial"
        return self._finish(r, txn, bric_kind=kind, bric_expiry=expiry, avs_cvv=self._avs_cvv(card, f))

    # ACH -----------------------------------------------------------------------------------------

    @staticmethod
    def _keyed_account(r: _Req) -> BankAccount:
        f = r.f
        account = f.get("ACCOUNT_NBR")
        if not account:
            raise Reject("Missing required field ACCOUNT_NBR")
        routing = f.get("ROUTING_NBR")
        if not routing:
            raise Reject("Missing required field ROUTING_NBR")
        for name in ("FIRST_NAME", "LAST_NAME"):
            if not f.get(name):
                raise Reject(f"Missing required field {name}")
        cem = f.get("CARD_ENT_METH")
        if cem is not None and cem != "X":
            raise Reject("Invalid CARD_ENT_METH[VALUE]")
        return BankAccount(
            account, routing, r.spec.account_type or "checking", f["FIRST_NAME"], f["LAST_NAME"]
        )

    def _ach_bric(self, r: _Req) -> Bric:
        bric = self._lookup_bric(r)
        if bric.method != "ach" or bric.account_type != r.spec.account_type:
            raise Reject("Invalid AUTH_GUID[KIND]")
        if bric.kind == "financial" and (
            bric.txn is None or not bric.txn.approved or bric.txn.op not in ("prenote", "debit", "storage")
        ):
            raise Reject("Invalid AUTH_GUID[KIND]")
        cem = r.f.get("CARD_ENT_METH")
        if cem is not None and cem != "Z":
            raise Reject("Invalid CARD_ENT_METH[VALUE]")
        return bric

    def _ach_account(self, r: _Req) -> BankAccount:
        if r.f.get("ORIG_AUTH_GUID"):
            account = self._ach_bric(r).instrument
            assert isinstance(account, BankAccount)
            return account
        return self._keyed_account(r)

    def _ach_entry(self, r: _Req, op: str, account: BankAccount, *, parent: Txn | None = None) -> Txn:
        closed = (account.routing, account.account) in self.closed_accounts
        code = "14" if not aba_ok(account.routing) else "05" if closed else "00"
        txn = self._new_txn(r, op, code, account, parent=parent, root=parent)
        if code == "00":
            txn.auth_resp_text = "ACH ACCEPTED"
            txn.ach_settle_date = calendar.next_banking_day(r.now.date())
            self._schedule_trigger_return(txn, account)
        else:
            txn.auth_resp_text = "INVALID ROUTING NUMBER" if code == "14" else "ACCOUNT CLOSED"
        return self._finish(r, txn)

    def _note_return(self, ret: AchReturn) -> None:
        self.returns.append(ret)
        account = ret.txn.instrument
        if ret.return_code == "R02" and isinstance(account, BankAccount):
            self.closed_accounts.add((account.routing, account.account))

    def _schedule_trigger_return(self, txn: Txn, account: BankAccount) -> None:
        number = account.account
        if len(number) != 9 or txn.ach_settle_date is None:
            return
        when = calendar.add_banking_days(txn.ach_settle_date, self.settings.ach_return_delay_days)
        nn = number[-2:]
        if number.startswith("9000000") and nn != "00":
            self._note_return(AchReturn(txn, when, f"R{nn}"))
        elif number.startswith("8000000") and nn != "00":
            change = f"C{nn}"
            self.returns.append(AchReturn(txn, when, None, change, NOC_CORRECTIONS.get(change, "")))

    def _ach_prenote(self, r: _Req) -> Txn:
        return self._ach_entry(r, "prenote", self._ach_account(r))

    def _ach_storage(self, r: _Req) -> Txn:
        account = self._ach_account(r)
        code = self.settings.storage_code if aba_ok(account.routing) else "14"
        txn = self._new_txn(r, "storage", code, account, amount=0)
        txn.ntid = self._ntid() if txn.approved else ""
        return self._finish(r, txn, bric_kind="storage" if txn.approved else "financial")

    def _ach_debit(self, r: _Req) -> Txn:
        account = self._ach_bric(r).instrument
        assert isinstance(account, BankAccount)
        return self._ach_entry(r, "debit", account)

    def _ach_credit(self, r: _Req) -> Txn:
        bric = self._lookup_bric(r)
        if bric.method != "ach" or bric.account_type != r.spec.account_type:
            raise Reject("Invalid AUTH_GUID[KIND]")
        account = bric.instrument
        assert isinstance(account, BankAccount)
        parent: Txn | None = None
        if bric.kind == "financial":
            parent = bric.txn
            if parent is None or parent.op != "debit":
                raise Reject("Invalid AUTH_GUID[KIND]")
            if not parent.approved:
                raise Reject("Cannot refund a declined transaction")
            if parent.voided:
                raise Reject("Transaction voided")
            if r.amount > parent.amount - parent.refunded:
                raise Reject("Amount exceeds refundable amount")
            parent.refunded += r.amount
        return self._ach_entry(r, "credit", account, parent=parent)

    # --- Key Exchange and Browser Post --------------------------------------------------------

    def key_exchange(self, f: dict[str, str]) -> KeyExchangeOutcome:
        mac = f.get("MAC", "")
        merchant = self._by_mac.get(mac) if mac else None
        if merchant is None:
            return KeyExchangeOutcome(401, None, "MAC not recognised")
        for name in ("TRAN_NBR", "AMOUNT", "TRAN_GROUP", "REDIRECT_URL"):
            if not f.get(name):
                return KeyExchangeOutcome(400, None, f"Missing required field {name}", merchant)
        tn = f["TRAN_NBR"]
        if len(tn) > 10 or not tn.isdigit():
            return KeyExchangeOutcome(400, None, "Invalid TRAN_NBR[LEN]", merchant)
        group = f["TRAN_GROUP"]
        if group not in TRAN_GROUPS:
            return KeyExchangeOutcome(400, None, "Invalid TRAN_GROUP", merchant)
        cents = parse_amount(f["AMOUNT"])
        if cents is None:
            return KeyExchangeOutcome(400, None, "Invalid AMOUNT format", merchant)
        if (group == "STORAGE") != (cents == 0):
            return KeyExchangeOutcome(400, None, "Invalid AMOUNT[VALUE]", merchant)
        url = f["REDIRECT_URL"]
        if not url.startswith(("http://", "https://")):
            return KeyExchangeOutcome(400, None, "Invalid REDIRECT_URL", merchant)
        now = self.clock.now()
        value = base64.b64encode(self.rng.randbytes(24)).decode()
        tac = Tac(
            value,
            merchant.key,
            tn,
            f["AMOUNT"],
            group,
            url,
            now + timedelta(seconds=self.settings.tac_lifetime_s),
        )
        self.tacs[value] = tac
        return KeyExchangeOutcome(200, tac, "", merchant)

    def browser_post(self, f: dict[str, str]) -> BrowserPostOutcome:
        now = self.clock.now()
        tac = self.tacs.get(f.get("TAC", ""))
        key = (f.get("CUST_NBR", ""), f.get("MERCH_NBR", ""), f.get("DBA_NBR", ""), f.get("TERMINAL_NBR", ""))
        merchant = self.merchants.get(tac.merchant) if tac is not None else self.merchants.get(key)
        base = tac.redirect_url if tac is not None else f.get("REDIRECT_URL", "")
        error_target = f.get("REDIRECT_URL_ERROR") or base
        group = f.get("TRAN_CODE", "")
        errors = self._bp_field_errors(f)
        if errors:
            fields: Fields = [
                ("BP_RESP_CODE", "BP_140"),
                ("BP_RESP_TEXT", "Field validation failed"),
                ("BP_FIELD_ERRORS", "; ".join(errors)),
                ("TRAN_NBR", f.get("TRAN_NBR", "")),
                ("TRAN_GROUP", group),
            ]
            return self._bp_redirect(error_target, fields, f, merchant=merchant, group=group, reason="bp_140")
        problem = self._tac_problem(tac, key, f, now)
        if problem:
            fields = [
                ("AUTH_RESP", "58"),
                ("AUTH_RESP_TEXT", f"TAC VALIDATION FAILED: {problem}"),
                ("TRAN_NBR", f.get("TRAN_NBR", "")),
                ("TRAN_GROUP", group),
            ]
            return self._bp_redirect(
                error_target, fields, f, merchant=merchant, group=group, reason="tac_" + problem
            )
        assert tac is not None and merchant is not None
        if not f.get("ACCOUNT_NBR") or not f.get("EXP_DATE"):
            hidden = [(k, v) for k, v in f.items() if k not in ("ACCOUNT_NBR", "EXP_DATE", "CVV")]
            return BrowserPostOutcome("form", merchant=merchant, tran_group=group, hidden=hidden)
        if self.settings.tac_single_use:
            tac.used = True
        post_fields = {
            "CUST_NBR": merchant.key[0],
            "MERCH_NBR": merchant.key[1],
            "DBA_NBR": merchant.key[2],
            "TERMINAL_NBR": merchant.key[3],
            "TRAN_TYPE": TRAN_GROUPS[group],
            "TRAN_NBR": f["TRAN_NBR"],
            "BATCH_ID": now.strftime("%Y%m%d"),
            "ACCOUNT_NBR": f["ACCOUNT_NBR"],
            "EXP_DATE": f["EXP_DATE"],
            "CARD_ENT_METH": "E",
            "INDUSTRY_TYPE": "E",
        }
        if group != "STORAGE":
            post_fields["AMOUNT"] = f["AMOUNT"]
        for src, dst in (
            ("CVV", "CVV2"),
            ("ADDRESS", "ADDRESS"),
            ("ZIP_CODE", "ZIP_CODE"),
            ("FIRST_NAME", "FIRST_NAME"),
            ("LAST_NAME", "LAST_NAME"),
        ):
            if f.get(src):
                post_fields[dst] = f[src]
        post = self.post_for_merchant(merchant, post_fields)
        result = dict(post.fields)
        code = result.get("AUTH_RESP", "")
        approved = code == "00" or (group == "STORAGE" and code == "85")
        fields = [
            (k, result[k]) for k in ("AUTH_RESP", "AUTH_GUID", "AUTH_CODE", "AUTH_RESP_TEXT") if k in result
        ]
        for k in ("AUTH_CARD_TYPE", "AUTH_AVS", "AUTH_CVV2"):
            if k in result:
                fields.append((k, result[k]))
        if approved and group != "STORAGE" and "AUTH_AMOUNT" in result:
            fields.append(("AUTH_AMOUNT", result["AUTH_AMOUNT"]))
        if "AUTH_MASKED_ACCOUNT_NBR" in result:
            fields.append(("AUTH_MASKED_ACCOUNT_NBR", result["AUTH_MASKED_ACCOUNT_NBR"]))
            fields.append(("EXP_DATE", f["EXP_DATE"]))
        if "AUTH_TRAN_IDENT" in result:
            fields.append(("AUTH_TRAN_IDENT", result["AUTH_TRAN_IDENT"]))
        fields.append(("TRAN_NBR", f["TRAN_NBR"]))
        fields.append(("TRAN_GROUP", group))
        if approved:
            target = tac.redirect_url
        elif post.outcome == "declined":
            target = f.get("REDIRECT_URL_DECLINE") or tac.redirect_url
        else:
            target = f.get("REDIRECT_URL_ERROR") or tac.redirect_url
        out = self._bp_redirect(target, fields, f, merchant=merchant, group=group, reason=post.outcome)
        out.post = post
        return out

    def _bp_redirect(
        self,
        target: str,
        fields: Fields,
        f: dict[str, str],
        *,
        merchant: Merchant | None,
        group: str,
        reason: str,
    ) -> BrowserPostOutcome:
        if not target:
            return BrowserPostOutcome("error_page", merchant=merchant, tran_group=group, reason=reason)
        for name in _ECHO_FIELDS:
            if name in f:
                fields.append((name, f[name]))
        fields.append(("CUST_NBR", merchant.key[0] if merchant else f.get("CUST_NBR", "")))
        fields.append(("MERCH_NBR", merchant.key[1] if merchant else f.get("MERCH_NBR", "")))
        fields.append(("AMOUNT", f.get("AMOUNT", "")))
        if merchant is not None:
            fields.append(("MAC", redirect_mac(merchant.mac, dict(fields))))
        return BrowserPostOutcome(
            "redirect", target=target, fields=fields, merchant=merchant, tran_group=group, reason=reason
        )

    @staticmethod
    def _bp_field_errors(f: dict[str, str]) -> list[str]:
        errors = [f"{name}: unknown field" for name in f if name not in BROWSER_POST_FIELDS]
        for name in (
            "TAC",
            "CUST_NBR",
            "MERCH_NBR",
            "DBA_NBR",
            "TERMINAL_NBR",
            "TRAN_NBR",
            "AMOUNT",
            "TRAN_CODE",
        ):
            if not f.get(name):
                errors.append(f"{name}: required")
        if f.get("TRAN_CODE") and f["TRAN_CODE"] not in TRAN_GROUPS:
            errors.append("TRAN_CODE: invalid value")
        if f.get("AMOUNT") and parse_amount(f["AMOUNT"]) is None:
            errors.append("AMOUNT: invalid format")
        acct = f.get("ACCOUNT_NBR")
        if acct and not (13 <= len(acct) <= 19 and acct.isdigit()):
            errors.append("ACCOUNT_NBR: invalid")
        exp = f.get("EXP_DATE")
        if exp and not _exp_ok(exp):
            errors.append("EXP_DATE: invalid, expected YYMM")
        cvv = f.get("CVV")
        if cvv and not (3 <= len(cvv) <= 4 and cvv.isdigit()):
            errors.append("CVV: invalid")
        return errors

    @staticmethod
    def _tac_problem(tac: Tac | None, key: MerchantKey, f: dict[str, str], now: datetime) -> str:
        if tac is None:
            return "unknown"
        if tac.used:
            return "reused"
        if tac.expires_at <= now:
            return "expired"
        if tac.merchant != key:
            return "merchant_mismatch"
        if tac.tran_nbr != f.get("TRAN_NBR"):
            return "tran_nbr_mismatch"
        if tac.amount != f.get("AMOUNT"):
            return "amount_mismatch"
        if tac.tran_group != f.get("TRAN_CODE"):
            return "tran_code_mismatch"
        if f.get("REDIRECT_URL") and f["REDIRECT_URL"] != tac.redirect_url:
            return "redirect_mismatch"
        return ""

    # --- reporting -----------------------------------------------------------------------------

    def find_txns(self, merch_nbr: str, tran_nbr: int | None) -> list[Txn]:
        out: list[Txn] = []
        for key, book in self.txns.items():
            if key[1] != merch_nbr:
                continue
            if tran_nbr is not None:
                txn = book.get(tran_nbr)
                if txn is not None:
                    out.append(txn)
            else:
                out.extend(book.values())
        out.sort(key=lambda t: t.seq)
        return out

    def report_transactions(self, merch_nbr: str, tran_nbr: int | None) -> list[dict[str, Any]]:
        self.tick(self.clock.now())
        return [
            {
                "tranNbr": t.tran_nbr,
                "tranType": t.tran_type,
                "authResp": t.auth_resp,
                "authGuid": t.auth_guid,
                "authCode": t.auth_code,
                "amount": cents_text(t.amount),
                "batchId": t.batch_id,
                "processedAt": t.processed_at.isoformat().replace("+00:00", "Z"),
                "voided": t.voided,
                "settled": t.settled,
            }
            for t in self.find_txns(merch_nbr, tran_nbr)
        ]

    def ach_returns(self, merch_nbr: str, from_date: date | None) -> list[dict[str, Any]]:
        today = self.clock.now().date()
        out = []
        for ret in self.returns:
            if ret.txn.merchant[1] != merch_nbr or ret.return_date > today:
                continue
            if from_date is not None and ret.return_date < from_date:
                continue
            if ret.txn.voided and not ret.injected:
                continue
            out.append(ret.to_json())
        return out

    def inject_ach_return(
        self,
        merch_nbr: str | None,
        tran_nbr: int,
        code: str,
        return_date: date | None,
        corrected_data: str | None = None,
    ) -> AchReturn:
        candidates = [
            t
            for key, book in self.txns.items()
            if merch_nbr is None or key[1] == merch_nbr
            for t in (book.get(tran_nbr),)
            if t is not None
        ]
        if not candidates:
            raise KeyError(f"no transaction {tran_nbr}")
        txn = candidates[0]
        when = return_date or self.clock.now().date()
        if code.startswith("C"):
            ret = AchReturn(txn, when, None, code, corrected_data or NOC_CORRECTIONS.get(code, ""), True)
        else:
            ret = AchReturn(txn, when, code, injected=True)
        self._note_return(ret)
        return ret

    # --- disputes ------------------------------------------------------------------------------

    def create_dispute(self, body: dict[str, Any]) -> Dispute:
        merch_nbr = str(body.get("merchant") or DEFAULT_MERCHANT_KEY[1])
        tran_nbr = int(body["tran_nbr"])
        txns = self.find_txns(merch_nbr, tran_nbr)
        today = self.clock.now().date()
        if txns:
            txn = txns[0]
            inst = txn.instrument
            brand = {"V": "VISA", "M": "MASTERCARD", "A": "AMEX", "D": "DISCOVER", "J": "JCB"}.get(
                inst.brand if isinstance(inst, Card) else "", "VISA"
            )
            last4 = inst.last4 if inst is not None else "0000"
            txn_amount = txn.amount
            txn_date = txn.processed_at.date()
        elif body.get("allow_unlinked"):
            brand, last4, txn_amount, txn_date = "VISA", str(body.get("last4", "1111")), 0, today
            if body.get("transaction_amount") is not None:
                txn_amount = _cents(body["transaction_amount"])
        else:
            raise KeyError(f"no transaction {tran_nbr} for merchant {merch_nbr}")
        case = str(body.get("case_number") or f"CB{self.rng.randrange(10**9, 10**10)}")
        dispute_date = date.fromisoformat(body["dispute_date"]) if body.get("dispute_date") else today
        chargeback_amount = _cents(body["chargeback_amount"]) if body.get("chargeback_amount") else txn_amount
        dispute = Dispute(
            case_number=case,
            merch_nbr=merch_nbr,
            tran_nbr=tran_nbr,
            status=str(body.get("status", "NEW")),
            dispute_date=dispute_date,
            chargeback_date=date.fromisoformat(body["chargeback_date"])
            if body.get("chargeback_date")
            else dispute_date,
            transaction_date=txn_date,
            dispute_type=str(body.get("dispute_type", "CHARGEBACK")),
            card_brand=str(body.get("card_brand", brand)),
            last4=last4,
            reason_code=str(body.get("reason_code", "10.4")),
            reason_description=str(body.get("reason_description", "Other Fraud - Card Absent Environment")),
            transaction_amount=txn_amount,
            chargeback_amount=chargeback_amount,
            created_seq=len(self.disputes) + 1,
        )
        self.disputes[case] = dispute
        return dispute

    def update_dispute(self, case: str, body: dict[str, Any]) -> Dispute:
        dispute = self.disputes[case]
        if "status" in body:
            dispute.status = str(body["status"])
        if "reason_code" in body:
            dispute.reason_code = str(body["reason_code"])
        if "reason_description" in body:
            dispute.reason_description = str(body["reason_description"])
        if "chargeback_amount" in body:
            dispute.chargeback_amount = _cents(body["chargeback_amount"])
        if "dispute_type" in body:
            dispute.dispute_type = str(body["dispute_type"])
        return dispute

    def search_disputes(
        self, merch_nbr: str, from_date: date | None, to_date: date | None
    ) -> tuple[list[Dispute], int]:
        matched = [
            d
            for d in self.disputes.values()
            if d.merch_nbr == merch_nbr
            and (from_date is None or d.dispute_date >= from_date)
            and (to_date is None or d.dispute_date <= to_date)
        ]
        matched.sort(key=lambda d: (d.dispute_date, d.created_seq))
        cap = self.settings.north_page_cap
        page = matched if cap is None else matched[:cap]
        return page, len(matched)


def _cents(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    cents = parse_amount(str(value))
    if cents is None:
        raise ValueError(f"invalid amount {value!r}: use 'D.DD' or integer cents")
    return cents


def parse_cutoff(text: str) -> time | None:
    if text.lower() in ("none", "off", ""):
        return None
    hh, _, mm = text.partition(":")
    return time(int(hh), int(mm or 0))
