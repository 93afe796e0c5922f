"""Hosted checkout use cases: create a session, re-issue its form, handle EPX's callback, expire.

The order of a session's creation (design.md §4):
1. One statement claims the Idempotency-Key and inserts the pending Browser Post transaction (its
   deterministic TRAN_NBR under `UNIQUE (merchant_id, tran_nbr)`) and the session.
2. Key Exchange is called with no database connection held.
3. One statement records the TAC's expiry and stores the idempotent response. When no TAC can be
   had, the session and its transaction fail and the key is released (nothing was shown, nothing
   can be charged): the merchant may retry with the same key.

The callback (epx-protocol.md §6.4): merge and format-check the parameters, check the merchant's
echoes and USER_DATA, verify the MAC (when on), classify the answer, then **one compare-and-set**
(`checkout.finalize`) records it on the transaction and the session, with the outbox event (and, for
`save`, the payment method) in the same database transaction. When that updates nothing, one read
tells a replay (same redirect, nothing changes) from a different repeat (alerted, never applied)
from a mismatch (rejected, alerted, the row untouched). The shopper is only ever redirected to the
session's allow-listed return or decline URL, with `payment_id` and `status` appended.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from paycore.checkout import model, schemas
from paycore.checkout.model import CallbackRejected, Mode
from paycore.checkout.repository import CheckoutRepository, FinalizeArgs, NewCheckout, SessionRow
from paycore.gateway.epx import wire
from paycore.gateway.epx.key_exchange import KeyExchangeClient, KeyExchangeError
from paycore.idempotency.model import IdempotencyRequest, Replay, decide
from paycore.idempotency.repository import IdempotencyRepository
from paycore.idempotency.service import ServiceResponse
from paycore.kernel import codec, errors
from paycore.kernel.clock import Clock
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.kernel.money import GATEWAY_CURRENCIES
from paycore.merchants.model import Merchant, Principal
from paycore.payments import schemas as payment_schemas
from paycore.payments.metrics import PaymentMetrics
from paycore.payments.repository import group_of
from paycore.platform.context import traceparent_var
from paycore.platform.crypto import SecretStr
from paycore.platform.db import Connection, Database
from paycore.platform.observability import metrics as m
from paycore.platform.resilience import deadline as dl
from paycore.platform.tasks import TaskSupervisor

log = structlog.get_logger("paycore.checkout")
MAX_TRAN_NBR_TRIES: Final = 5

SESSION_NOT_FOUND = errors.register("checkout_session_not_found", 404, "No such checkout session")
SESSION_NOT_OPEN = errors.register(
    "checkout_session_not_open", 409, "The checkout session is no longer open for payment"
)
RETURN_URL_NOT_ALLOWED = errors.register(
    "return_url_not_allowed", 422, "The URL is not one of the merchant's registered return URLs"
)
MERCHANT_NOT_CONFIGURED = errors.register(
    "checkout_merchant_not_configured", 422, "The merchant has no EPX MAC secret for hosted checkout"
)
MODE_UNAVAILABLE = errors.register(
    "checkout_mode_unavailable", 422, "This checkout mode is not available on this deployment"
)
CHECKOUT_UNAVAILABLE = errors.register(
    "checkout_unavailable", 503, "Hosted checkout is not configured on this deployment"
)

_EVENTS: Final = {"approved": "payment.succeeded", "declined": "payment.failed", "failed": "payment.failed"}
_TX_TYPES: Final = {group: tx_type for tx_type, group in model.TX_TYPE_GROUPS.items()}


class MerchantSource(Protocol):
    """The merchant directory, as checkout uses it (CACHE-1: the only reader of merchants and MACs)."""

    async def get(self, merchant_id: uuid.UUID) -> Merchant | None: ...

    async def mac_secret(self, merchant_id: uuid.UUID) -> SecretStr | None: ...


class CardSaver(Protocol):
    """The saved-payment-methods service (`payment_methods`), as a `save` checkout uses it."""

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
        con: Any = None,
    ) -> Any: ...

    def invalidate_customer(self, merchant_id: uuid.UUID, customer_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckoutConfig:
    browser_post_url: str | None
    callback_base_url: str
    verify_mac: bool = True
    critical_timeout: float = 45.0
    noncritical_timeout: float = 30.0
    batch_timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class CallbackAnswer:
    """303 to `location`, or a refusal (`status` 400/409) with a bounded `reason`."""

    status: int
    location: str | None = None
    reason: str | None = None


class CheckoutService:
    def __init__(
        self,
        *,
        db: Database,
        repository: CheckoutRepository,
        idempotency: IdempotencyRepository,
        key_exchange: KeyExchangeClient | None,
        merchants: MerchantSource,
        clock: Clock,
        config: CheckoutConfig,
        tasks: TaskSupervisor,
        metrics: PaymentMetrics | None = None,
        card_saver: CardSaver | None = None,
    ) -> None:
        self.db = db
        self.repo = repository
        self.idem = idempotency
        self.key_exchange = key_exchange
        self.merchants = merchants
        self.clock = clock
        self.config = config
        self.tasks = tasks
        self.metrics = metrics or PaymentMetrics()
        self.card_saver = card_saver
        self._zones: dict[str, ZoneInfo] = {}

    # ------------------------------------------------------------------ helpers
    def _zone(self, merchant: Merchant) -> ZoneInfo:
        name = merchant.timezone or self.config.batch_timezone
        zone = self._zones.get(name)
        if zone is None:
            zone = self._zones[name] = ZoneInfo(name)
        return zone

    def _require_configured(self) -> tuple[KeyExchangeClient, str]:
        if self.key_exchange is None or not self.config.browser_post_url:
            raise PaycoreError(
                CHECKOUT_UNAVAILABLE,
                "Set PAYCORE_EPX_KEY_EXCHANGE_URL and PAYCORE_EPX_BROWSER_POST_URL",
            )
        return self.key_exchange, self.config.browser_post_url

    async def _mac(self, merchant: Merchant) -> SecretStr:
        secret = await self.merchants.mac_secret(merchant.id)
        if secret is None:
            raise PaycoreError(MERCHANT_NOT_CONFIGURED)
        return secret

    def _redirect_url(self, txn_id: uuid.UUID, merchant_id: uuid.UUID) -> str:
        return model.callback_url(self.config.callback_base_url, txn_id, merchant_id)

    def _form(self, session: SessionRow, merchant: Merchant, tac: SecretStr, expires_at: datetime) -> bytes:
        txn = session.txn
        mode = Mode(session.mode)
        action = self.config.browser_post_url
        assert action is not None
        form = schemas.CheckoutForm(
            session_id=session.id,
            payment_id=txn.id,
            mode=session.mode,  # type: ignore[arg-type]
            action=action,
            fields=model.form_fields(
                tac=tac.reveal(),
                merchant=merchant.epx,
                tran_nbr=txn.tran_nbr,
                amount_cents=txn.amount,
                mode=mode,
                redirect_url=self._redirect_url(txn.id, merchant.id),
                txn_id=txn.id,
                merchant_id=merchant.id,
                customer_id=txn.customer_id,
            ),
            expires_at=expires_at,
        )
        return codec.encode(form)

    async def _tac(self, client: KeyExchangeClient, mac: SecretStr, session: SessionRow) -> SecretStr:
        txn = session.txn
        try:
            return await client.request_tac(
                mac=mac,
                tran_nbr=txn.tran_nbr,
                amount_cents=txn.amount,
                tran_group=Mode(session.mode).tran_group,
                redirect_url=self._redirect_url(txn.id, txn.merchant_id),
            )
        except KeyExchangeError as exc:
            spec = errors.GATEWAY_ERROR if exc.status is not None and exc.status < 500 else None
            raise PaycoreError(
                spec or errors.GATEWAY_UNAVAILABLE,
                "No payment form could be obtained from the gateway",
                extra={"reason": exc.reason, "session_id": str(session.id)},
            ) from None

    # ------------------------------------------------------------------ create
    def _validate(
        self, principal: Principal, cmd: schemas.CreateCheckoutSession
    ) -> tuple[Mode, int, str, str]:
        merchant = principal.merchant
        mode = Mode(cmd.mode)
        if cmd.currency not in GATEWAY_CURRENCIES:
            raise PaycoreError(
                errors.CURRENCY_NOT_SUPPORTED,
                f"{cmd.currency} is not supported by the gateway",
                param="currency",
            )
        if mode is Mode.SAVE:
            if cmd.amount:
                raise PaycoreError(errors.AMOUNT_INVALID, "a card save has no amount", param="amount")
            if cmd.customer_id is None:
                raise PaycoreError(
                    errors.VALIDATION_FAILED, "customer_id is required to save a card", param="customer_id"
                )
            if self.card_saver is None:
                raise PaycoreError(MODE_UNAVAILABLE, "Saving cards is not available yet", param="mode")
            amount = 0
        else:
            if not cmd.amount:
                raise PaycoreError(errors.AMOUNT_INVALID, "amount is required (minor units)", param="amount")
            amount = cmd.amount
        urls: list[str] = []
        for name, url in (("return_url", cmd.return_url), ("decline_url", cmd.decline_url or cmd.return_url)):
            try:
                urls.append(model.check_return_url(url, merchant.return_urls))
            except model.ReturnUrlRejected as exc:
                raise PaycoreError(RETURN_URL_NOT_ALLOWED, str(exc), param=name) from None
        return mode, amount, urls[0], urls[1]

    async def create(
        self, principal: Principal, cmd: schemas.CreateCheckoutSession, idem: IdempotencyRequest
    ) -> ServiceResponse:
        merchant = principal.merchant
        mode, amount, return_url, decline_url = self._validate(principal, cmd)
        client, _ = self._require_configured()
        mac = await self._mac(merchant)
        async with dl.budget(self.config.critical_timeout):
            session_id, txn_id = uuid7(), uuid7()
            now = self.clock.now()
            zone = self._zone(merchant)
            for k in range(MAX_TRAN_NBR_TRIES):
                new = NewCheckout(
                    session_id=session_id,
                    txn_id=txn_id,
                    merchant_id=merchant.id,
                    mode=mode.value,
                    tx_type=mode.tx_type,
                    amount=amount,
                    currency=cmd.currency,
                    tran_nbr=wire.tran_nbr_for(txn_id, k),
                    tran_type=mode.tran_type,
                    batch_id=wire.batch_id(now, zone),
                    customer_id=cmd.customer_id,
                    description=cmd.description,
                    metadata=cmd.metadata,
                    return_url=return_url,
                    decline_url=decline_url,
                    expires_at=model.session_expires_at(model.tac_expires_at(now)),
                )
                try:
                    created_at = await self.repo.begin(idem, new)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name == "uq_transactions_merchant_tran_nbr":
                        continue
                    raise
                if created_at is None:
                    raise await self._replay(merchant.id, idem)
                break
            else:
                raise PaycoreError(errors.INTERNAL_ERROR, "could not allocate a TRAN_NBR")
            m.IDEMPOTENCY_OUTCOMES.labels("new").inc()
            session = await self.repo.get(session_id, merchant.id)
            assert session is not None
            try:
                tac = await self._tac(client, mac, session)
            except asyncio.CancelledError:
                self.tasks.spawn(
                    "checkout.abandon",
                    self.repo.abandon(session_id, merchant.id, idem.key, "cancelled_before_form"),
                )
                raise
            except PaycoreError:
                await self.repo.abandon(session_id, merchant.id, idem.key, "key_exchange_failed")
                m.CHECKOUT_SESSIONS.labels(mode.value, "key_exchange_failed").inc()
                raise
            issued = self.clock.now()
            tac_expiry = model.tac_expires_at(issued)
            body = self._form(session, merchant, tac, tac_expiry)
            recorded = await self.repo.tac_issued(
                session_id,
                merchant.id,
                tac_expires_at=tac_expiry,
                expires_at=model.session_expires_at(tac_expiry),
                idem_key=idem.key,
                response=(201, body),
            )
            if not recorded:  # finished between the insert and now (a very fast shopper)
                raise PaycoreError(SESSION_NOT_OPEN)
        m.CHECKOUT_SESSIONS.labels(mode.value, "created").inc()
        log.info(
            "checkout_session_created",
            session_id=str(session_id),
            payment_id=str(txn_id),
            mode=mode.value,
            tran_nbr=session.txn.tran_nbr,
        )
        return ServiceResponse(201, body)

    async def _replay(self, merchant_id: uuid.UUID, idem: IdempotencyRequest) -> Replay:
        stored = await self.idem.get(None, merchant_id, idem.key)
        if stored is None:
            raise PaycoreError(errors.IDEMPOTENCY_IN_FLIGHT, headers={"Retry-After": "1"})
        decided = decide(stored, idem)
        m.IDEMPOTENCY_OUTCOMES.labels("replayed").inc()
        assert decided.response_status is not None and decided.response_body is not None
        return Replay(decided.response_status, decided.response_body)

    # ------------------------------------------------------------------ a fresh form
    async def new_form(self, principal: Principal, session_id: uuid.UUID) -> bytes:
        """The form again, with the same TRAN_NBR and a fresh TAC, while the transaction is pending."""
        merchant = principal.merchant
        client, _ = self._require_configured()
        async with dl.budget(self.config.critical_timeout):
            session = await self.repo.get(session_id, merchant.id)
            if session is None:
                raise PaycoreError(SESSION_NOT_FOUND)
            if not model.may_issue_tac(
                state=session.state,
                transaction_status=session.txn.status,
                expires_at=session.expires_at,
                now=self.clock.now(),
            ):
                raise PaycoreError(SESSION_NOT_OPEN, extra={"state": session.state})
            mac = await self._mac(merchant)
            tac = await self._tac(client, mac, session)
            tac_expiry = model.tac_expires_at(self.clock.now())
            if not await self.repo.tac_issued(
                session.id,
                merchant.id,
                tac_expires_at=tac_expiry,
                expires_at=model.session_expires_at(tac_expiry),
            ):
                raise PaycoreError(SESSION_NOT_OPEN)
        m.CHECKOUT_SESSIONS.labels(session.mode, "form_reissued").inc()
        return self._form(session, merchant, tac, tac_expiry)

    # ------------------------------------------------------------------ read
    async def get(self, principal: Principal, session_id: uuid.UUID) -> schemas.CheckoutSessionOut:
        async with dl.budget(self.config.noncritical_timeout):
            session = await self.repo.get(session_id, principal.merchant.id)
        if session is None:
            raise PaycoreError(SESSION_NOT_FOUND)
        return session_out(session, livemode=principal.livemode)

    async def payment_status(self, merchant_id: uuid.UUID, payment_id: uuid.UUID) -> SessionRow | None:
        """The session of a Browser Post transaction (the demo's result pages)."""
        return await self.repo.for_transaction(payment_id, merchant_id)

    # ------------------------------------------------------------------ the callback
    async def handle_callback(
        self, query: Iterable[tuple[str, str]], body: Iterable[tuple[str, str]]
    ) -> CallbackAnswer:
        started = time.perf_counter()
        cb: model.Callback | None = None
        try:
            fields = model.merge_params(query, body)
            cb = model.parse_callback(fields)
            merchant = await self.merchants.get(cb.merchant_id)
            if merchant is None:
                raise CallbackRejected("unknown_merchant")
            model.precheck(cb, merchant.epx)
            if self.config.verify_mac:
                secret = await self.merchants.mac_secret(merchant.id)
                if secret is None:
                    raise CallbackRejected("no_mac_secret")
                model.verify_mac(cb, secret.reveal())
            outcome = model.classify(cb)
            digest = model.callback_digest(fields)
            answer = await self._apply(merchant, cb, outcome, digest, started)
            if answer is None:
                answer = await self._not_applied(cb, outcome, digest)
            return answer
        except CallbackRejected as exc:
            return self._reject(exc.reason, cb)

    def _reject(self, reason: str, cb: model.Callback | None, status: int = 400) -> CallbackAnswer:
        m.CHECKOUT_CALLBACKS.labels("rejected").inc()
        log.error(
            "checkout_callback_rejected",
            reason=reason,
            transaction_id=str(cb.txn_id) if cb else None,
            merchant_id=str(cb.merchant_id) if cb else None,
            tran_nbr=cb.tran_nbr if cb else None,
        )
        return CallbackAnswer(status, reason=reason)

    async def _apply(
        self,
        merchant: Merchant,
        cb: model.Callback,
        outcome: model.Outcome,
        digest: bytes,
        started: float,
    ) -> CallbackAnswer | None:
        approved = outcome.status == "approved"
        args = FinalizeArgs(
            txn_id=cb.txn_id,
            merchant_id=merchant.id,
            tran_nbr=cb.tran_nbr,
            tx_type=_TX_TYPES[cb.tran_group],
            amount=cb.amount_cents if cb.amount_cents is not None else cb.auth_amount_cents,
            customer_id=cb.user_data[1] or "",
            status=outcome.status,
            auth_guid=cb.auth_guid,
            auth_resp=cb.auth_resp,
            auth_code=cb.auth_code,
            auth_resp_text=cb.auth_resp_text,
            avs_result=cb.avs_result,
            cvv_result=cb.cvv_result,
            card_brand=wire.normalize_card_brand(cb.card_type),
            card_last4=cb.card_last4,
            ntid=cb.ntid,
            decline_category=outcome.decline_category,
            failure_code=outcome.failure_code,
            digest=digest,
        )
        async with self.db.transaction() as con:
            done = await self.repo.finalize(con, args)
            if done is None:
                return None
            session = done.session
            txn = session.txn
            event = _EVENTS.get(outcome.status) if txn.type in ("sale", "auth") else None
            if event is not None:
                await self._event(con, merchant, session, event)
            saved = approved and txn.type == "storage" and await self._save_card(con, merchant, session, cb)
        if saved and self.card_saver is not None and txn.customer_id:
            self.card_saver.invalidate_customer(merchant.id, txn.customer_id)  # after the commit
        late = done.previous_status == "expired"
        m.CHECKOUT_CALLBACKS.labels("late" if late else outcome.status).inc()
        if late:
            log.error(
                "checkout_late_callback_applied",
                transaction_id=str(txn.id),
                tran_nbr=txn.tran_nbr,
                status=outcome.status,
            )
        elif outcome.status == "unknown":
            log.warning(
                "checkout_outcome_unknown",
                transaction_id=str(txn.id),
                tran_nbr=txn.tran_nbr,
                reason=outcome.failure_code,
            )
        if txn.type in ("sale", "auth"):
            self.metrics.record(
                merchant_slug=merchant.slug,
                payment_type="card",
                transaction_type=txn.type,
                status=outcome.status,
                amount=txn.amount,
                currency=txn.currency.strip(),
                duration=time.perf_counter() - started,
            )
        log.info(
            "checkout_callback_applied",
            transaction_id=str(txn.id),
            session_id=str(session.id),
            status=outcome.status,
            tran_nbr=txn.tran_nbr,
        )
        return self._redirect(session, outcome.status)

    async def _event(self, con: Connection, merchant: Merchant, session: SessionRow, event: str) -> None:
        txn = session.txn
        payment = payment_schemas.payment_out(
            txn, [], group_of(txn, []), livemode=merchant.environment == "production"
        )
        await self.repo.insert_event(
            con, uuid7(), merchant.id, event, txn.id, {"object": payment}, traceparent_var.get()
        )

    async def _save_card(
        self, con: Connection, merchant: Merchant, session: SessionRow, cb: model.Callback
    ) -> bool:
        """The approved `STORAGE` result as a saved card, in the callback's transaction (§6.4 step 6)."""
        txn = session.txn
        if self.card_saver is None or not cb.auth_guid or not txn.customer_id:
            log.error(
                "checkout_card_not_saved", transaction_id=str(txn.id), reason="no payment-method service"
            )
            return False
        expiry = cb.expiry
        method = await self.card_saver.save_card_from_storage(
            merchant,
            customer_id=txn.customer_id,
            storage_bric=cb.auth_guid,
            brand=wire.normalize_card_brand(cb.card_type),
            last4=cb.card_last4,
            exp_month=expiry[0] if expiry else None,
            exp_year=expiry[1] if expiry else None,
            ntid=cb.ntid,
            con=con,
        )
        method_id = getattr(method, "id", None)
        if isinstance(method_id, uuid.UUID):
            await self.repo.set_payment_method(con, session.id, method_id)
        return True

    async def _not_applied(self, cb: model.Callback, outcome: model.Outcome, digest: bytes) -> CallbackAnswer:
        """The compare-and-set changed nothing: a replay, a different repeat, or a mismatch."""
        current = await self.repo.for_transaction(cb.txn_id, cb.merchant_id)
        if current is None or current.txn.source != "browser_post":
            raise CallbackRejected("unknown_transaction")
        expected = model.Expected(
            tran_nbr=current.txn.tran_nbr,
            tran_group=model.TX_TYPE_GROUPS.get(current.txn.type, ""),
            amount_cents=current.txn.amount,
            customer_id=current.txn.customer_id,
        )
        problems = model.mismatches(cb, expected)
        if problems:
            raise CallbackRejected(problems[0])
        if current.result_status is None:
            # never completed by a callback (its form could not be issued, or it raced): refuse
            raise CallbackRejected(f"transaction_{current.txn.status}")
        if current.callback_digest == digest:
            m.CHECKOUT_CALLBACKS.labels("replayed").inc()
            log.info("checkout_callback_replayed", transaction_id=str(cb.txn_id), tran_nbr=cb.tran_nbr)
        else:
            # §6.7: a later, different answer (a double-submitted form's "duplicate", a decline after
            # an approval) is never recorded over the first; the shopper sees the recorded outcome.
            m.CHECKOUT_CALLBACKS.labels("conflict").inc()
            log.error(
                "checkout_callback_conflict",
                transaction_id=str(cb.txn_id),
                tran_nbr=cb.tran_nbr,
                recorded=current.result_status,
                received=outcome.status,
                reason=outcome.failure_code,
            )
        return self._redirect(current, current.result_status)

    def _redirect(self, session: SessionRow, status: str) -> CallbackAnswer:
        target = model.redirect_target(
            status=status, return_url=session.return_url, decline_url=session.decline_url
        )
        return CallbackAnswer(303, location=model.result_url(target, session.txn.id, status))

    # ------------------------------------------------------------------ expiry
    async def expire_sessions(self, *, batch: int = 500, max_batches: int = 20) -> dict[str, int]:
        """Open sessions whose last TAC lapsed more than the grace period ago become `expired`
        (their pending transaction too: never `declined`)."""
        totals = {"sessions": 0, "transactions": 0}
        now = self.clock.now()
        for _ in range(max_batches):
            sessions, transactions = await self.repo.expire_due(now, batch)
            totals["sessions"] += sessions
            totals["transactions"] += transactions
            if sessions < batch:
                break
        if totals["sessions"]:
            m.CHECKOUT_EXPIRED.inc(totals["transactions"])
            log.info("checkout_sessions_expired", **totals)
        return totals


def session_out(session: SessionRow, *, livemode: bool) -> schemas.CheckoutSessionOut:
    txn = session.txn
    return schemas.CheckoutSessionOut(
        id=session.id,
        mode=session.mode,  # type: ignore[arg-type]
        state=session.state,  # type: ignore[arg-type]
        payment_id=txn.id,
        payment_status=txn.status,
        amount=txn.amount,
        currency=txn.currency.strip(),
        customer_id=txn.customer_id,
        return_url=session.return_url,
        decline_url=session.decline_url,
        payment_method_id=session.payment_method_id,
        tac_expires_at=session.tac_expires_at,
        expires_at=session.expires_at,
        completed_at=session.completed_at,
        livemode=livemode,
        created_at=session.created_at,
    )
