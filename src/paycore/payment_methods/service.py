"""Saved payment methods: save (card, bank account), read, list, default, (de)activate, delete;
the payment path's resolution; ACH verification, returns and retention (the jobs' bodies).

Order of a save (like a payment, design.md §4):
1. one DB transaction claims the Idempotency-Key and writes the $0 gateway transaction as `pending`
   with its TRAN_NBR;
2. the gateway is called with no connection held (a bank account: the pre-note `CKC0`/`CKS0`, then for
   checking the `CKC8` storage of the pre-note's BRIC, whose TRAN_NBR is reserved in between);
3. one DB transaction records the outcome, inserts the method with its `payment_method.created` event
   and stores the idempotent response.
The bank account number lives in memory for step 2 only: never stored, logged or fingerprinted
(the Idempotency-Key fingerprint sees a keyed HMAC of it).

$0 operations move no money, so an ambiguous gateway outcome (timeout after sending, …) is recorded
as `failed` with its reason and nothing is saved; the same Idempotency-Key may be retried.

Caches (CACHE-2, CACHE-8): `methods` (id → record) and `lists` ((merchant, customer) → records).
Every write invalidates them after its commit: create, default, (de)activation, delete,
verification (single and batch), ACH returns and last-used updates.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import structlog

from paycore.gateway.epx import wire
from paycore.gateway.epx.ach_returns import AchReturn, AchReturnSource, ReturnsUnavailable
from paycore.gateway.port import (
    UNAVAILABLE_ERROR_CODES,
    CallTrace,
    GatewayRequest,
    GatewayResult,
    TransactionProcessor,
)
from paycore.idempotency.model import IdempotencyRequest
from paycore.idempotency.service import Idempotency, ServiceResponse
from paycore.kernel import codec, errors
from paycore.kernel.clock import Clock
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.merchants.model import Merchant, Principal
from paycore.payment_methods import calendar, model, schemas
from paycore.payment_methods.model import PaymentMethod, ReturnAction
from paycore.payment_methods.repository import NewMethod, PaymentMethodRepository
from paycore.platform.cache import AsyncTTLCache
from paycore.platform.context import current_request_id
from paycore.platform.cursor import CursorCodec
from paycore.platform.db import Connection, Database
from paycore.platform.observability import metrics as m
from paycore.platform.observability import tracing
from paycore.platform.resilience import deadline as dl
from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.payment_methods")

MAX_TRAN_NBR_TRIES: Final = 5
TOUCH_TIMEOUT: Final = 5.0
_MAX_SWEEP_BATCHES: Final = 1000
CACHE_CHANNEL: Final = "paycore_cache_invalidate"
_KEYS_PER_NOTIFY: Final = 40  # NOTIFY payloads are limited to 8000 bytes

MethodCache = AsyncTTLCache[uuid.UUID, PaymentMethod | None]
ListCache = AsyncTTLCache[tuple[uuid.UUID, str], tuple[PaymentMethod, ...]]


@dataclass(frozen=True, slots=True)
class Policy:
    """The capability's settings (from `Settings` in bootstrap)."""

    verification_days: int = 3
    batch_size: int = 100
    return_threshold: int = 2
    returns_lookback_days: int = 7
    rate_window_days: int = 60
    critical_timeout: float = 45.0
    noncritical_timeout: float = 30.0
    batch_timezone: str = "UTC"
    abandon_after: float = 600.0
    token_refresh_before: timedelta = timedelta(days=30)
    labelled_merchants: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = 20
    type: str | None = None
    state: str | None = None
    starting_after: str | None = None


@dataclass(slots=True)
class RefreshResult:
    skipped: int = 0  # the merchant is inactive
    # storage | financial (renewed) | declined | failed | lapsed
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ReturnsResult:
    merchants: int = 0
    unavailable: int = 0
    seen: int = 0
    applied: int = 0
    duplicates: int = 0
    actions: dict[str, int] = field(default_factory=dict)


