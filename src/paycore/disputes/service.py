"""Disputes: the sync from North's dispute report and the read API (epx-protocol.md §8).

The sync (job `disputes.sync`) reads each active merchant's disputes over an overlapping window
(the last `PAYCORE_DISPUTE_LOOKBACK_DAYS`, or up to `PAYCORE_DISPUTE_MAX_LOOKBACK_DAYS` for a first
sync or after an outage) and upserts them by (merchant, case number), so overlaps and re-runs are
harmless. Each dispute is linked to its transaction by TRAN_NBR within the merchant (last four and
amount cross-checked); one that cannot be matched is kept, flagged. A status North sends that paycore
does not know is stored raw, the previous status kept, and logged at ERROR. `dispute.created` and
`dispute.updated` are written to the outbox in the same transaction, the latter only when a field
actually changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import msgspec
import structlog

from paycore.disputes import model, schemas
from paycore.disputes.model import Candidate, DisputeFields
from paycore.disputes.repository import DisputeRepository
from paycore.gateway.epx import wire
from paycore.gateway.north.client import DisputesUnavailable, NorthDispute, NorthDisputeClient, to_cents
from paycore.kernel import errors
from paycore.kernel.clock import Clock
from paycore.kernel.errors import PaycoreError
from paycore.kernel.ids import uuid7
from paycore.merchants.model import Principal
from paycore.platform.context import traceparent_var
from paycore.platform.cursor import CursorCodec
from paycore.platform.db import Database
from paycore.platform.observability import metrics as m

log = structlog.get_logger("paycore.disputes")

DISPUTE_NOT_FOUND = errors.register("dispute_not_found", 404, "No such dispute")


@dataclass(frozen=True, slots=True)
class ListDisputes:
    limit: int
    status: str | None = None
    payment_id: uuid.UUID | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None
    starting_after: str | None = None
    ending_before: str | None = None


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


class DisputeService:
    def __init__(
        self,
        *,
        db: Database,
        repository: DisputeRepository,
        north: NorthDisputeClient,
        clock: Clock,
        cursors: CursorCodec,
        lookback_days: int = 7,
        max_lookback_days: int = 90,
    ) -> None:
        self.db = db
        self.repo = repository
        self.north = north
        self.clock = clock
        self.cursors = cursors
        self.lookback_days = lookback_days
        self.max_lookback_days = max_lookback_days

    # ================================================================== sync
    def window(self, last_success: datetime | None, complete: bool) -> tuple[date, date]:
        today = self.clock.now().date()
        if last_success is None or not complete:
            days = self.max_lookback_days
        else:
            gap = (today - last_success.date()).days + 1
            days = min(max(self.lookback_days, gap), self.max_lookback_days)
        return today - timedelta(days=days - 1), today

    async def sync_all(self) -> dict[str, int]:
        totals = {"merchants": 0, "created": 0, "updated": 0, "unchanged": 0, "failed": 0}
        after = uuid.UUID(int=0)
        while True:
            merchants = await self.repo.active_merchants(after, 100)
            if not merchants:
                break
            for merchant_id, merch_nbr in merchants:
                totals["merchants"] += 1
                try:
                    counts = await self.sync_merchant(merchant_id, merch_nbr)
                except DisputesUnavailable as exc:
                    totals["failed"] += 1
                    log.warning("dispute_sync_unavailable", merchant_id=str(merchant_id), error=str(exc))
                    await self.repo.record_sync(merchant_id, str(exc)[:300], False)
                    continue
                for key in ("created", "updated", "unchanged"):
                    totals[key] += counts[key]
            after = merchants[-1][0]
        return totals

    async def sync_merchant(self, merchant_id: uuid.UUID, merch_nbr: str) -> dict[str, int]:
        state = await self.repo.sync_state(merchant_id)
        start, end = self.window(*(state or (None, True)))
        result = await self.north.fetch_window(merch_nbr, start, end)
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for dispute in result.disputes:
            outcome = await self.upsert(merchant_id, dispute)
            counts[outcome] += 1
        await self.repo.record_sync(
            merchant_id, None if result.complete else "partial: a day exceeded North's page", result.complete
        )
        return counts

    async def upsert(self, merchant_id: uuid.UUID, dispute: NorthDispute) -> str:
        """Insert or update one dispute; 'created', 'updated' or 'unchanged'."""
        tran_nbr = wire.parse_tran_nbr(dispute.transaction_number)
        amount = to_cents(dispute.chargeback_amount) or 0
        transaction_amount = to_cents(dispute.transaction_amount)
        async with self.db.transaction() as con:
            existing = await self.repo.lock(con, merchant_id, dispute.case_number)
            candidate_row = (
                await self.repo.candidate(con, merchant_id, tran_nbr) if tran_nbr is not None else None
            )
            candidate = (
                Candidate(
                    transaction_id=candidate_row["id"],
                    payment_id=candidate_row["group_id"],
                    amount=candidate_row["amount"],
                    card_last4=candidate_row["card_last4"],
                )
                if candidate_row is not None
                else None
            )
            last4 = (dispute.card_number_last_four or "").strip() or None
            match = model.match(candidate, last4=last4, transaction_amount=transaction_amount)
            previous_status = existing["status"] if existing is not None else None
            status, known = model.map_status(dispute.status, previous_status)
            if not known:
                log.error(
                    "dispute_status_unknown",
                    merchant_id=str(merchant_id),
                    case_number=dispute.case_number,
                    gateway_status=dispute.status[:40],
                    kept=status,
                )
            if match == "mismatch":
                log.warning(
                    "dispute_transaction_mismatch",
                    merchant_id=str(merchant_id),
                    case_number=dispute.case_number,
                    tran_nbr=tran_nbr,
                )
            linked = candidate if match == "matched" else None
            fields = DisputeFields(
                status=status,
                gateway_status=dispute.status.strip()[:40],
                dispute_type=dispute.dispute_type,
                reason_code=(dispute.reason_code or "").strip() or None,
                reason_description=dispute.reason_description,
                reason_category=model.reason_category(dispute.reason_code).value,
                card_brand=dispute.card_brand,
                card_last4=last4,
                tran_nbr=tran_nbr,
                transaction_id=linked.transaction_id if linked else None,
                payment_id=linked.payment_id if linked else None,
                match_status=match,
                amount=amount,
                transaction_amount=transaction_amount,
                dispute_date=_date(dispute.dispute_date),
                chargeback_date=_date(dispute.chargeback_date),
                transaction_date=_date(dispute.transaction_date),
            )
            values = (
                fields.status,
                fields.gateway_status,
                fields.dispute_type,
                fields.reason_code,
                fields.reason_description,
                fields.reason_category,
                fields.card_brand,
                fields.card_last4,
                fields.tran_nbr,
                fields.transaction_id,
                fields.payment_id,
                fields.match_status,
                fields.amount,
                fields.transaction_amount,
                fields.dispute_date,
                fields.chargeback_date,
                fields.transaction_date,
            )
            if existing is None:
                row = await self.repo.insert(con, (uuid7(), merchant_id, dispute.case_number, *values))
                if row is None:  # another sync inserted it a moment ago: next run compares
                    return "unchanged"
                await self._event(con, "dispute.created", row)
                outcome = "created"
                m.CHARGEBACKS.labels(model.reason_label(fields.reason_code), "pending").inc()
                if model.metric_status(status) != "pending":
                    m.CHARGEBACKS.labels(
                        model.reason_label(fields.reason_code), model.metric_status(status)
                    ).inc()
            else:
                before = DisputeFields(**{k: existing[k] for k in DisputeFields.__dataclass_fields__})
                if not model.changed_fields(before, fields):
                    return "unchanged"
                row = await self.repo.update(con, (merchant_id, dispute.case_number, *values))
                await self._event(con, "dispute.updated", row)
                outcome = "updated"
                old_metric = model.metric_status(before.status)
                new_metric = model.metric_status(status)
                if new_metric not in (old_metric, "pending"):
                    m.CHARGEBACKS.labels(model.reason_label(fields.reason_code), new_metric).inc()
        return outcome

    async def _event(self, con: Any, event_type: str, row: Any) -> None:
        out = self._out(row, livemode=False)
        payload = {"object": msgspec.to_builtins(out)}
        await self.repo.insert_event(
            con, (uuid7(), row["merchant_id"], event_type, row["id"], payload, traceparent_var.get())
        )

    # ================================================================== read API
    @staticmethod
    def _out(row: Any, *, livemode: bool) -> schemas.DisputeOut:
        return schemas.DisputeOut(
            id=row["id"],
            case_number=row["case_number"],
            status=row["status"],
            gateway_status=row["gateway_status"],
            amount=row["amount"],
            currency=row["currency"].strip(),
            reason_code=row["reason_code"],
            reason_description=row["reason_description"],
            reason_category=row["reason_category"],
            dispute_type=row["dispute_type"],
            card_brand=row["card_brand"],
            card_last4=row["card_last4"],
            payment_id=row["payment_id"],
            transaction_id=row["transaction_id"],
            tran_nbr=str(row["tran_nbr"]) if row["tran_nbr"] is not None else None,
            match_status=row["match_status"],
            transaction_amount=row["transaction_amount"],
            dispute_date=row["dispute_date"],
            chargeback_date=row["chargeback_date"],
            transaction_date=row["transaction_date"],
            livemode=livemode,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def get(self, principal: Principal, dispute_id: uuid.UUID) -> schemas.DisputeOut:
        row = await self.repo.get(dispute_id, principal.merchant.id)
        if row is None:
            raise PaycoreError(DISPUTE_NOT_FOUND)
        return self._out(row, livemode=principal.livemode)

    async def list(self, principal: Principal, query: ListDisputes) -> schemas.DisputeList:
        mid = principal.merchant.id
        after, before = self.cursors.bounds(query.starting_after, query.ending_before, mid)
        rows = await self.repo.list(
            mid,
            limit=query.limit + 1,
            status=query.status,
            payment_id=query.payment_id,
            created_gte=query.created_gte,
            created_lt=query.created_lt,
            after=after,
            before=before,
        )
        page = self.cursors.page(
            rows,
            limit=query.limit,
            merchant_id=mid,
            after=after,
            before=before,
            key=lambda r: (r["created_at"], r["id"]),
        )
        return schemas.DisputeList(
            data=[self._out(r, livemode=principal.livemode) for r in page.rows],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
            prev_cursor=page.prev_cursor,
        )
