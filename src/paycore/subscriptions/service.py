"""Subscriptions: create, read, list, update, pause, resume, cancel; and the recurring billing run.

Writes (design.md §4): one DB transaction locks the row, applies the pure rule (`model`), saves the
new state and writes its outbox event; with an Idempotency-Key, the key and its stored answer are
part of the same transaction (`Idempotency.run_once`).

Billing (`bill_due`, the body of the `subscriptions.bill_due` job) repeats, until nothing is due:

1. **claim** (one short transaction): due active subscriptions `FOR UPDATE SKIP LOCKED`; for each,
   either resume its attempt still `pending` (a crashed or slow run), or cancel it (its paid period
   ended with `cancel_at_period_end`), or open a new attempt: the pending changes take effect, and a
   `subscription_charges` row is written `pending` with its transaction id and its internal
   Idempotency-Key `internal sub:<id>:<period>:<attempt>` chosen now. The row is held until
   `locked_until` (`PAYCORE_BILLING_LEASE`), so other runs skip it even after the commit.
2. **charge** (no connection held, `PAYCORE_BILLING_CONCURRENCY` at once, grouped by merchant):
   `PaymentService.charge_subscription` runs the sale flow on the saved payment method with the
   attempt's transaction id and key. A repeat of the same attempt never reaches the gateway again:
   it answers the first one's state, `pending` while that is in flight or awaiting reconciliation.
3. **record** (one transaction per attempt): the attempt's outcome (only a `pending` attempt
   changes), the subscription's new state (`model.after_charge`: next period, dunning retry,
   past_due) and the events, together.

Why a period is never charged twice, even with two runs, a crash or a retried job: the claim's row
locks and lease keep runs apart; an attempt's transaction id and key are fixed before anything is
sent, so any re-run of it is answered from the first; a new attempt exists only once the previous
one was declined or failed (provably not processed), and the database refuses a second attempt of
a period while one is pending or approved (`uq_subscription_charges_one_live_per_period`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import msgspec
import structlog

from paycore.idempotency.model import IdempotencyRequest
from paycore.idempotency.service import Idempotency, ServiceResponse
from paycore.kernel import codec, errors
from paycore.kernel.clock import Clock
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.kernel.money import GATEWAY_CURRENCIES
from paycore.merchants.model import Merchant, Principal
from paycore.payments.service import SubscriptionCharge, SubscriptionChargeResult
from paycore.platform.cursor import CursorCodec
from paycore.platform.db import Connection, Database
from paycore.platform.observability import metrics as m
from paycore.platform.observability import tracing
from paycore.platform.resilience import deadline as dl
from paycore.subscriptions import model, schemas
from paycore.subscriptions.model import ClaimAction, Outcome, Subscription
from paycore.subscriptions.repository import ChargeRow, NewCharge, SubscriptionRepository

log = structlog.get_logger("paycore.subscriptions")
_MAX_BATCHES: Final = 1000


class SavedMethods(Protocol):
    """What subscriptions need from saved payment methods (`payment_methods.service`)."""

    async def resolve_for_payment(
        self, merchant: Merchant, method_id: uuid.UUID, *, customer_id: str | None = None
    ) -> Any: ...


class RecurringPayments(Protocol):
    """The payments capability's recurring charge (`PaymentService.charge_subscription`)."""

    async def charge_subscription(
        self, merchant: Merchant, charge: SubscriptionCharge
    ) -> SubscriptionChargeResult: ...


@dataclass(frozen=True, slots=True)
class BillingConfig:
    """The billing run's settings (from `Settings` in bootstrap)."""

    schedule: tuple[float, ...] = model.DEFAULT_SCHEDULE  # PAYCORE_BILLING_RETRY_SCHEDULE
    concurrency: int = 10  # PAYCORE_BILLING_CONCURRENCY
    batch_size: int = 100  # PAYCORE_BILLING_BATCH_SIZE
    lease: float = 300.0  # PAYCORE_BILLING_LEASE
    critical_timeout: float = 45.0
    noncritical_timeout: float = 30.0
    labelled_merchants: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = 20
    status: str | None = None
    customer_id: str | None = None
    payment_method_id: uuid.UUID | None = None
    starting_after: str | None = None
    ending_before: str | None = None