class PaymentMethodService:
    def __init__(
        self,
        *,
        db: Database,
        repository: PaymentMethodRepository,
        idempotency: Idempotency,
        gateway: TransactionProcessor,
        returns: AchReturnSource | None,
        merchants: Callable[[], Awaitable[list[Merchant]]],
        clock: Clock,
        tasks: TaskSupervisor,
        cursors: CursorCodec,
        methods_cache: MethodCache,
        lists_cache: ListCache,
        fingerprint_secret: str,
        policy: Policy = Policy(),
    ) -> None:
        self.db = db
        self.repo = repository
        self.idempotency = idempotency
        self.gateway = gateway
        self.returns = returns
        self.merchants = merchants
        self.clock = clock
        self.tasks = tasks
        self.cursors = cursors
        self.methods = methods_cache
        self.lists = lists_cache
        self._fingerprint_key = hashlib.sha256(
            b"paycore-pm-fingerprint:" + fingerprint_secret.encode()
        ).digest()
        self.policy = policy
        self._zones: dict[str, ZoneInfo] = {}

    # ------------------------------------------------------------------ helpers
    def _zone(self, merchant: Merchant) -> ZoneInfo:
        name = merchant.timezone or self.policy.batch_timezone
        zone = self._zones.get(name)
        if zone is None:
            zone = self._zones[name] = ZoneInfo(name)
        return zone

    def merchant_label(self, slug: str) -> str:
        return slug if slug in self.policy.labelled_merchants else "other"

    def fingerprint_view(self, cmd: schemas.SavePaymentMethod) -> dict[str, Any]:
        """The body the Idempotency-Key fingerprint is computed over: the account number replaced
        by a keyed HMAC (an unkeyed hash of a short account number could be brute-forced)."""
        body: dict[str, Any] = msgspec.to_builtins(cmd)
        if isinstance(cmd, schemas.SaveBankAccount):
            digest = hmac.new(self._fingerprint_key, cmd.account_number.strip().encode(), hashlib.sha256)
            body["account_number"] = "hmac:" + digest.hexdigest()
        return body

    async def _invalidate(self, methods: Iterable[PaymentMethod]) -> None:
        """After a commit: drop the entries here, and tell the other processes (NOTIFY)."""
        changed = list(methods)
        for pm in changed:
            self._drop(pm.id, pm.merchant_id, pm.customer_id)
        await self._publish([_key(pm.id, pm.merchant_id, pm.customer_id) for pm in changed])

    def _drop(self, method_id: uuid.UUID | None, merchant_id: uuid.UUID, customer_id: str) -> None:
        if method_id is not None:
            self.methods.invalidate(method_id)
        self.lists.invalidate((merchant_id, customer_id))

    def invalidate_customer_locally(self, merchant_id: uuid.UUID, customer_id: str) -> None:
        self.lists.invalidate((merchant_id, customer_id))
        self.methods.invalidate_where(
            lambda _k, v: v is not None and v.merchant_id == merchant_id and v.customer_id == customer_id
        )

    def invalidate_customer(self, merchant_id: uuid.UUID, customer_id: str) -> None:
        """Drop every cached entry of one customer after a write committed elsewhere (e.g. the
        checkout's transaction of `save_card_from_storage`); the other processes are told in a
        supervised task."""
        self.invalidate_customer_locally(merchant_id, customer_id)
        self.tasks.spawn("payment_methods.notify", self._publish([_key(None, merchant_id, customer_id)]))

    async def _publish(self, keys: list[str]) -> None:
        """NOTIFY the cache-invalidation channel (delivered to every listening process; a failure
        is logged: the entries then expire by their TTL)."""
        try:
            for start in range(0, len(keys), _KEYS_PER_NOTIFY):
                await self.repo.notify(CACHE_CHANNEL, ";".join(keys[start : start + _KEYS_PER_NOTIFY]))
        except Exception as exc:
            log.warning("payment_method_cache_notify_failed", error=type(exc).__name__, keys=len(keys))

    def on_cache_invalidation(self, payload: str) -> None:
        """Another process's invalidations (NOTIFY on `CACHE_CHANNEL`, received by the process's
        `NotificationListener`): `pm|<method>|<merchant>|<customer>` items, `;`-separated; items of
        other caches on the shared channel are ignored."""
        for item in payload.split(";"):
            parts = item.split("|")
            if len(parts) != 4 or parts[0] != "pm":
                continue
            try:
                method_id = uuid.UUID(parts[1]) if parts[1] else None
                merchant_id = uuid.UUID(parts[2])
            except ValueError:
                continue
            if method_id is None:
                self.invalidate_customer_locally(merchant_id, parts[3])
            else:
                self._drop(method_id, merchant_id, parts[3])

    async def on_listener_connect(self) -> None:
        """The listener (re)connected: notifications may have been missed, so both caches start
        empty."""
        self.methods.clear()
        self.lists.clear()

    async def _load(self, method_id: uuid.UUID) -> PaymentMethod | None:
        return await self.methods.get_or_load(method_id, lambda: self.repo.get(method_id))

    async def _owned(self, principal: Principal, customer_id: str, method_id: uuid.UUID) -> PaymentMethod:
        pm = await self._load(method_id)
        if (
            pm is None
            or pm.merchant_id != principal.merchant.id
            or pm.customer_id != customer_id
            or pm.deleted
        ):
            raise PaycoreError(model.PAYMENT_METHOD_NOT_FOUND)
        return pm

    def _out(self, pm: PaymentMethod, principal: Principal) -> schemas.PaymentMethodOut:
        return schemas.method_out(pm, livemode=principal.livemode)

    def _gateway_metrics(
        self, merchant: Merchant, request: GatewayRequest, result: GatewayResult, started: float
    ) -> None:
        kind = "prenote" if request.tran_type in ("CKC0", "CKS0") else "storage"
        payment_type = wire.payment_type(request.tran_type)
        label = self.merchant_label(merchant.slug)
        m.PAYMENT_TRANSACTIONS.labels(label, payment_type, kind, result.outcome).inc()
        m.PAYMENT_DURATION.labels(payment_type, kind, result.outcome).observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ $0 gateway transactions
    async def _reserve(
        self,
        con: Connection,
        *,
        merchant: Merchant,
        txn_id: uuid.UUID,
        tran_nbr: int,
        kind: str,
        request: GatewayRequest,
        customer_id: str,
        orig_auth_guid: str | None,
        now: datetime,
    ) -> None:
        await self.repo.insert_zero_dollar(
            con,
            (
                txn_id,
                merchant.id,
                kind,
                wire.payment_type(request.tran_type),
                "api",
                tran_nbr,
                request.tran_type,
                wire.batch_id(now, self._zone(merchant)),
                orig_auth_guid,
                request.storable_body(),
                customer_id,
            ),
        )

    async def _begin(
        self,
        merchant: Merchant,
        idem: IdempotencyRequest,
        *,
        kind: str,
        build: Callable[[int], GatewayRequest],
        customer_id: str,
        orig_auth_guid: str | None,
        now: datetime,
    ) -> tuple[uuid.UUID, GatewayRequest]:
        """Claim the key and reserve the first $0 transaction, in one DB transaction."""

        async def claim(con: Connection, txn_id: uuid.UUID) -> None:
            await self.idempotency.claim(con, merchant.id, idem, txn_id)

        return await self._reserve_new(
            merchant, kind=kind, build=build, customer_id=customer_id, orig_auth_guid=orig_auth_guid,
            now=now, first=claim,
        )  # fmt: skip

    async def _reserve_more(
        self,
        merchant: Merchant,
        *,
        kind: str,
        build: Callable[[int], GatewayRequest],
        customer_id: str,
        orig_auth_guid: str | None,
        now: datetime,
        before: Callable[[Connection], Awaitable[None]],
    ) -> tuple[uuid.UUID, GatewayRequest]:
        """A further $0 transaction of the same save (the ACH storage after the pre-note); `before`
        records the previous step's outcome in the same DB transaction."""

        async def record_previous(con: Connection, _: uuid.UUID) -> None:
            await before(con)

        return await self._reserve_new(
            merchant, kind=kind, build=build, customer_id=customer_id, orig_auth_guid=orig_auth_guid,
            now=now, first=record_previous,
        )  # fmt: skip

    async def _reserve_new(
        self,
        merchant: Merchant,
        *,
        kind: str,
        build: Callable[[int], GatewayRequest],
        customer_id: str,
        orig_auth_guid: str | None,
        now: datetime,
        first: Callable[[Connection, uuid.UUID], Awaitable[None]],
    ) -> tuple[uuid.UUID, GatewayRequest]:
        """Reserve a pending $0 transaction with its TRAN_NBR after `first` ran in the same DB
        transaction; a TRAN_NBR collision retries with the next derivation."""
        txn_id = uuid7()
        for k in range(MAX_TRAN_NBR_TRIES):
            tran_nbr = wire.tran_nbr_for(txn_id, k)
            request = build(tran_nbr)
            try:
                async with self.db.transaction() as con:
                    await first(con, txn_id)
                    await self._reserve(
                        con,
                        merchant=merchant,
                        txn_id=txn_id,
                        tran_nbr=tran_nbr,
                        kind=kind,
                        request=request,
                        customer_id=customer_id,
                        orig_auth_guid=orig_auth_guid,
                        now=now,
                    )
                return txn_id, request
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "uq_transactions_merchant_tran_nbr":
                    raise
        raise PaycoreError(errors.INTERNAL_ERROR, "could not allocate a TRAN_NBR")

    async def _call(
        self, request: GatewayRequest, txn_id: uuid.UUID, merchant_id: uuid.UUID, key: str
    ) -> GatewayResult:
        """The gateway call. Cancelled (client gone, deadline, shutdown): the $0 row is `failed`
        and the key released in a supervised task (nothing moved, so a retry is safe)."""
        trace = CallTrace()
        try:
            return await self.gateway.process(request, trace=trace)
        except asyncio.CancelledError:
            self.tasks.spawn("payment_methods.abandon", self._abandon(txn_id, merchant_id, key))
            raise

    async def _abandon(self, txn_id: uuid.UUID, merchant_id: uuid.UUID, key: str) -> None:
        await self.repo.mark_zero_dollar_failed(txn_id, "cancelled")
        await self.idempotency.release(None, merchant_id, key)

    @staticmethod
    def _outcome_args(
        txn_id: uuid.UUID, result: GatewayResult, status: str, method_id: uuid.UUID | None
    ) -> tuple[Any, ...]:
        r = result.response
        return (
            txn_id,
            status,
            r.auth_guid if r else None,
            r.auth_resp if r else None,
            r.auth_code if r else None,
            r.auth_resp_text if r else None,
            r.avs_result if r else None,
            r.cvv_result if r else None,
            r.card_brand if r else None,
            r.card_last4 if r else None,
            r.ntid if r else None,
            r.category.value if r and status == "declined" else None,
            result.error_code if status == "failed" else None,
            result.attempts,
            method_id,
        )

    async def _fail(
        self, merchant: Merchant, idem: IdempotencyRequest, txn_id: uuid.UUID, result: GatewayResult
    ) -> PaycoreError:
        """Nothing was saved: the $0 row is `failed` (with the reason), the key released."""
        async with self.db.transaction() as con:
            await self.repo.record_zero_dollar(con, self._outcome_args(txn_id, result, "failed", None))
            await self.idempotency.release(con, merchant.id, idem.key)
        if result.outcome == "unknown":
            log.warning(
                "payment_method_gateway_outcome_unknown", transaction_id=str(txn_id), reason=result.error_code
            )
        spec = (
            errors.GATEWAY_UNAVAILABLE
            if result.error_code in UNAVAILABLE_ERROR_CODES
            else errors.GATEWAY_ERROR
        )
        return PaycoreError(
            spec,
            "The gateway did not complete the verification; nothing was saved. Retry later.",
            extra={"reason": result.error_code},
        )

    async def _declined(
        self,
        merchant: Merchant,
        idem: IdempotencyRequest,
        txn_id: uuid.UUID,
        result: GatewayResult,
        spec: errors.ProblemSpec,
        detail: str,
        *,
        before: Callable[[Connection], Awaitable[None]] | None = None,
    ) -> ServiceResponse:
        r = result.response
        problem = PaycoreError(
            spec,
            detail,
            extra={
                "gateway_code": r.auth_resp if r else None,
                "decline_category": r.category.value if r else None,
            },
        )
        stored = ServiceResponse(
            spec.status, codec.encode(problem.problem(current_request_id())), "application/problem+json"
        )
        async with self.db.transaction() as con:
            if before is not None:
                await before(con)
            await self.repo.record_zero_dollar(con, self._outcome_args(txn_id, result, "declined", None))
            await self.idempotency.complete(con, merchant.id, idem.key, stored, txn_id)
        return stored

    async def _created(
        self,
        principal: Principal,
        idem: IdempotencyRequest,
        new: NewMethod,
        records: list[tuple[uuid.UUID, GatewayResult, str]],
    ) -> ServiceResponse:
        """The outcome transaction of a successful save."""
        merchant = principal.merchant
        async with self.db.transaction() as con:
            for txn_id, result, status in records:
                await self.repo.record_zero_dollar(con, self._outcome_args(txn_id, result, status, new.id))
            pm = await self.repo.insert(con, new, "payment_method.created", tracing.current_traceparent())
            stored = ServiceResponse(201, codec.encode(self._out(pm, principal)))
            await self.idempotency.complete(con, merchant.id, idem.key, stored, pm.id)
        await self._invalidate([pm])
        m.PAYMENT_METHODS_CREATED.labels(self.merchant_label(merchant.slug), pm.payment_type).inc()
        log.info("payment_method_created", payment_method_id=str(pm.id), payment_type=pm.payment_type)
        return stored

    async def _check_capacity(self, merchant_id: uuid.UUID, customer_id: str) -> None:
        if await self.repo.count_live(merchant_id, customer_id) >= model.MAX_METHODS_PER_CUSTOMER:
            raise PaycoreError(
                model.PAYMENT_METHOD_LIMIT,
                f"A customer may have at most {model.MAX_METHODS_PER_CUSTOMER} saved payment methods",
            )

    # ------------------------------------------------------------------ save
    async def save(
        self,
        principal: Principal,
        customer_id: str,
        cmd: schemas.SavePaymentMethod,
        idem: IdempotencyRequest,
    ) -> ServiceResponse:
        with tracing.span(
            "payment_method.create",
            {"paycore.merchant_id": str(principal.merchant.id), "paycore.payment_type": _type_of(cmd)},
        ):
            if isinstance(cmd, schemas.SaveCard):
                return await self._save_card(principal, customer_id, cmd, idem)
            return await self._save_bank_account(principal, customer_id, cmd, idem)

    async def _save_card(
        self, principal: Principal, customer_id: str, cmd: schemas.SaveCard, idem: IdempotencyRequest
    ) -> ServiceResponse:
        merchant = principal.merchant
        model.refuse_pan_as_token(cmd.token)
        if (cmd.exp_month is None) != (cmd.exp_year is None):
            raise PaycoreError(
                errors.VALIDATION_FAILED, "give both exp_month and exp_year, or neither", param="exp_month"
            )
        billing = _billing(cmd.billing)
        billing_fields = msgspec.to_builtins(cmd.billing) if cmd.billing is not None else None
        now = self.clock.now()
        zone = self._zone(merchant)

        def build(tran_nbr: int) -> GatewayRequest:
            try:
                return wire.for_card_storage(
                    merchant=merchant.epx,
                    tran_nbr=tran_nbr,
                    at=now,
                    tz=zone,
                    source_bric=cmd.token,
                    billing=billing,
                    cof_period=0,
                )
            except wire.RequestInvalid as exc:
                raise PaycoreError(errors.VALIDATION_FAILED, str(exc), param=_param_of(exc.field)) from None

        build(wire.TRAN_NBR_MIN)  # validation first: a bad request stores nothing
        async with dl.budget(self.policy.critical_timeout):
            await self._check_capacity(merchant.id, customer_id)
            txn_id, request = await self._begin(
                merchant,
                idem,
                kind="storage",
                build=build,
                customer_id=customer_id,
                orig_auth_guid=cmd.token,
                now=now,
            )
            started = time.perf_counter()
            result = await self._call(request, txn_id, merchant.id, idem.key)
            self._gateway_metrics(merchant, request, result, started)
            response = result.response
            if result.outcome == "approved" and response is not None and response.auth_guid:
                new = NewMethod(
                    id=uuid7(),
                    merchant_id=merchant.id,
                    customer_id=customer_id,
                    payment_type="card",
                    bric=response.auth_guid,
                    bric_kind="storage",
                    verification_status="verified",
                    card_brand=response.card_brand,
                    card_last4=response.card_last4,
                    exp_month=cmd.exp_month,
                    exp_year=cmd.exp_year,
                    ntid=response.ntid,
                    billing=billing_fields,
                    metadata=cmd.metadata,
                )
                return await self._created(principal, idem, new, [(txn_id, result, "approved")])
            if result.outcome == "declined":
                return await self._declined(
                    merchant, idem, txn_id, result, errors.CARD_DECLINED, "The card failed its verification"
                )
            raise await self._fail(merchant, idem, txn_id, result)

    async def _save_bank_account(
        self,
        principal: Principal,
        customer_id: str,
        cmd: schemas.SaveBankAccount,
        idem: IdempotencyRequest,
    ) -> ServiceResponse:
        merchant = principal.merchant
        routing = model.validate_routing_number(cmd.routing_number)
        account = wire.BankAccount(
            account_nbr=model.validate_account_number(cmd.account_number), routing_nbr=routing
        )
        holder = wire.Billing(first_name=cmd.holder.first_name, last_name=cmd.holder.last_name)
        account_type: wire.AccountType = cmd.account_type
        now = self.clock.now()
        zone = self._zone(merchant)

        def build_prenote(tran_nbr: int) -> GatewayRequest:
            try:
                return wire.for_ach_prenote(
                    merchant=merchant.epx,
                    tran_nbr=tran_nbr,
                    account_type=account_type,
                    at=now,
                    tz=zone,
                    account=account,
                    holder=holder,
                    sec_code=cmd.sec_code,
                )
            except wire.RequestInvalid as exc:
                raise PaycoreError(errors.VALIDATION_FAILED, str(exc), param=_param_of(exc.field)) from None

        build_prenote(wire.TRAN_NBR_MIN)  # validation first: a bad request stores nothing
        async with dl.budget(self.policy.critical_timeout):
            await self._check_capacity(merchant.id, customer_id)
            prenote_id, prenote = await self._begin(
                merchant,
                idem,
                kind="prenote",
                build=build_prenote,
                customer_id=customer_id,
                orig_auth_guid=None,
                now=now,
            )
            started = time.perf_counter()
            result = await self._call(prenote, prenote_id, merchant.id, idem.key)
            self._gateway_metrics(merchant, prenote, result, started)
            response = result.response
            if result.outcome == "declined":
                return await self._declined(
                    merchant,
                    idem,
                    prenote_id,
                    result,
                    model.BANK_ACCOUNT_DECLINED,
                    "The bank account was refused (routing or account not accepted)",
                )
            if result.outcome != "approved" or response is None or not response.auth_guid:
                raise await self._fail(merchant, idem, prenote_id, result)
            prenote_bric = response.auth_guid
            records: list[tuple[uuid.UUID, GatewayResult, str]] = []
            bric, bric_kind = prenote_bric, "financial"
            bric_expires: datetime | None = _add_months(now, 13)
            if account_type == "checking":
                stored = await self._store_ach(
                    merchant, idem.key, prenote_id, result, prenote_bric, holder, customer_id, now
                )
                if stored is not None:
                    records.append(stored[0])
                    if stored[1] is not None:
                        bric, bric_kind, bric_expires = stored[1], "storage", None
            else:
                # no savings storage code is known (CKS8 is unverified, epx-protocol.md §2.1): the
                # pre-note's Financial BRIC is the token; it lapses after 13 months
                records.append((prenote_id, result, "approved"))
            new = NewMethod(
                id=uuid7(),
                merchant_id=merchant.id,
                customer_id=customer_id,
                payment_type="ach",
                bric=bric,
                bric_kind=bric_kind,
                bric_expires_at=bric_expires,
                verification_status="pending",
                account_type=account_type,
                account_last4=account.account_nbr[-4:],
                routing_number=routing,
                holder_name=f"{cmd.holder.first_name} {cmd.holder.last_name}",
                sec_code=cmd.sec_code,
                prenote_transaction_id=prenote_id,
                metadata=cmd.metadata,
            )
            return await self._created(principal, idem, new, records)

    async def _store_ach(
        self,
        merchant: Merchant,
        key: str,
        prenote_id: uuid.UUID,
        prenote_result: GatewayResult,
        prenote_bric: str,
        holder: wire.Billing | None,
        customer_id: str,
        now: datetime,
    ) -> tuple[tuple[uuid.UUID, GatewayResult, str], str | None] | None:
        """`CKC8` storage of the pre-note's BRIC (checking). Returns the storage transaction's
        outcome record and the Storage BRIC (None when the conversion failed: the pre-note's BRIC is
        kept, epx-protocol.md §7.2). The pre-note's outcome is recorded before the call."""

        async def record_prenote(con: Connection) -> None:
            await self.repo.record_zero_dollar(
                con, self._outcome_args(prenote_id, prenote_result, "approved", None)
            )

        def build(tran_nbr: int) -> GatewayRequest:
            return wire.for_ach_storage(
                merchant=merchant.epx,
                tran_nbr=tran_nbr,
                account_type="checking",
                at=now,
                tz=self._zone(merchant),
                prenote_bric=prenote_bric,
                holder=holder,
            )

        storage_id, request = await self._reserve_more(
            merchant,
            kind="storage",
            build=build,
            customer_id=customer_id,
            orig_auth_guid=prenote_bric,
            now=now,
            before=record_prenote,
        )
        started = time.perf_counter()
        result = await self._call(request, storage_id, merchant.id, key)
        self._gateway_metrics(merchant, request, result, started)
        response = result.response
        if result.outcome == "approved" and response is not None and response.auth_guid:
            return (storage_id, result, "approved"), response.auth_guid
        log.warning(
            "ach_storage_conversion_failed",
            transaction_id=str(storage_id),
            outcome=result.outcome,
            reason=result.error_code or (response.auth_resp if response else None),
        )
        status = "declined" if result.outcome == "declined" else "failed"
        return (storage_id, result, status), None

    async def save_card_from_storage(
        self,
        merchant: Merchant,
        *,
        customer_id: str,
        storage_bric: str,
        brand: str | None,
        last4: str | None,
        exp_month: int | None,
        exp_year: int | None,
        ntid: str | None,
        con: Connection | None = None,
    ) -> PaymentMethod:
        """Record a card the gateway has already stored and verified (a Browser Post `STORAGE`
        result): no gateway call. With `con`, the insert (and its `payment_method.created` event)
        joins the caller's transaction; the caller then calls `invalidate_customer(merchant.id,
        customer_id)` after its commit (an entry cached in between lives at most the list TTL)."""
        if (
            not storage_bric
            or not storage_bric.isalnum()
            or len(storage_bric) > 40
            or not storage_bric.isascii()
        ):
            raise PaycoreError(errors.VALIDATION_FAILED, "a BRIC of 1-40 alphanumerics", param="storage_bric")
        model.refuse_pan_as_token(storage_bric, "storage_bric")
        if not customer_id or len(customer_id) > 64:
            raise PaycoreError(
                errors.VALIDATION_FAILED, "customer_id is 1-64 characters", param="customer_id"
            )
        digits = model.last4_of(last4)
        if (exp_month is None) != (exp_year is None) or (exp_month is not None and not 1 <= exp_month <= 12):
            raise PaycoreError(errors.VALIDATION_FAILED, "invalid expiry", param="exp_month")
        if exp_year is not None and exp_year < 100:
            exp_year += 2000
        new = NewMethod(
            id=uuid7(),
            merchant_id=merchant.id,
            customer_id=customer_id,
            payment_type="card",
            bric=storage_bric,
            bric_kind="storage",
            verification_status="verified",
            card_brand=wire.normalize_card_brand(brand),
            card_last4=digits,
            exp_month=exp_month,
            exp_year=exp_year,
            ntid=ntid or None,
        )
        traceparent = tracing.current_traceparent()
        if con is not None:
            pm = await self.repo.insert(con, new, "payment_method.created", traceparent)
        else:
            async with self.db.transaction() as own:
                pm = await self.repo.insert(own, new, "payment_method.created", traceparent)
        await self._invalidate([pm])
        m.PAYMENT_METHODS_CREATED.labels(self.merchant_label(merchant.slug), "card").inc()
        return pm

    # ------------------------------------------------------------------ reads
    async def get(
        self, principal: Principal, customer_id: str, method_id: uuid.UUID
    ) -> schemas.PaymentMethodOut:
        async with dl.budget(self.policy.noncritical_timeout):
            return self._out(await self._owned(principal, customer_id, method_id), principal)

    async def _customer_methods(self, merchant_id: uuid.UUID, customer_id: str) -> tuple[PaymentMethod, ...]:
        async def load() -> tuple[PaymentMethod, ...]:
            rows = await self.repo.list_for_customer(
                merchant_id, customer_id, 2 * model.MAX_METHODS_PER_CUSTOMER
            )
            return tuple(rows)

        return await self.lists.get_or_load((merchant_id, customer_id), load)

    async def list(
        self, principal: Principal, customer_id: str, query: ListQuery
    ) -> schemas.PaymentMethodList:
        merchant_id = principal.merchant.id
        after = self.cursors.decode(query.starting_after, merchant_id) if query.starting_after else None
        async with dl.budget(self.policy.noncritical_timeout):
            methods = await self._customer_methods(merchant_id, customer_id)
        selected = [pm for pm in methods if _matches(pm, query.type, query.state)]
        if after is not None:
            _, after_id = after
            ids = [pm.id for pm in selected]
            selected = selected[ids.index(after_id) + 1 :] if after_id in ids else []
        page = selected[: query.limit]
        has_more = len(selected) > query.limit
        next_cursor = (
            self.cursors.encode(page[-1].created_at, page[-1].id, merchant_id) if page and has_more else None
        )
        return schemas.PaymentMethodList(
            data=[self._out(pm, principal) for pm in page], has_more=has_more, next_cursor=next_cursor
        )

    # ------------------------------------------------------------------ state changes
    async def set_default(
        self, principal: Principal, customer_id: str, method_id: uuid.UUID
    ) -> schemas.PaymentMethodOut:
        merchant_id = principal.merchant.id
        async with dl.budget(self.policy.noncritical_timeout):
            rows: list[PaymentMethod] = []
            for attempt in range(3):
                try:
                    rows = await self.repo.set_default(method_id, merchant_id, customer_id)
                    break
                except asyncpg.ExclusionViolationError:
                    # a concurrent write gave the customer another default after our snapshot: once
                    # it has committed, the statement sees it and moves the default again
                    if attempt == 2:
                        raise PaycoreError(
                            errors.OPERATION_IN_PROGRESS, "Concurrent default changes"
                        ) from None
            await self._invalidate(rows)
            self.invalidate_customer_locally(merchant_id, customer_id)
            target = next((pm for pm in rows if pm.id == method_id), None)
            if target is None:
                current = await self._owned(principal, customer_id, method_id)
                if current.verification_status == "failed":
                    raise PaycoreError(model.PAYMENT_METHOD_VERIFICATION_FAILED)
                raise PaycoreError(
                    model.PAYMENT_METHOD_INACTIVE, "An inactive payment method cannot be the default"
                )
        return self._out(target, principal)

    async def set_active(
        self, principal: Principal, customer_id: str, method_id: uuid.UUID, *, active: bool
    ) -> schemas.PaymentMethodOut:
        merchant_id = principal.merchant.id
        async with dl.budget(self.policy.noncritical_timeout):
            pm = await self.repo.set_active(
                method_id,
                merchant_id,
                customer_id,
                active,
                None if active else "merchant_request",
                None if active else "payment_method.deactivated",
                tracing.current_traceparent(),
            )
            if pm is not None:
                await self._invalidate([pm])
                log.info("payment_method_status_changed", payment_method_id=str(pm.id), active=active)
                return self._out(pm, principal)
            current = await self._owned(principal, customer_id, method_id)
            if active and current.verification_status == "failed":
                raise PaycoreError(
                    model.PAYMENT_METHOD_VERIFICATION_FAILED,
                    "A bank account that failed verification cannot be activated: save it again",
                )
            return self._out(current, principal)  # already in that state

    async def delete(
        self, principal: Principal, customer_id: str, method_id: uuid.UUID
    ) -> schemas.DeletedOut:
        async with dl.budget(self.policy.noncritical_timeout):
            pm = await self.repo.soft_delete(method_id, principal.merchant.id, customer_id)
            if pm is None:
                raise PaycoreError(model.PAYMENT_METHOD_NOT_FOUND)
        await self._invalidate([pm])
        return schemas.DeletedOut(id=pm.id)

    # ------------------------------------------------------------------ the payment path
    async def resolve_for_payment(
        self, merchant: Merchant, method_id: uuid.UUID, *, customer_id: str | None = None
    ) -> PaymentMethod:
        """The method to charge, or the stable problem that forbids it (`model.check_usable`)."""
        pm = await self._load(method_id)
        return model.check_usable(pm, merchant.id, self.clock.now(), customer_id=customer_id)

    def mark_used(self, method_id: uuid.UUID) -> None:
        """Record `last_used_at` in a supervised background task (LATENCY-6): bounded by 5 s, a
        failure is logged and never fails the payment."""
        self.tasks.spawn("payment_methods.last_used", self._touch(method_id, self.clock.now()))

    async def _touch(self, method_id: uuid.UUID, at: datetime) -> None:
        try:
            async with asyncio.timeout(TOUCH_TIMEOUT):
                found = await self.repo.touch(method_id, at)
        except Exception as exc:
            log.warning(
                "payment_method_last_used_failed", payment_method_id=str(method_id), error=type(exc).__name__
            )
            return
        if found is not None:
            self._drop(method_id, *found)
            await self._publish([_key(method_id, *found)])
        else:
            self.methods.invalidate(method_id)

    # ------------------------------------------------------------------ jobs
    async def verify_due(self, *, now: datetime | None = None) -> int:
        """`ach.verification_sweep`: every pending bank account whose pre-note has gone
        `verification_days` banking days without a return becomes `verified` (batches of
        `batch_size`, one statement per batch, events in the same statement)."""
        now = now or self.clock.now()
        cutoff = calendar.verification_cutoff(now, self.policy.verification_days)
        total = 0
        for _ in range(_MAX_SWEEP_BATCHES):
            due = await self.repo.due_for_verification(cutoff, self.policy.batch_size)
            if not due:
                break
            verified = await self.repo.verify_batch([d[0] for d in due], tracing.current_traceparent())
            await self._invalidate(verified)
            if verified:
                m.ACH_VERIFICATIONS.labels("verified").inc(len(verified))
            total += len(verified)
            if len(due) < self.policy.batch_size:
                break
        if total:
            log.info("ach_accounts_verified", count=total, cutoff=cutoff.isoformat())
        return total

    async def refresh_ach_tokens(self, *, now: datetime | None = None) -> RefreshResult:
        """`ach.token_refresh`: a bank account whose token is the pre-note's Financial BRIC (savings,
        or a checking account whose storage conversion failed) lapses after 13 months. Before that
        (`token_refresh_before`), a new $0 pre-note from the token itself (`CKC0`/`CKS0` with
        `ORIG_AUTH_GUID`, epx-protocol.md §7.2) gives a fresh BRIC; a checking account is converted
        to a Storage BRIC again (`CKC8`). A declined pre-note deactivates the account (it was closed
        or refused); a failed or unknown one leaves it for the next run."""
        now = now or self.clock.now()
        result = RefreshResult()
        due = await self.repo.ach_tokens_expiring(
            now + self.policy.token_refresh_before, self.policy.batch_size
        )
        if not due:
            return result
        merchants = {mm.id: mm for mm in await self.merchants()}
        for method in due:
            merchant = merchants.get(method.merchant_id)
            if merchant is None or not merchant.active:
                result.skipped += 1
                continue
            if method.bric_expires_at is not None and method.bric_expires_at <= now:
                outcome = await self._token_lapsed(method)
            else:
                outcome = await self._refresh_token(merchant, method, now)
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
        log.info("ach_tokens_refreshed", **result.outcomes, skipped=result.skipped)
        return result

    async def _token_lapsed(self, method: PaymentMethod) -> str:
        """Too late (the worker was down, or the renewal kept failing): the gateway no longer knows
        the token, so the account is deactivated and must be saved anew."""
        async with self.db.transaction() as con:
            changed = await self.repo.deactivate_for_change(
                con, method.id, "token_expired", tracing.current_traceparent()
            )
        if changed is not None:
            await self._invalidate([changed])
        log.warning("ach_token_lapsed", payment_method_id=str(method.id))
        return "lapsed"

    async def _refresh_token(self, merchant: Merchant, method: PaymentMethod, now: datetime) -> str:
        account_type: wire.AccountType = "savings" if method.account_type == "savings" else "checking"
        key = f"ach-token-refresh:{method.id}"

        def build(tran_nbr: int) -> GatewayRequest:
            return wire.for_ach_prenote(
                merchant=merchant.epx,
                tran_nbr=tran_nbr,
                account_type=account_type,
                at=now,
                tz=self._zone(merchant),
                storage_bric=method.bric,
                sec_code=wire.stored_sec_code(method.sec_code),
            )

        async def nothing_first(_con: Connection, _txn: uuid.UUID) -> None:
            return None

        async with dl.budget(self.policy.noncritical_timeout):
            prenote_id, request = await self._reserve_new(
                merchant, kind="prenote", build=build, customer_id=method.customer_id,
                orig_auth_guid=method.bric, now=now, first=nothing_first,
            )  # fmt: skip
            started = time.perf_counter()
            result = await self._call(request, prenote_id, merchant.id, key)
            self._gateway_metrics(merchant, request, result, started)
            response = result.response
            if result.outcome == "declined":
                async with self.db.transaction() as con:
                    await self.repo.record_zero_dollar(
                        con, self._outcome_args(prenote_id, result, "declined", method.id)
                    )
                    changed = await self.repo.deactivate_for_change(
                        con, method.id, "token_refresh_declined", tracing.current_traceparent()
                    )
                if changed is not None:
                    await self._invalidate([changed])
                return "declined"
            if result.outcome != "approved" or response is None or not response.auth_guid:
                await self.repo.record_zero_dollar(
                    None, self._outcome_args(prenote_id, result, "failed", method.id)
                )
                log.warning(
                    "ach_token_refresh_failed",
                    payment_method_id=str(method.id),
                    outcome=result.outcome,
                    reason=result.error_code,
                )
                return "failed"
            token: tuple[str, str, datetime | None] = (response.auth_guid, "financial", _add_months(now, 13))
            records = [(prenote_id, result, "approved")]
            if account_type == "checking":
                stored = await self._store_ach(
                    merchant, key, prenote_id, result, response.auth_guid, None, method.customer_id, now
                )
                if stored is not None:
                    records = [stored[0]]  # the pre-note's outcome was recorded before the storage call
                    if stored[1] is not None:
                        token = (stored[1], "storage", None)
            async with self.db.transaction() as con:
                for txn_id, txn_result, status in records:
                    await self.repo.record_zero_dollar(
                        con, self._outcome_args(txn_id, txn_result, status, method.id)
                    )
                changed = await self.repo.replace_ach_token(con, method.id, method.bric, token, prenote_id)
            if changed is not None:
                await self._invalidate([changed])
            return token[1]

    async def ingest_returns(self, *, now: datetime | None = None) -> ReturnsResult:
        """`ach.returns_ingest`: read each active merchant's returns report (the last
        `returns_lookback_days` of return dates) and apply every return once."""
        result = ReturnsResult()
        if self.returns is None:
            return result
        now = now or self.clock.now()
        since = (now - timedelta(days=self.policy.returns_lookback_days)).date()
        sums: dict[str, list[int]] = {}
        for merchant in await self.merchants():
            if not merchant.active:
                continue
            result.merchants += 1
            try:
                returns = await self.returns.returns_since(merchant.epx, since)
            except ReturnsUnavailable as exc:
                result.unavailable += 1
                log.warning("ach_returns_unavailable", merchant_id=str(merchant.id), reason=str(exc))
                continue
            for entry in returns:
                result.seen += 1
                action = await self._apply_return(merchant, entry)
                if action is None:
                    result.duplicates += 1
                    continue
                result.applied += 1
                result.actions[action] = result.actions.get(action, 0) + 1
            counts = await self.repo.return_rate_counts(
                merchant.id,
                now - timedelta(days=self.policy.rate_window_days),
                (now - timedelta(days=self.policy.rate_window_days)).date(),
            )
            bucket = sums.setdefault(self.merchant_label(merchant.slug), [0, 0, 0, 0])
            for index, value in enumerate(counts):
                bucket[index] += value
        for label, (debits, unauthorized, administrative, total) in sums.items():
            for cls, rate in model.return_rates(debits, unauthorized, administrative, total).items():
                m.ACH_RETURN_RATE.labels(label, cls).set(rate)
        return result

    async def _apply_return(self, merchant: Merchant, entry: AchReturn) -> str | None:
        """Apply one return (or NOC) once; None when it was already ingested."""
        code = entry.return_code or entry.change_code
        assert code is not None
        kind = "return" if entry.return_code else "noc"
        if not (model.valid_return_code(code) if kind == "return" else model.valid_change_code(code)):
            log.warning("ach_return_code_invalid", tran_nbr=entry.tran_nbr)
            return "invalid"
        cls = model.return_class(code).value if kind == "return" else None
        traceparent = tracing.current_traceparent()
        changed: PaymentMethod | None = None
        async with self.db.transaction() as con:
            txn = await self.repo.transaction_by_tran_nbr(con, merchant.id, entry.tran_nbr)
            entry_kind = "unknown"
            method: PaymentMethod | None = None
            if txn is not None and txn["payment_type"] == "ach":
                entry_kind = _ENTRY_KINDS.get(txn["type"], "unknown")
                if entry_kind == "prenote":
                    method = await self.repo.by_prenote(con, txn["id"])
                elif entry_kind == "debit" and txn["payment_method_id"] is not None:
                    method = await self.repo.lock(con, txn["payment_method_id"])
            decision = model.decide_return(
                entry=entry_kind,
                code=entry.return_code,
                change_code=entry.change_code,
                verified=method is not None and method.verification_status == "verified",
                returns_after=(method.return_count + 1) if method is not None else 0,
                threshold=self.policy.return_threshold,
                method_found=method is not None,
            )
            inserted = await self.repo.insert_return(
                con,
                (
                    uuid7(),
                    merchant.id,
                    entry.tran_nbr,
                    code,
                    kind,
                    cls,
                    entry_kind,
                    txn["id"] if txn is not None else None,
                    method.id if method is not None else None,
                    decision.action.value,
                    entry.return_date,
                    entry.amount_cents,
                ),
            )
            if not inserted:
                return None
            if method is not None and decision.action is ReturnAction.FAIL_VERIFICATION:
                changed = await self.repo.fail_verification(
                    con, method.id, code, decision.reason or "verification_failed", traceparent
                )
            elif method is not None and kind == "noc" and decision.action is ReturnAction.DEACTIVATE:
                changed = await self.repo.deactivate_for_change(
                    con, method.id, decision.reason or "notification_of_change", traceparent
                )
            elif method is not None and decision.action in (ReturnAction.DEACTIVATE, ReturnAction.COUNT):
                deactivate = decision.action is ReturnAction.DEACTIVATE
                changed = await self.repo.count_return(
                    con,
                    method.id,
                    decision.reason if deactivate else None,
                    "payment_method.deactivated" if deactivate and method.is_active else None,
                    traceparent,
                )
        if changed is not None:
            await self._invalidate([changed])
        if kind == "return" and cls is not None:
            m.ACH_RETURNS.labels(self.merchant_label(merchant.slug), cls).inc()
        if decision.action is ReturnAction.FAIL_VERIFICATION and changed is not None:
            m.ACH_VERIFICATIONS.labels("failed").inc()
        log.info(
            "ach_return_applied",
            tran_nbr=entry.tran_nbr,
            code=code,
            entry=entry_kind,
            action=decision.action.value,
            payment_method_id=str(method.id) if method is not None else None,
        )
        return decision.action.value

    async def purge_deleted(self, *, batch: int = 1000) -> int:
        """`payment_methods.retention`: soft-deleted methods older than 90 days are removed for
        good; $0 gateway rows left pending by a crash are closed as `failed`."""
        await self.repo.abandon_zero_dollar(self.policy.abandon_after)
        total = 0
        while True:
            purged = await self.repo.purge_deleted(model.RETENTION_DAYS, batch)
            total += purged
            if purged < batch:
                break
        if total:
            log.info("payment_methods_purged", count=total)
        return total


