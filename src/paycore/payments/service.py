"""Card payment use cases: sale, authorize, capture, void, refund, get, list, reconcile.

The order of every money-moving operation (design.md §4, §5):
1. One short DB step claims the Idempotency-Key and writes the transaction as `pending` with its
   deterministic TRAN_NBR (for follow-ons: under a row lock on the group root, after the rules).
2. The gateway is called with no database connection held.
3. One statement records the outcome, the group ledger, the idempotent response and the outbox
   event together.
An ambiguous outcome leaves the transaction `unknown` (202); reconciliation resolves it against
the gateway's report. It is never re-sent under a new TRAN_NBR.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import structlog

from paycore.gateway.epx import wire
from paycore.gateway.port import (
    UNAVAILABLE_ERROR_CODES,
    CallTrace,
    GatewayRequest,
    GatewayResponse,
    GatewayResult,
    MerchantKey,
    ReportedTransaction,
    ReportUnavailable,
    TransactionProcessor,
    TransactionReport,
)
from paycore.idempotency.model import IdempotencyRequest, Replay, StoredOutcome, decide
from paycore.idempotency.repository import IdempotencyRepository
from paycore.idempotency.service import ServiceResponse
from paycore.kernel import codec, errors
from paycore.kernel.clock import Clock
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.kernel.money import GATEWAY_CURRENCIES
from paycore.merchants.model import Merchant, Principal
from paycore.payment_methods.model import ACH_AUTH_NOT_SUPPORTED, PaymentMethod, refuse_pan_as_token
from paycore.payments import model, schemas
from paycore.payments.metrics import PaymentMetrics
from paycore.payments.model import Group, TxType
from paycore.payments.repository import NewTransaction, PaymentRepository, TxnRow, group_of
from paycore.platform.context import current_request_id
from paycore.platform.cursor import CursorCodec
from paycore.platform.db import Database
from paycore.platform.observability import metrics as m
from paycore.platform.observability import tracing
from paycore.platform.resilience import deadline as dl
from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.payments")

MAX_TRAN_NBR_TRIES: Final = 5


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    status: str | None = None
    customer_id: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None
    starting_after: str | None = None
    ending_before: str | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    critical: float = 45.0
    noncritical: float = 30.0


def _problem_body(exc: PaycoreError) -> bytes:
    return codec.encode(exc.problem(current_request_id()))


_EVENTS: Final = {
    (TxType.SALE, "approved"): "payment.succeeded",
    (TxType.AUTH, "approved"): "payment.succeeded",
    (TxType.SALE, "declined"): "payment.failed",
    (TxType.AUTH, "declined"): "payment.failed",
    (TxType.SALE, "failed"): "payment.failed",
    (TxType.AUTH, "failed"): "payment.failed",
    (TxType.CAPTURE, "approved"): "payment.captured",
    (TxType.REFUND, "approved"): "payment.refunded",
    (TxType.VOID, "approved"): "payment.voided",
}


class SavedPaymentMethods(Protocol):
    """What a payment needs from saved payment methods (`payment_methods.service`)."""

    async def resolve_for_payment(
        self, merchant: Merchant, method_id: uuid.UUID, *, customer_id: str | None = None
    ) -> PaymentMethod: ...

    def mark_used(self, method_id: uuid.UUID) -> None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionCharge:
    """One attempt to collect one period of a subscription (`subscriptions.service`): a
    merchant-initiated recurring charge of a saved payment method. The caller chooses
    `transaction_id` and `idempotency_key` before the attempt and never changes them for it."""

    subscription_id: uuid.UUID
    transaction_id: uuid.UUID
    idempotency_key: str
    payment_method_id: uuid.UUID
    customer_id: str | None
    amount: int
    currency: str
    original_amount: int | None = None  # ORIG_AUTH_AMOUNT: the subscription's first approved charge
    description: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionChargeResult:
    """`status`: approved, declined, failed (provably not processed) or pending (in flight, or
    `unknown` until reconciliation resolves it: never charged again meanwhile)."""

    transaction_id: uuid.UUID
    status: str
    decline_category: str | None = None
    gateway_code: str | None = None
    failure_code: str | None = None


class PaymentService:
    def __init__(
        self,
        *,
        db: Database,
        repository: PaymentRepository,
        idempotency: IdempotencyRepository,
        gateway: TransactionProcessor,
        report: TransactionReport | None,
        merchant_lookup: Callable[[uuid.UUID], Any],
        clock: Clock,
        cursors: CursorCodec,
        metrics: PaymentMetrics,
        tasks: TaskSupervisor,
        timeouts: Timeouts = Timeouts(),
        max_depth: int = 10,
        batch_timezone: str = "UTC",
        payment_methods: SavedPaymentMethods | None = None,
        batch_max_ids: int = 100,
    ) -> None:
        self.db = db
        self.batch_max_ids = batch_max_ids
        self.payment_methods = payment_methods
        self.repo = repository
        self.idem = idempotency
        self.gateway = gateway
        self.report = report
        self.merchant_lookup = merchant_lookup
        self.clock = clock
        self.cursors = cursors
        self.metrics = metrics
        self.tasks = tasks
        self.timeouts = timeouts
        self.max_depth = max_depth
        self.default_tz = batch_timezone
        self._zones: dict[str, ZoneInfo] = {}

    # ------------------------------------------------------------------ helpers
    def _zone(self, merchant: Merchant) -> ZoneInfo:
        name = merchant.timezone or self.default_tz
        zone = self._zones.get(name)
        if zone is None:
            zone = self._zones[name] = ZoneInfo(name)
        return zone

    def current_batch_id(self, merchant: Merchant) -> str:
        return wire.batch_id(self.clock.now(), self._zone(merchant))

    async def _replay(self, merchant_id: uuid.UUID, idem: IdempotencyRequest) -> Replay:
        stored = await self.idem.get(None, merchant_id, idem.key)
        if stored is None:
            # The key vanished between claim and read (released after a failure): try again.
            raise PaycoreError(errors.IDEMPOTENCY_IN_FLIGHT, headers={"Retry-After": "1"})
        return self._replay_of(stored, idem)

    @staticmethod
    def _replay_of(stored: StoredOutcome, idem: IdempotencyRequest) -> Replay:
        decided = decide(stored, idem)
        m.IDEMPOTENCY_OUTCOMES.labels("replayed").inc()
        assert decided.response_status is not None and decided.response_body is not None
        return Replay(decided.response_status, decided.response_body)

    def _outbox(self, event_type: str | None, payment: schemas.PaymentOut) -> tuple[Any, ...]:
        if event_type is None:
            return (None, None, None, None)
        return (uuid7(), event_type, {"object": payment}, tracing.current_traceparent())

    async def _call_gateway(self, request: GatewayRequest, txn_id: uuid.UUID) -> GatewayResult:
        """The gateway call. On cancellation (client gone, shutdown, deadline) the row is marked
        `unknown` when the request may have reached the gateway, else `failed` with its key
        released. Either way it is never re-sent under a new TRAN_NBR."""
        trace = CallTrace()
        try:
            return await self.gateway.process(request, trace=trace)
        except asyncio.CancelledError:
            if trace.may_have_reached_gateway:
                self.tasks.spawn(
                    "payments.mark_unknown", self.repo.mark_unknown(txn_id, "cancelled", trace.attempts)
                )
            else:
                self.tasks.spawn("payments.mark_not_sent", self.repo.mark_not_sent(txn_id))
            raise

    # ------------------------------------------------------------------ create
    async def create(
        self, principal: Principal, cmd: schemas.CreatePayment, idem: IdempotencyRequest
    ) -> ServiceResponse:
        operation = TxType.SALE if cmd.capture else TxType.AUTH
        with tracing.span(f"payment.{operation.value}", _span_attributes(principal, "card", cmd.amount)):
            return await self._create(principal, cmd, idem)

    async def _create(
        self, principal: Principal, cmd: schemas.CreatePayment, idem: IdempotencyRequest
    ) -> ServiceResponse:
        merchant = principal.merchant
        started = time.perf_counter()
        tx_type = TxType.SALE if cmd.capture else TxType.AUTH
        if cmd.currency not in GATEWAY_CURRENCIES:
            raise PaycoreError(
                errors.CURRENCY_NOT_SUPPORTED,
                f"{cmd.currency} is not supported by the gateway",
                param="currency",
            )
        if cmd.token is not None and cmd.payment_method_id is not None:
            raise PaycoreError(
                errors.VALIDATION_FAILED,
                "give token or payment_method_id, not both",
                param="payment_method_id",
            )
        if cmd.token is None and cmd.payment_method_id is None:
            raise PaycoreError(errors.VALIDATION_FAILED, "token is required", param="token")
        refuse_pan_as_token(cmd.token)
        async with dl.budget(self.timeouts.critical):
            saved = await self._saved_method(merchant, cmd)
            bric = saved.bric if saved is not None else cmd.token
            assert bric is not None
            payment_type = saved.payment_type if saved is not None else "card"
            txn_id = uuid7()
            now = self.clock.now()
            zone = self._zone(merchant)
            created_at: datetime | None = None
            request: GatewayRequest | None = None
            for k in range(MAX_TRAN_NBR_TRIES):
                tran_nbr = wire.tran_nbr_for(txn_id, k)
                request = _root_request(cmd, saved, bric, merchant.epx, tran_nbr, now, zone)
                new = NewTransaction(
                    id=txn_id,
                    merchant_id=merchant.id,
                    group_id=txn_id,
                    parent_id=None,
                    depth=0,
                    type=tx_type.value,
                    payment_type=payment_type,
                    source="api",
                    amount=cmd.amount,
                    currency=cmd.currency,
                    tran_nbr=tran_nbr,
                    tran_type=request.tran_type,
                    batch_id=wire.batch_id(now, zone),
                    orig_auth_guid=bric,
                    gateway_request=request.storable_body(),
                    customer_id=cmd.customer_id or (saved.customer_id if saved is not None else None),
                    payment_method_id=cmd.payment_method_id,
                    description=cmd.description,
                    metadata=cmd.metadata,
                )
                try:
                    created_at = await self.repo.begin(merchant.id, idem, new)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name == "uq_transactions_merchant_tran_nbr":
                        continue
                    raise
                if created_at is None:
                    raise await self._replay(merchant.id, idem)
                break
            else:
                raise PaycoreError(errors.INTERNAL_ERROR, "could not allocate a TRAN_NBR")
            assert request is not None
            m.IDEMPOTENCY_OUTCOMES.labels("new").inc()
            result = await self._call_gateway(request, txn_id)
            if saved is not None and self.payment_methods is not None and result.outcome == "approved":
                self.payment_methods.mark_used(saved.id)  # LATENCY-6: a supervised background update
            return await self._finish(
                merchant, principal.livemode, new, created_at, result, started, root=None, children=[]
            )

    async def _saved_method(self, merchant: Merchant, cmd: schemas.CreatePayment) -> PaymentMethod | None:
        """The saved payment method to charge (merchant-scoped, usable), or None for a token."""
        if cmd.payment_method_id is None:
            return None
        if self.payment_methods is None:
            raise PaycoreError(errors.VALIDATION_FAILED, "saved payment methods are not available")
        saved = await self.payment_methods.resolve_for_payment(
            merchant, cmd.payment_method_id, customer_id=cmd.customer_id
        )
        if saved.payment_type == "ach" and not cmd.capture:
            raise PaycoreError(ACH_AUTH_NOT_SUPPORTED, param="capture")
        return saved

    # ------------------------------------------------------------------ subscriptions
    async def charge_subscription(
        self, merchant: Merchant, charge: SubscriptionCharge
    ) -> SubscriptionChargeResult:
        """A subscription's charge: the sale flow on its saved payment method, as a recurring
        merchant-initiated transaction (card: `ACI_EXT=RB`, the NTID as `ORIG_AUTH_TRAN_IDENT` when
        known, `ORIG_AUTH_AMOUNT`; bank account: the ACH debit), recorded with source
        `subscription` and the subscription's id, under the attempt's internal Idempotency-Key.

        Idempotent per attempt: when `transaction_id` exists or the key is taken, nothing is sent
        and the first call's state is answered (`pending` while it is in flight or unknown). A
        payment method that cannot be charged raises its problem (4xx) before anything is stored.
        """
        attributes: dict[str, Any] = {
            "paycore.merchant_id": str(merchant.id),
            "paycore.subscription_id": str(charge.subscription_id),
            "paycore.amount": charge.amount,
        }
        with tracing.span("payment.subscription_charge", attributes):
            return await self._charge_subscription(merchant, charge)

    async def _charge_subscription(
        self, merchant: Merchant, charge: SubscriptionCharge
    ) -> SubscriptionChargeResult:
        started = time.perf_counter()
        txn_id = charge.transaction_id
        if charge.currency not in GATEWAY_CURRENCIES:
            raise PaycoreError(errors.CURRENCY_NOT_SUPPORTED, param="currency")
        async with dl.budget(self.timeouts.critical):
            if await self.repo.get_transaction(txn_id) is not None:
                return await self._subscription_charge_state(txn_id)
            if self.payment_methods is None:
                raise PaycoreError(errors.VALIDATION_FAILED, "saved payment methods are not available")
            saved = await self.payment_methods.resolve_for_payment(
                merchant, charge.payment_method_id, customer_id=charge.customer_id
            )
            idem = IdempotencyRequest(
                key=charge.idempotency_key,
                fingerprint=hashlib.sha256(
                    f"{charge.idempotency_key}|{txn_id}|{charge.amount}|{charge.currency}".encode()
                ).digest(),
                method="POST",
                path=f"/v1/subscriptions/{charge.subscription_id}/charges",
            )
            now = self.clock.now()
            zone = self._zone(merchant)
            for k in range(MAX_TRAN_NBR_TRIES):
                tran_nbr = wire.tran_nbr_for(txn_id, k)
                try:
                    request = _subscription_request(saved, charge, merchant.epx, tran_nbr, now, zone)
                except wire.RequestInvalid as exc:
                    raise PaycoreError(
                        errors.VALIDATION_FAILED, str(exc), param="payment_method_id"
                    ) from None
                new = NewTransaction(
                    id=txn_id,
                    merchant_id=merchant.id,
                    group_id=txn_id,
                    parent_id=None,
                    depth=0,
                    type=TxType.SALE.value,
                    payment_type=saved.payment_type,
                    source="subscription",
                    amount=charge.amount,
                    currency=charge.currency,
                    tran_nbr=tran_nbr,
                    tran_type=request.tran_type,
                    batch_id=wire.batch_id(now, zone),
                    orig_auth_guid=saved.bric,
                    gateway_request=request.storable_body(),
                    customer_id=charge.customer_id or saved.customer_id,
                    payment_method_id=saved.id,
                    subscription_id=charge.subscription_id,
                    description=charge.description,
                )
                try:
                    created_at = await self.repo.begin(merchant.id, idem, new)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name == "uq_transactions_merchant_tran_nbr":
                        continue
                    if exc.constraint_name == "transactions_pkey":  # made by a concurrent run
                        return await self._subscription_charge_state(txn_id)
                    raise
                if created_at is None:  # the attempt's key is taken: it was made before
                    return await self._subscription_charge_state(txn_id)
                break
            else:
                raise PaycoreError(errors.INTERNAL_ERROR, "could not allocate a TRAN_NBR")
            m.IDEMPOTENCY_OUTCOMES.labels("new").inc()
            result = await self._call_gateway(request, txn_id)
            if result.outcome == "approved" and self.payment_methods is not None:
                self.payment_methods.mark_used(saved.id)
            await self._finish(
                merchant,
                merchant.environment == "production",
                new,
                created_at,
                result,
                started,
                root=None,
                children=[],
            )
        response = result.response
        return SubscriptionChargeResult(
            transaction_id=txn_id,
            status="pending" if result.outcome == "unknown" else result.outcome,
            decline_category=response.category.value if response and result.outcome == "declined" else None,
            gateway_code=response.auth_resp if response else None,
            failure_code=result.error_code if result.outcome in ("failed", "unknown") else None,
        )

    async def _subscription_charge_state(self, txn_id: uuid.UUID) -> SubscriptionChargeResult:
        """The state of an attempt made before (its transaction row; none yet: still in flight)."""
        found = await self.repo.get_transaction(txn_id)
        if found is None:
            return SubscriptionChargeResult(transaction_id=txn_id, status="pending")
        row = found[0]
        status = row.status if row.status in ("approved", "declined", "failed") else "pending"
        return SubscriptionChargeResult(
            transaction_id=txn_id,
            status=status,
            decline_category=row.decline_category,
            gateway_code=row.auth_resp,
            failure_code=row.failure_code,
        )

    # ------------------------------------------------------------------ follow-ons
    async def capture(
        self,
        principal: Principal,
        payment_id: uuid.UUID,
        cmd: schemas.CapturePayment,
        idem: IdempotencyRequest,
    ) -> ServiceResponse:
        merchant = principal.merchant

        def plan(group: Group, root: TxnRow, children: list[TxnRow]) -> tuple[TxType, int, TxnRow]:
            amount = cmd.amount if cmd.amount is not None else group.capturable
            model.check_capture(group, amount, multi_capture=merchant.multi_capture)
            return TxType.CAPTURE, amount, root

        return await self._traced_follow_on("capture", principal, payment_id, idem, plan, cmd.amount)

    async def refund(
        self,
        principal: Principal,
        payment_id: uuid.UUID,
        cmd: schemas.RefundPayment,
        idem: IdempotencyRequest,
    ) -> ServiceResponse:
        def plan(group: Group, root: TxnRow, children: list[TxnRow]) -> tuple[TxType, int, TxnRow]:
            amount = cmd.amount if cmd.amount is not None else group.refundable
            target = model.check_refund(group, amount)
            return TxType.REFUND, amount, _row_of(target.id, root, children)

        return await self._traced_follow_on("refund", principal, payment_id, idem, plan, cmd.amount)

    async def void(
        self, principal: Principal, payment_id: uuid.UUID, cmd: schemas.VoidPayment, idem: IdempotencyRequest
    ) -> ServiceResponse:
        merchant = principal.merchant

        def plan(group: Group, root: TxnRow, children: list[TxnRow]) -> tuple[TxType, int, TxnRow]:
            target = model.check_void(group, cmd.capture_id, current_batch_id=self.current_batch_id(merchant))
            return TxType.VOID, target.amount, _row_of(target.id, root, children)

        return await self._traced_follow_on("void", principal, payment_id, idem, plan, None)

    async def _traced_follow_on(
        self,
        operation: str,
        principal: Principal,
        payment_id: uuid.UUID,
        idem: IdempotencyRequest,
        plan: Callable[[Group, TxnRow, list[TxnRow]], tuple[TxType, int, TxnRow]],
        amount: int | None,
    ) -> ServiceResponse:
        attributes = _span_attributes(principal, None, amount)
        attributes["paycore.payment_id"] = str(payment_id)
        with tracing.span(f"payment.{operation}", attributes):
            return await self._follow_on(principal, payment_id, idem, plan)

    async def _follow_on(
        self,
        principal: Principal,
        payment_id: uuid.UUID,
        idem: IdempotencyRequest,
        plan: Callable[[Group, TxnRow, list[TxnRow]], tuple[TxType, int, TxnRow]],
    ) -> ServiceResponse:
        merchant = principal.merchant
        started = time.perf_counter()
        async with dl.budget(self.timeouts.critical):
            txn_id = uuid7()
            now = self.clock.now()
            zone = self._zone(merchant)
            for k in range(MAX_TRAN_NBR_TRIES):
                try:
                    async with self.db.transaction() as con:
                        if not await self.idem.claim(con, merchant.id, idem, txn_id):
                            stored = await self.idem.get(con, merchant.id, idem.key)
                            assert stored is not None
                            raise self._replay_of(stored, idem)
                        locked = await self.repo.lock_group(con, payment_id, merchant.id)
                        if locked is None:
                            raise PaycoreError(errors.PAYMENT_NOT_FOUND)
                        root, children = locked
                        group = group_of(root, children)
                        tx_type, amount, target = plan(group, root, children)
                        depth = model.check_depth(group, self.max_depth, target.entry())
                        if target.auth_guid is None:
                            raise PaycoreError(errors.PAYMENT_OUTCOME_UNKNOWN, "The gateway token is missing")
                        tran_nbr = wire.tran_nbr_for(txn_id, k)
                        request = _follow_on_request(
                            tx_type,
                            merchant.epx,
                            tran_nbr,
                            amount,
                            target.auth_guid,
                            now,
                            zone,
                            root.tran_type,
                        )
                        new = NewTransaction(
                            id=txn_id,
                            merchant_id=merchant.id,
                            group_id=root.id,
                            parent_id=target.id,
                            depth=depth,
                            type=tx_type.value,
                            payment_type=root.payment_type,
                            source="api",
                            amount=amount,
                            currency=root.currency.strip(),
                            tran_nbr=tran_nbr,
                            tran_type=request.tran_type,
                            batch_id=wire.batch_id(now, zone),
                            orig_auth_guid=target.auth_guid,
                            gateway_request=request.storable_body(),
                        )
                        created_at = await self.repo.insert(con, new)
                    break
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name == "uq_transactions_merchant_tran_nbr":
                        continue
                    raise
            else:
                raise PaycoreError(errors.INTERNAL_ERROR, "could not allocate a TRAN_NBR")
            m.IDEMPOTENCY_OUTCOMES.labels("new").inc()
            result = await self._call_gateway(request, txn_id)
            return await self._finish(
                merchant, principal.livemode, new, created_at, result, started, root=root, children=children
            )

    # ------------------------------------------------------------------ outcome
    async def _finish(
        self,
        merchant: Merchant,
        livemode: bool,
        new: NewTransaction,
        created_at: datetime,
        result: GatewayResult,
        started: float,
        *,
        root: TxnRow | None,
        children: list[TxnRow],
    ) -> ServiceResponse:
        status = result.outcome
        response = result.response
        row = TxnRow(
            id=new.id,
            merchant_id=new.merchant_id,
            group_id=new.group_id,
            parent_id=new.parent_id,
            depth=new.depth,
            type=new.type,
            payment_type=new.payment_type,
            status=status,
            source=new.source,
            amount=new.amount,
            currency=new.currency,
            tran_nbr=new.tran_nbr,
            tran_type=new.tran_type,
            batch_id=new.batch_id,
            orig_auth_guid=new.orig_auth_guid,
            auth_guid=response.auth_guid if response else None,
            auth_resp=response.auth_resp if response else None,
            auth_code=response.auth_code if response else None,
            auth_resp_text=response.auth_resp_text if response else None,
            avs_result=response.avs_result if response else None,
            cvv_result=response.cvv_result if response else None,
            card_brand=response.card_brand if response else None,
            card_last4=response.card_last4 if response else None,
            ntid=response.ntid if response else None,
            decline_category=response.category.value if response and status == "declined" else None,
            failure_code=result.error_code if status in ("failed", "unknown") else None,
            attempts=result.attempts,
            customer_id=new.customer_id,
            payment_method_id=new.payment_method_id,
            subscription_id=new.subscription_id,
            description=new.description,
            metadata=new.metadata,
            amount_captured=0,
            amount_refunded=0,
            voided_at=None,
            created_at=created_at,
            updated_at=self.clock.now(),
            resolved_at=None,
        )
        current = tracing.current_span()
        if current.is_recording():
            current.set_attribute("paycore.transaction_id", str(new.id))
            current.set_attribute("paycore.payment_type", new.payment_type)
            current.set_attribute("paycore.status", status)
            if status in ("failed", "unknown"):
                tracing.set_error(current, result.error_code or status)
        try:
            return await self._record(merchant, livemode, row, result, root=root, children=children)
        finally:
            self.metrics.record(
                merchant_slug=merchant.slug,
                payment_type=new.payment_type,
                transaction_type=new.type,
                status=status,
                amount=new.amount,
                currency=new.currency,
                duration=time.perf_counter() - started,
                decline_category=row.decline_category,
            )

    async def _record(
        self,
        merchant: Merchant,
        livemode: bool,
        row: TxnRow,
        result: GatewayResult,
        *,
        root: TxnRow | None,
        children: list[TxnRow],
        con: Any = None,
        event_override: str | None = None,
    ) -> ServiceResponse:
        tx_type = TxType(row.type)
        status = row.status
        if root is None:
            root_row, kids = row, children
        else:
            root_row, kids = root, [*[c for c in children if c.id != row.id], row]
        group = group_of(root_row, kids)
        payment = schemas.payment_out(root_row, kids, group, livemode=livemode)
        captured_delta = refunded_delta = 0
        void_root = False
        if status == "approved":
            if tx_type is TxType.SALE or tx_type is TxType.CAPTURE:
                captured_delta = row.amount
            elif tx_type is TxType.REFUND:
                refunded_delta = row.amount
            elif tx_type is TxType.VOID:
                assert root is not None
                if row.parent_id == root.id:
                    void_root = True
                    captured_delta = -root.amount_captured if root.type == TxType.SALE.value else 0
                else:
                    target = next((c for c in children if c.id == row.parent_id), None)
                    captured_delta = -(target.amount if target else 0)
        response, release = self._response_for(row, payment, result, is_root=root is None)
        event_type = event_override or _EVENTS.get((tx_type, status))
        outbox = self._outbox(event_type, payment)
        args = (
            row.id,
            status,
            row.auth_guid,
            row.auth_resp,
            row.auth_code,
            row.auth_resp_text,
            row.avs_result,
            row.cvv_result,
            row.card_brand,
            row.card_last4,
            row.ntid,
            row.decline_category,
            row.failure_code,
            row.attempts,
            captured_delta,
            refunded_delta,
            void_root,
            None if release else response.status,
            None if release else response.body,
            release,
            *outbox,
        )
        updated = await self.repo.record_outcome(con, args)
        if updated is None:
            log.warning("payment_outcome_already_recorded", transaction_id=str(row.id), status=status)
        if status == "unknown":
            log.warning(
                "payment_outcome_unknown",
                transaction_id=str(row.id),
                tran_nbr=row.tran_nbr,
                reason=row.failure_code,
            )
        return response

    def _response_for(
        self, row: TxnRow, payment: schemas.PaymentOut, result: GatewayResult, *, is_root: bool
    ) -> tuple[ServiceResponse, bool]:
        """(response, release_key). A request that provably never reached the gateway releases its
        Idempotency-Key, so the caller may retry it with the same key."""
        body_obj: Any = payment if is_root else schemas.operation_out(row, payment)
        status = row.status
        if status == "approved":
            return ServiceResponse(201 if row.type != "void" else 200, codec.encode(body_obj)), False
        if status == "unknown":
            return ServiceResponse(202, codec.encode(body_obj)), False
        if status == "declined":
            spec = errors.CARD_DECLINED
            detail = "The payment was declined by the issuer"
            if (
                row.type == TxType.VOID.value
                and result.response
                and _mentions_settled(result.response.auth_resp_text)
            ):
                spec, detail = errors.PAYMENT_SETTLED, errors.PAYMENT_SETTLED.title
            exc = PaycoreError(
                spec,
                detail,
                extra={
                    "decline_category": row.decline_category,
                    "gateway_code": row.auth_resp,
                    "payment_id": str(row.group_id),
                    "transaction_id": str(row.id),
                    "payment": msgspec.to_builtins(payment),
                },
            )
            return ServiceResponse(spec.status, _problem_body(exc), "application/problem+json"), False
        # failed: the gateway did not process it
        spec = (
            errors.GATEWAY_UNAVAILABLE
            if result.error_code in UNAVAILABLE_ERROR_CODES
            else errors.GATEWAY_ERROR
        )
        if (
            row.type == TxType.VOID.value
            and result.response
            and _mentions_settled(result.response.auth_resp_text)
        ):
            # the gateway closed the batch before paycore's own cut-off: refund instead
            spec = errors.PAYMENT_SETTLED
        exc = PaycoreError(
            spec,
            result.detail or spec.title if spec is not errors.PAYMENT_SETTLED else spec.title,
            extra={
                "payment_id": str(row.group_id),
                "transaction_id": str(row.id),
                "reason": result.error_code,
            },
        )
        return ServiceResponse(spec.status, _problem_body(exc), "application/problem+json"), True

    # ------------------------------------------------------------------ reads
    async def get(self, principal: Principal, payment_id: uuid.UUID) -> schemas.PaymentOut:
        async with dl.budget(self.timeouts.noncritical):
            rows = await self.repo.get_group(payment_id, principal.merchant.id)
        if not rows or rows[0].id != payment_id or rows[0].type not in ("sale", "auth"):
            # a card save (`storage`) or a pre-note is not a payment
            raise PaycoreError(errors.PAYMENT_NOT_FOUND)
        root, children = rows[0], rows[1:]
        return schemas.payment_out(root, children, group_of(root, children), livemode=principal.livemode)

    async def batch_get(self, principal: Principal, ids: list[uuid.UUID]) -> schemas.BatchGetResult:
        """Many payments in one query (API-8). Another merchant's id, a card save or a pre-note
        is `not_found`, like on a single GET; a repeated id is answered once."""
        wanted = list(dict.fromkeys(ids))
        if len(wanted) > self.batch_max_ids:
            raise PaycoreError(
                errors.VALIDATION_FAILED,
                f"at most {self.batch_max_ids} ids per request",
                param="ids",
            )
        async with dl.budget(self.timeouts.noncritical):
            rows = await self.repo.groups_by_ids(wanted, principal.merchant.id)
        groups: dict[uuid.UUID, list[TxnRow]] = {}
        for row in rows:
            groups.setdefault(row.group_id, []).append(row)
        found: dict[str, schemas.PaymentOut] = {}
        for group_id, members in groups.items():
            root = next((r for r in members if r.id == group_id), None)
            if root is None or root.type not in ("sale", "auth"):
                continue
            children = [r for r in members if r is not root]
            found[str(group_id)] = schemas.payment_out(
                root, children, group_of(root, children), livemode=principal.livemode
            )
        return schemas.BatchGetResult(found=found, not_found=[i for i in wanted if str(i) not in found])

    async def list(self, principal: Principal, query: ListQuery) -> schemas.PaymentList:
        merchant_id = principal.merchant.id
        after, before = self.cursors.bounds(query.starting_after, query.ending_before, merchant_id)
        async with dl.budget(self.timeouts.noncritical):
            roots = await self.repo.list_roots(
                merchant_id,
                limit=query.limit + 1,
                status=query.status,
                customer_id=query.customer_id,
                created_gte=query.created_gte,
                created_lt=query.created_lt,
                after=after,
                before=before,
            )
            page = self.cursors.page(
                roots,
                limit=query.limit,
                merchant_id=merchant_id,
                after=after,
                before=before,
                key=lambda r: (r.created_at, r.id),
            )
            children = await self.repo.children_for([r.id for r in page.rows], merchant_id)
        by_group: dict[uuid.UUID, list[TxnRow]] = {}
        for child in children:
            by_group.setdefault(child.group_id, []).append(child)
        data = [
            schemas.payment_out(
                r, by_group.get(r.id, []), group_of(r, by_group.get(r.id, [])), livemode=principal.livemode
            )
            for r in page.rows
        ]
        return schemas.PaymentList(
            data=data, has_more=page.has_more, next_cursor=page.next_cursor, prev_cursor=page.prev_cursor
        )

    # ------------------------------------------------------------------ reconciliation
    async def reconcile(self, *, older_than: float, limit: int = 200) -> dict[str, int]:
        """Resolve pending/unknown transactions against the gateway's report.

        Found → its recorded outcome is applied (and the stored idempotent response with it).
        Not found → the gateway never processed it: `failed`, and its Idempotency-Key released.
        Report unreachable → left as is for the next run.
        """
        counts = {"approved": 0, "declined": 0, "failed": 0, "skipped": 0}
        if self.report is None:
            return counts
        for row in await self.repo.unresolved(older_than, limit):
            if row.type not in _PAYMENT_TX_TYPES:
                # a $0 card storage or ACH pre-note: settled by payment_methods (nothing moved)
                counts["skipped"] += 1
                continue
            merchant = await self.merchant_lookup(row.merchant_id)
            if merchant is None:
                counts["skipped"] += 1
                continue
            try:
                reported = await self.report.lookup(merchant.epx, row.tran_nbr)
            except ReportUnavailable:
                counts["skipped"] += 1
                m.RECONCILIATIONS.labels("skipped").inc()
                continue
            outcome = await self._apply_report(merchant, row, reported)
            counts[outcome] = counts.get(outcome, 0) + 1
            m.RECONCILIATIONS.labels(outcome).inc()
        await self._check_expired_browser_posts(counts, limit)
        return counts

    async def _check_expired_browser_posts(self, counts: dict[str, int], limit: int) -> None:
        """A hosted-checkout sale or authorization that expired without its callback may still have
        been paid (the shopper's redirect was lost). Each is looked up once in the gateway's report:
        processed → its outcome is applied like any reconciliation; not processed → it stays
        `expired` for good (`checkout_expired_unpaid`)."""
        assert self.report is not None
        for row in await self.repo.expired_browser_posts(limit):
            merchant = await self.merchant_lookup(row.merchant_id)
            if merchant is None:
                counts["skipped"] += 1
                continue
            try:
                reported = await self.report.lookup(merchant.epx, row.tran_nbr)
            except ReportUnavailable:
                counts["skipped"] += 1
                m.RECONCILIATIONS.labels("skipped").inc()
                continue
            if reported is None:
                await self.repo.mark_expired_unpaid(row.id)
                counts["expired"] = counts.get("expired", 0) + 1
                m.RECONCILIATIONS.labels("expired").inc()
                continue
            log.error("browser_post_paid_after_expiry", transaction_id=str(row.id), tran_nbr=row.tran_nbr)
            outcome = await self._apply_report(merchant, row, reported, reopen_expired=True)
            counts[outcome] = counts.get(outcome, 0) + 1
            m.RECONCILIATIONS.labels(outcome).inc()

    async def _apply_report(
        self,
        merchant: Merchant,
        row: TxnRow,
        reported: ReportedTransaction | None,
        *,
        reopen_expired: bool = False,
    ) -> str:
        result = report_to_result(reported)
        async with self.db.transaction() as con:
            locked = await self.repo.lock_group(con, row.group_id, merchant.id)
            if locked is None:
                return "skipped"
            root, children = locked
            current = root if row.id == root.id else next((c for c in children if c.id == row.id), None)
            if current is not None and reopen_expired and current.status == "expired":
                # the gateway did process it: the outcome replaces the expiry, in this transaction
                if not await self.repo.reopen_expired(con, current.id):
                    return "skipped"
                current = msgspec.structs.replace(current, status="unknown")
            if current is None or current.status not in ("pending", "unknown"):
                return "skipped"
            response = result.response
            resolved = msgspec.structs.replace(
                current,
                status=result.outcome,
                auth_guid=response.auth_guid if response else None,
                auth_resp=response.auth_resp if response else None,
                auth_code=response.auth_code if response else None,
                decline_category=response.category.value
                if response and result.outcome == "declined"
                else None,
                failure_code=result.error_code,
                attempts=0,
                updated_at=self.clock.now(),
            )
            is_root = row.id == root.id
            await self._record(
                merchant,
                merchant.environment == "production",
                resolved,
                result,
                root=None if is_root else root,
                children=children if not is_root else [c for c in children],
                con=con,
                event_override="payment.unknown_resolved",
            )
        log.info(
            "payment_reconciled", transaction_id=str(row.id), tran_nbr=row.tran_nbr, outcome=result.outcome
        )
        return result.outcome


def _span_attributes(principal: Principal, payment_type: str | None, amount: int | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"paycore.merchant_id": str(principal.merchant.id)}
    if payment_type is not None:
        attributes["paycore.payment_type"] = payment_type
    if amount is not None:
        attributes["paycore.amount"] = amount
    return attributes


def _mentions_settled(text: str | None) -> bool:
    return bool(text) and "settle" in (text or "").lower()


def _row_of(entry_id: uuid.UUID, root: TxnRow, children: list[TxnRow]) -> TxnRow:
    if entry_id == root.id:
        return root
    return next(c for c in children if c.id == entry_id)


def report_to_result(reported: ReportedTransaction | None) -> GatewayResult:
    if reported is None:
        return GatewayResult(
            outcome="failed", error_code="not_processed", detail="The gateway has no record of it"
        )
    approved = reported.category.value == "approved"
    return GatewayResult(
        outcome="approved" if approved else "declined",
        response=GatewayResponse(
            auth_resp=reported.auth_resp,
            category=reported.category,
            auth_guid=reported.auth_guid,
            auth_code=reported.auth_code,
            auth_amount_cents=reported.amount_cents,
            tran_nbr=reported.tran_nbr,
            batch_id=reported.batch_id,
        ),
    )


def _root_request(
    cmd: schemas.CreatePayment,
    saved: PaymentMethod | None,
    bric: str,
    merchant: MerchantKey,
    tran_nbr: int,
    at: datetime,
    tz: ZoneInfo,
) -> GatewayRequest:
    """A token or saved card: `CCE1`/`CCE2` on the Storage BRIC as a customer-initiated card-on-file
    charge (`CARD_ENT_METH=Z`, no `ACI_EXT`); a saved bank account: the `CKC2`/`CKS2` debit."""
    if saved is not None and saved.payment_type == "ach":
        return wire.for_ach_debit(
            merchant=merchant,
            tran_nbr=tran_nbr,
            amount_cents=cmd.amount,
            storage_bric=bric,
            account_type="savings" if saved.account_type == "savings" else "checking",
            at=at,
            tz=tz,
            sec_code=wire.stored_sec_code(saved.sec_code),
        )
    build = wire.for_sale if cmd.capture else wire.for_auth
    return build(
        merchant=merchant, tran_nbr=tran_nbr, amount_cents=cmd.amount, at=at, tz=tz, storage_bric=bric
    )


def _subscription_request(
    saved: PaymentMethod,
    charge: SubscriptionCharge,
    merchant: MerchantKey,
    tran_nbr: int,
    at: datetime,
    tz: ZoneInfo,
) -> GatewayRequest:
    """A subscription's charge: a bank account's `CKC2`/`CKS2` debit, or a card's `CCE1` as a
    recurring MIT (epx-protocol.md §4.3-4.4): `ACI_EXT=RB`, the card's NTID when it fits, and the
    first charge's amount as `ORIG_AUTH_AMOUNT` when there was one."""
    if saved.payment_type == "ach":
        return wire.for_ach_debit(
            merchant=merchant,
            tran_nbr=tran_nbr,
            amount_cents=charge.amount,
            storage_bric=saved.bric,
            account_type="savings" if saved.account_type == "savings" else "checking",
            at=at,
            tz=tz,
            sec_code=wire.stored_sec_code(saved.sec_code),
        )
    ntid = saved.ntid if saved.ntid and len(saved.ntid) <= 15 and saved.ntid.isalnum() else None
    return wire.for_sale(
        merchant=merchant,
        tran_nbr=tran_nbr,
        amount_cents=charge.amount,
        at=at,
        tz=tz,
        storage_bric=saved.bric,
        mit="RB",
        orig_auth_tran_ident=ntid,
        orig_auth_amount_cents=charge.original_amount,
    )


_PAYMENT_TX_TYPES: Final = frozenset(t.value for t in TxType)


def _follow_on_request(
    tx_type: TxType,
    merchant: MerchantKey,
    tran_nbr: int,
    amount: int,
    bric: str,
    at: datetime,
    tz: ZoneInfo,
    root_tran_type: str = "",
) -> GatewayRequest:
    if root_tran_type.startswith("CK"):
        # an ACH debit (CKC2 checking / CKS2 savings): refund = ACH credit, void = ACH void, both on
        # the debit's BRIC; an ACH debit has no capture
        account: wire.AccountType = "savings" if root_tran_type.startswith("CKS") else "checking"
        if tx_type is TxType.REFUND:
            return wire.for_ach_credit(
                merchant=merchant,
                tran_nbr=tran_nbr,
                amount_cents=amount,
                original_bric=bric,
                account_type=account,
                at=at,
                tz=tz,
            )
        if tx_type is TxType.VOID:
            return wire.for_ach_void(
                merchant=merchant,
                tran_nbr=tran_nbr,
                amount_cents=amount,
                debit_bric=bric,
                account_type=account,
                at=at,
                tz=tz,
            )
    if tx_type is TxType.CAPTURE:
        return wire.for_capture(
            merchant=merchant, tran_nbr=tran_nbr, amount_cents=amount, auth_bric=bric, at=at, tz=tz
        )
    if tx_type is TxType.REFUND:
        return wire.for_refund(
            merchant=merchant, tran_nbr=tran_nbr, amount_cents=amount, original_bric=bric, at=at, tz=tz
        )
    return wire.for_void(
        merchant=merchant, tran_nbr=tran_nbr, amount_cents=amount, original_bric=bric, at=at, tz=tz
    )