@dataclass(slots=True)
class BillingReport:
    """What one billing run did (counts per attempt outcome)."""

    claimed: int = 0
    charged: int = 0
    approved: int = 0
    declined: int = 0
    failed: int = 0
    pending: int = 0
    canceled: int = 0
    past_due: int = 0
    errors: int = 0
    batches: int = 0
    stopped_early: bool = False  # the job's deadline was near: claiming stopped
    merchants: set[uuid.UUID] = field(default_factory=set)
    # each merchant's record is loaded once per run (SCALE-3: credential loads = merchants)
    merchant_records: dict[uuid.UUID, Merchant | None] = field(default_factory=dict, repr=False)

    async def merchant(
        self, merchant_id: uuid.UUID, lookup: Callable[[uuid.UUID], Awaitable[Merchant | None]]
    ) -> Merchant | None:
        if merchant_id not in self.merchant_records:
            self.merchant_records[merchant_id] = await lookup(merchant_id)
        return self.merchant_records[merchant_id]


@dataclass(frozen=True, slots=True)
class _Work:
    """One claimed attempt to charge."""

    subscription: Subscription
    charge: ChargeRow


class SubscriptionService:
    def __init__(
        self,
        *,
        db: Database,
        repository: SubscriptionRepository,
        idempotency: Idempotency,
        payments: RecurringPayments,
        payment_methods: SavedMethods | None,
        merchant_lookup: Callable[[uuid.UUID], Awaitable[Merchant | None]],
        clock: Clock,
        cursors: CursorCodec,
        config: BillingConfig = BillingConfig(),
    ) -> None:
        self.db = db
        self.repo = repository
        self.idempotency = idempotency
        self.payments = payments
        self.payment_methods = payment_methods
        self.merchant_lookup = merchant_lookup
        self.clock = clock
        self.cursors = cursors
        self.config = config
        model.check_schedule(config.schedule)

    # ------------------------------------------------------------------ helpers
    def _merchant_label(self, slug: str) -> str:
        return slug if slug in self.config.labelled_merchants else "other"

    async def _check_method(self, merchant: Merchant, method_id: uuid.UUID, customer_id: str | None) -> str:
        """The payment method's customer, or the stable problem that forbids charging it."""
        if self.payment_methods is None:
            raise PaycoreError(
                errors.VALIDATION_FAILED, "saved payment methods are not available", param="payment_method_id"
            )
        method = await self.payment_methods.resolve_for_payment(merchant, method_id, customer_id=customer_id)
        return str(method.customer_id)

    async def _event(
        self,
        con: Connection,
        event_type: str,
        sub: Subscription,
        livemode: bool,
        charge: ChargeRow | None = None,
    ) -> None:
        payload: dict[str, Any] = {"object": schemas.subscription_out(sub, livemode=livemode)}
        if charge is not None:
            payload["charge"] = schemas.charge_out(charge)
        await self.repo.event(
            con,
            event_id=uuid7(),
            merchant_id=sub.merchant_id,
            event_type=event_type,
            subscription_id=sub.id,
            payload=payload,
            traceparent=tracing.current_traceparent(),
        )

    def _response(self, sub: Subscription, principal: Principal, status: int = 200) -> ServiceResponse:
        return ServiceResponse(
            status, codec.encode(schemas.subscription_out(sub, livemode=principal.livemode))
        )

    # ------------------------------------------------------------------ create
    async def create(
        self, principal: Principal, cmd: schemas.CreateSubscription, idem: IdempotencyRequest
    ) -> ServiceResponse:
        merchant = principal.merchant
        if cmd.currency not in GATEWAY_CURRENCIES:
            raise PaycoreError(
                errors.CURRENCY_NOT_SUPPORTED,
                f"{cmd.currency} is not supported by the gateway",
                param="currency",
            )
        interval = model.interval_of(cmd.interval, cmd.interval_count)
        async with dl.budget(self.config.critical_timeout):
            customer_id = await self._check_method(merchant, cmd.payment_method_id, cmd.customer_id)
            now = self.clock.now()
            sub = model.new_subscription(
                id=uuid7(),
                merchant_id=merchant.id,
                customer_id=customer_id,
                payment_method_id=cmd.payment_method_id,
                amount=cmd.amount,
                currency=cmd.currency,
                interval=interval,
                start_at=cmd.start_date,
                now=now,
                description=cmd.description,
                metadata=cmd.metadata,
            )

            async def work(con: Connection) -> ServiceResponse:
                await self.repo.insert(con, sub)
                await self._event(con, model.EVENT_CREATED, sub, principal.livemode)
                return self._response(sub, principal, 201)

            response = await self.idempotency.run_once(merchant.id, idem, work, resource_id=sub.id)
        log.info("subscription_created", subscription_id=str(sub.id), interval=cmd.interval)
        return response

    # ------------------------------------------------------------------ reads
    async def get(self, principal: Principal, sub_id: uuid.UUID) -> schemas.SubscriptionOut:
        async with dl.budget(self.config.noncritical_timeout):
            sub = await self.repo.get(sub_id, principal.merchant.id)
        if sub is None:
            raise PaycoreError(model.SUBSCRIPTION_NOT_FOUND)
        return schemas.subscription_out(sub, livemode=principal.livemode)

    async def list_subscriptions(self, principal: Principal, query: ListQuery) -> schemas.SubscriptionList:
        mid = principal.merchant.id
        after, before = self.cursors.bounds(query.starting_after, query.ending_before, mid)
        async with dl.budget(self.config.noncritical_timeout):
            rows = await self.repo.list_subscriptions(
                mid,
                limit=query.limit + 1,
                status=query.status,
                customer_id=query.customer_id,
                payment_method_id=query.payment_method_id,
                after=after,
                before=before,
            )
        page = self.cursors.page(
            rows,
            limit=query.limit,
            merchant_id=mid,
            after=after,
            before=before,
            key=lambda r: (r.created_at, r.id),
        )
        return schemas.SubscriptionList(
            data=[schemas.subscription_out(r, livemode=principal.livemode) for r in page.rows],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            prev_cursor=page.prev_cursor,
        )

    async def list_charges(self, principal: Principal, sub_id: uuid.UUID, limit: int) -> schemas.ChargeList:
        async with dl.budget(self.config.noncritical_timeout):
            sub = await self.repo.get(sub_id, principal.merchant.id)
            if sub is None:
                raise PaycoreError(model.SUBSCRIPTION_NOT_FOUND)
            rows = await self.repo.list_charges(sub_id, principal.merchant.id, limit + 1)
        return schemas.ChargeList(
            data=[schemas.charge_out(r) for r in rows[:limit]], has_more=len(rows) > limit
        )

    # ------------------------------------------------------------------ changes
    async def _mutate(
        self,
        principal: Principal,
        sub_id: uuid.UUID,
        idem: IdempotencyRequest | None,
        change: Callable[[Subscription, datetime], tuple[Subscription, tuple[str, ...]]],
    ) -> ServiceResponse:
        merchant = principal.merchant

        async def work(con: Connection) -> ServiceResponse:
            current = await self.repo.lock(con, sub_id, merchant.id)
            if current is None:
                raise PaycoreError(model.SUBSCRIPTION_NOT_FOUND)
            updated, events = change(current, self.clock.now())
            if updated is not current:
                await self.repo.save(con, updated)
            for event_type in events:
                await self._event(con, event_type, updated, principal.livemode)
            return self._response(updated, principal)

        async with dl.budget(self.config.critical_timeout):
            return await self.idempotency.run_once(merchant.id, idem, work, resource_id=sub_id)

    async def update(
        self,
        principal: Principal,
        sub_id: uuid.UUID,
        cmd: schemas.UpdateSubscription,
        idem: IdempotencyRequest | None = None,
    ) -> ServiceResponse:
        interval = None
        if cmd.interval is not None or cmd.interval_count is not None or cmd.payment_method_id is not None:
            current = await self.repo.get(sub_id, principal.merchant.id)
            if current is None:
                raise PaycoreError(model.SUBSCRIPTION_NOT_FOUND)
            if cmd.interval is not None or cmd.interval_count is not None:
                interval = model.interval_of(
                    cmd.interval or current.pending_interval_unit or current.interval_unit,
                    cmd.interval_count or current.pending_interval_count or current.interval_count,
                )
            if cmd.payment_method_id is not None:
                await self._check_method(principal.merchant, cmd.payment_method_id, current.customer_id)

        def change(sub: Subscription, now: datetime) -> tuple[Subscription, tuple[str, ...]]:
            updated = model.update(
                sub,
                now,
                amount=cmd.amount,
                interval=interval,
                payment_method_id=cmd.payment_method_id,
                cancel_at_period_end=cmd.cancel_at_period_end,
                description=cmd.description,
                metadata=cmd.metadata,
            )
            return updated, ()

        return await self._mutate(principal, sub_id, idem, change)

    async def pause(
        self, principal: Principal, sub_id: uuid.UUID, idem: IdempotencyRequest | None = None
    ) -> ServiceResponse:
        return await self._mutate(principal, sub_id, idem, lambda s, now: (model.pause(s, now), ()))

    async def resume(
        self, principal: Principal, sub_id: uuid.UUID, idem: IdempotencyRequest | None = None
    ) -> ServiceResponse:
        return await self._mutate(principal, sub_id, idem, lambda s, now: (model.resume(s, now), ()))

    async def cancel(
        self,
        principal: Principal,
        sub_id: uuid.UUID,
        cmd: schemas.CancelSubscription,
        idem: IdempotencyRequest | None = None,
    ) -> ServiceResponse:
        def change(sub: Subscription, now: datetime) -> tuple[Subscription, tuple[str, ...]]:
            updated, canceled_now = model.cancel(sub, now, at_period_end=cmd.at_period_end)
            return updated, (model.EVENT_CANCELED,) if canceled_now else ()

        return await self._mutate(principal, sub_id, idem, change)

    # ------------------------------------------------------------------ billing
    async def bill_due(self, now: datetime | None = None) -> BillingReport:
        """Charge every subscription due at `now` (default: the clock), one period per attempt,
        until nothing is due. Safe to run concurrently and to re-run after a crash."""
        now = now or self.clock.now()
        report = BillingReport()
        for _ in range(_MAX_BATCHES):
            left = dl.remaining()
            if left is not None and left < self.config.critical_timeout:
                # the job's budget could not see another batch through: the next run goes on
                report.stopped_early = True
                break
            # each round either settles its rows or holds them past `now`: the loop ends when
            # nothing is due (a subscription behind by several periods is billed once per period)
            work, claimed = await self._claim(now, report)
            if claimed == 0:
                break
            report.batches += 1
            report.claimed += claimed
            await self._charge_all(work, now, report)
        if report.claimed:
            log.info(
                "subscriptions_billed",
                claimed=report.claimed,
                approved=report.approved,
                declined=report.declined,
                failed=report.failed,
                pending=report.pending,
                past_due=report.past_due,
                canceled=report.canceled,
            )
        return report

    async def _claim(self, now: datetime, report: BillingReport) -> tuple[list[_Work], int]:
        lease = timedelta(seconds=self.config.lease)
        work: list[_Work] = []
        async with self.db.transaction() as con:
            subs = await self.repo.claim_due(con, now, self.config.batch_size)
            if not subs:
                return [], 0
            latest = await self.repo.latest_charges(con, [s.id for s in subs])
            saves: list[Subscription] = []
            charges: list[NewCharge] = []
            canceled: list[Subscription] = []
            for sub in subs:
                last = latest.get(sub.id)
                same_period = last is not None and last.period_index == sub.period_index
                live = same_period and last is not None and last.status == "pending"
                action = model.decide_claim(sub, live_attempt=live)
                if action is ClaimAction.CANCEL:
                    ended = model.cancel_at_period_end(sub, now)
                    saves.append(ended)
                    canceled.append(ended)
                    continue
                if same_period and last is not None and last.status == "approved":
                    # the period is paid but the subscription did not move on (cannot happen through
                    # this service; repaired rather than charged, never a second attempt)
                    log.warning("subscription_period_already_paid", subscription_id=str(sub.id))
                    saves.append(
                        model.after_charge(
                            sub,
                            period_index=sub.period_index,
                            outcome=Outcome.APPROVED,
                            retryable=False,
                            amount=last.amount,
                            now=now,
                        ).subscription
                    )
                    continue
                if action is ClaimAction.RESUME:
                    assert last is not None
                    held = msgspec.structs.replace(sub, locked_until=now + lease)
                    saves.append(held)
                    work.append(_Work(held, last))
                    continue
                opened = model.open_period(sub, now)
                attempt = last.attempt + 1 if same_period and last is not None else 1
                new = NewCharge(
                    id=uuid7(),
                    subscription_id=sub.id,
                    merchant_id=sub.merchant_id,
                    period_index=opened.period_index,
                    period_start=opened.period_date(opened.period_index),
                    period_end=opened.period_date(opened.period_index + 1),
                    attempt=attempt,
                    amount=opened.amount,
                    currency=opened.currency,
                    payment_method_id=opened.payment_method_id,
                    transaction_id=uuid7(),
                    idempotency_key=model.charge_key(sub.id, opened.period_index, attempt),
                    created_at=now,
                )
                held = msgspec.structs.replace(opened, locked_until=now + lease)
                saves.append(held)
                charges.append(new)
                work.append(_Work(held, _pending_row(new)))
            await self.repo.save_many(con, saves)
            await self.repo.insert_charges(con, charges)
            for ended in canceled:
                merchant = await report.merchant(ended.merchant_id, self.merchant_lookup)
                livemode = merchant is not None and merchant.environment == "production"
                await self._event(con, model.EVENT_CANCELED, ended, livemode)
        report.canceled += len(canceled)
        return work, len(subs)

    async def _charge_all(self, work: list[_Work], now: datetime, report: BillingReport) -> None:
        by_merchant: dict[uuid.UUID, list[_Work]] = defaultdict(list)
        for item in work:
            by_merchant[item.subscription.merchant_id].append(item)
        semaphore = asyncio.Semaphore(self.config.concurrency)
        charges: list[Coroutine[Any, Any, None]] = []
        for merchant_id, items in by_merchant.items():
            merchant = await report.merchant(merchant_id, self.merchant_lookup)
            if merchant is None or not merchant.active:
                # held until the lease lapses, then tried again (nothing was sent)
                log.warning("subscriptions_merchant_inactive", merchant_id=str(merchant_id), held=len(items))
                continue
            report.merchants.add(merchant_id)
            charges.extend(self._charge_one(semaphore, merchant, item, now, report) for item in items)
        # At most `concurrency` in flight (the semaphore); each records its own failure and never
        # raises, so one attempt's trouble never stops its siblings. Cancelling the run cancels them
        # all (their attempts stay pending and are resumed by a later run).
        await asyncio.gather(*charges)

    async def _charge_one(
        self,
        semaphore: asyncio.Semaphore,
        merchant: Merchant,
        item: _Work,
        now: datetime,
        report: BillingReport,
    ) -> None:
        """One attempt. Never raises: a failure leaves the attempt `pending`, and the next run
        after the lease asks its outcome again (a sibling's failure never stops the others)."""
        sub, charge = item.subscription, item.charge
        async with semaphore:
            try:
                result = await self.payments.charge_subscription(
                    merchant,
                    SubscriptionCharge(
                        subscription_id=sub.id,
                        transaction_id=_transaction_id(charge),
                        idempotency_key=charge.idempotency_key,
                        payment_method_id=charge.payment_method_id,
                        customer_id=sub.customer_id,
                        amount=charge.amount,
                        currency=charge.currency,
                        original_amount=sub.initial_amount,
                        description=sub.description,
                    ),
                )
                outcome, category = _outcome_of(result)
                failure = result.failure_code
                gateway_code = result.gateway_code
                txn_id: uuid.UUID | None = result.transaction_id
            except PaycoreError as exc:
                if exc.status >= 500:
                    report.errors += 1
                    log.error(
                        "subscription_charge_error",
                        subscription_id=str(sub.id),
                        error=exc.code,
                        detail=exc.detail[:200],
                    )
                    return
                # the payment method can no longer be charged (deleted, inactive, expired, ...):
                # nothing was sent
                outcome, category, failure = Outcome.UNUSABLE, None, exc.code
                gateway_code, txn_id = None, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                report.errors += 1
                log.error(
                    "subscription_charge_error",
                    subscription_id=str(sub.id),
                    error=type(exc).__name__,
                    detail=str(exc)[:200],
                )
                return
        try:
            await self._record(merchant, item, now, report, outcome, category, failure, gateway_code, txn_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            report.errors += 1
            log.error("subscription_record_failed", subscription_id=str(sub.id), error=type(exc).__name__)

    async def _record(
        self,
        merchant: Merchant,
        item: _Work,
        now: datetime,
        report: BillingReport,
        outcome: Outcome,
        category: str | None,
        failure: str | None,
        gateway_code: str | None,
        txn_id: uuid.UUID | None,
    ) -> None:
        charge = item.charge
        livemode = merchant.environment == "production"
        lease = timedelta(seconds=self.config.lease)
        async with self.db.transaction() as con:
            sub = await self.repo.lock(con, charge.subscription_id, merchant.id)
            if sub is None:
                return
            decision = model.after_charge(
                sub,
                period_index=charge.period_index,
                outcome=outcome,
                retryable=model.retryable_decline(gateway_code, category),
                amount=charge.amount,
                now=now,
                schedule=self.config.schedule,
                retry_delay=lease,
            )
            if outcome is Outcome.PENDING:
                report.pending += 1
                if decision.subscription is not sub:
                    await self.repo.save(con, decision.subscription)
                return
            recorded = await self.repo.record_charge(
                con,
                charge.id,
                status=decision.charge_status,
                transaction_id=txn_id,
                decline_category=category,
                gateway_code=gateway_code,
                failure_code=failure,
                next_retry_at=decision.next_retry_at,
                at=now,
            )
            if recorded is None:
                return  # another run recorded this attempt first
            if decision.subscription is not sub:
                await self.repo.save(con, decision.subscription)
            for event_type in decision.events:
                await self._event(con, event_type, decision.subscription, livemode, recorded)
        report.charged += 1
        status = decision.charge_status
        m.SUBSCRIPTION_BILLINGS.labels(status).inc()
        if status == "approved":
            report.approved += 1
            m.SUBSCRIPTION_REVENUE.labels(self._merchant_label(merchant.slug), charge.currency).inc(
                charge.amount
            )
        elif status == "declined":
            report.declined += 1
        else:
            report.failed += 1
        if model.EVENT_PAST_DUE in decision.events:
            report.past_due += 1
            log.warning(
                "subscription_past_due",
                subscription_id=str(sub.id),
                attempts=decision.subscription.dunning_attempts,
                reason=category or failure,
            )


def _pending_row(new: NewCharge) -> ChargeRow:
    return ChargeRow(
        id=new.id,
        subscription_id=new.subscription_id,
        merchant_id=new.merchant_id,
        period_index=new.period_index,
        period_start=new.period_start,
        period_end=new.period_end,
        attempt=new.attempt,
        status="pending",
        amount=new.amount,
        currency=new.currency,
        payment_method_id=new.payment_method_id,
        transaction_id=new.transaction_id,
        idempotency_key=new.idempotency_key,
        created_at=new.created_at,
        updated_at=new.created_at,
    )


def _transaction_id(charge: ChargeRow) -> uuid.UUID:
    assert charge.transaction_id is not None  # set when the attempt is claimed
    return charge.transaction_id


def _outcome_of(result: SubscriptionChargeResult) -> tuple[Outcome, str | None]:
    if result.status == "approved":
        return Outcome.APPROVED, None
    if result.status == "declined":
        return Outcome.DECLINED, result.decline_category
    if result.status == "failed":
        return Outcome.FAILED, None
    return Outcome.PENDING, None  # pending or unknown: reconciliation decides