# --- pure helpers ----------------------------------------------------------------------------------
_STATES: Final[dict[str, Callable[[PaymentMethod], bool]]] = {
    "active": lambda pm: pm.is_active,
    "inactive": lambda pm: not pm.is_active,
    "pending": lambda pm: pm.verification_status == "pending",
    "verified": lambda pm: pm.verification_status == "verified",
    "failed": lambda pm: pm.verification_status == "failed",
}
STATES: Final = frozenset(_STATES)
_ENTRY_KINDS: Final = {"prenote": "prenote", "sale": "debit", "refund": "credit"}
TYPES: Final = frozenset({"card", "ach"})


def _matches(pm: PaymentMethod, type_: str | None, state: str | None) -> bool:
    if type_ is not None and pm.payment_type != type_:
        return False
    return state is None or _STATES[state](pm)


def _type_of(cmd: schemas.SavePaymentMethod) -> str:
    return "card" if isinstance(cmd, schemas.SaveCard) else "ach"


def _billing(billing: schemas.BillingIn | None) -> wire.Billing | None:
    if billing is None:
        return None
    return wire.Billing(
        first_name=billing.first_name,
        last_name=billing.last_name,
        address=billing.address,
        city=billing.city,
        state=billing.state,
        zip_code=billing.zip_code,
    )


_PARAMS: Final = {
    "ORIG_AUTH_GUID": "token",
    "FIRST_NAME": "holder.first_name",
    "LAST_NAME": "holder.last_name",
    "ADDRESS": "billing.address",
    "CITY": "billing.city",
    "STATE": "billing.state",
    "ZIP_CODE": "billing.zip_code",
    "ACCOUNT_NBR": "account_number",
    "ROUTING_NBR": "routing_number",
    "STD_ENTRY_CLASS": "sec_code",
}


def _param_of(field: str) -> str | None:
    return _PARAMS.get(field)


def _key(method_id: uuid.UUID | None, merchant_id: uuid.UUID, customer_id: str) -> str:
    """One invalidation: `pm|<method id or empty>|<merchant id>|<customer id>` (customer ids never
    contain `|` or `;`)."""
    return f"pm|{method_id or ''}|{merchant_id}|{customer_id}"


def _add_months(at: datetime, months: int) -> datetime:
    """`at` plus whole months, the day clamped to the target month's length (UTC)."""
    at = at.astimezone(UTC)
    index = at.year * 12 + at.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    following = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    last_day = (following - timedelta(days=1)).day
    return at.replace(year=year, month=month, day=min(at.day, last_day))
