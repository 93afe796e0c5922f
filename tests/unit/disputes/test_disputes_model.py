"""Dispute rules: reason-code table (CACHE-6), statuses, matching, change detection, and the North
client's window splitting and amount parsing."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from paycore.disputes import model
from paycore.gateway.north.client import NorthDispute, NorthDisputeClient, NorthPage, split_window, to_cents

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("10.1", "fraud"),
        ("10.4", "fraud"),
        ("11.1", "authorization"),
        ("11.2", "authorization"),
        ("11.3", "authorization"),
        ("4837", "fraud"),
        ("4863", "fraud"),
        ("C02", "consumer_dispute"),
        ("12.6.1", "processing_error"),
        ("99.9", "other"),
        (None, "other"),
    ],
)
def test_reason_code_table(code, category):
    assert model.reason_category(code) == category
    assert model.reason_label(code) == (code if category != "other" else "other")


def test_statuses_map_one_to_one_and_unknown_keeps_the_previous():
    for north, ours in (
        ("NEW", "new"),
        ("PENDING", "pending"),
        ("RESPONDED", "responded"),
        ("WON", "won"),
        ("LOST", "lost"),
        ("ACCEPTED", "accepted"),
    ):
        assert model.map_status(north, None) == (ours, True)
    assert model.map_status("ESCALATED", "responded") == ("responded", False)
    assert model.map_status("ESCALATED", None) == ("new", False)


def test_metric_status():
    assert [model.metric_status(s) for s in ("new", "pending", "responded", "won", "lost", "accepted")] == [
        "pending",
        "pending",
        "pending",
        "won",
        "lost",
        "lost",
    ]


def test_matching_cross_checks_last4_and_amount():
    c = model.Candidate(transaction_id=1, payment_id=1, amount=1050, card_last4="1111")
    assert model.match(c, last4="1111", transaction_amount=1050) == "matched"
    assert model.match(c, last4=None, transaction_amount=None) == "matched"
    assert model.match(c, last4="4242", transaction_amount=1050) == "mismatch"
    assert model.match(c, last4="1111", transaction_amount=999) == "mismatch"
    assert model.match(None, last4="1111", transaction_amount=1050) == "unmatched"


def _fields(**kw):
    base = dict(
        status="new",
        gateway_status="NEW",
        dispute_type="CHARGEBACK",
        reason_code="10.4",
        reason_description="x",
        reason_category="fraud",
        card_brand="VISA",
        card_last4="1111",
        tran_nbr=1,
        transaction_id=None,
        payment_id=None,
        match_status="unmatched",
        amount=1050,
        transaction_amount=1050,
        dispute_date=date(2026, 1, 1),
        chargeback_date=None,
        transaction_date=None,
    )
    base.update(kw)
    return model.DisputeFields(**base)


def test_change_detection():
    assert model.changed_fields(_fields(), _fields()) == []
    assert model.changed_fields(_fields(), _fields(status="won", gateway_status="WON")) == [
        "status",
        "gateway_status",
    ]
    assert "amount" in model.changed_fields(_fields(), _fields(amount=500))
    assert len(model.changed_fields(None, _fields())) > 10


def test_amounts_are_decimal_cents_never_float():
    assert to_cents(Decimal("10.50")) == 1050
    assert to_cents(Decimal("0.10")) == 10
    assert to_cents(None) is None
    for bad in (Decimal("1.005"), Decimal("-1.00"), Decimal("NaN")):
        with pytest.raises(ValueError):
            to_cents(bad)


def test_split_window():
    assert split_window(date(2026, 1, 1), date(2026, 1, 1)) is None
    assert split_window(date(2026, 1, 1), date(2026, 1, 2)) == (
        (date(2026, 1, 1), date(2026, 1, 1)),
        (date(2026, 1, 2), date(2026, 1, 2)),
    )
    left, right = split_window(date(2026, 1, 1), date(2026, 1, 31))
    assert left == (date(2026, 1, 1), date(2026, 1, 16)) and right == (date(2026, 1, 17), date(2026, 1, 31))


class FakeNorth(NorthDisputeClient):
    """North with a page cap: answers at most `cap` disputes per query, reporting the total."""

    def __init__(self, disputes: dict[str, date], cap: int) -> None:
        self.disputes = disputes
        self.cap = cap
        self.windows: list[tuple[date, date]] = []

    async def search(self, merch_nbr, start, end):
        self.windows.append((start, end))
        matched = sorted((d, c) for c, d in self.disputes.items() if start <= d <= end)
        page = [
            NorthDispute(case_number=c, status="NEW", dispute_date=d.isoformat())
            for d, c in matched[: self.cap]
        ]
        return NorthPage(disputes=page, total=len(matched), count=len(page))


async def test_partial_pages_split_the_window_until_complete():
    disputes = {f"CB{i}": date(2026, 1, 1 + i) for i in range(10)}
    north = FakeNorth(disputes, cap=3)
    result = await north.fetch_window("900300", date(2026, 1, 1), date(2026, 1, 31))
    assert result.complete and sorted(d.case_number for d in result.disputes) == sorted(disputes)
    assert north.windows[0] == (date(2026, 1, 1), date(2026, 1, 31)) and len(north.windows) > 1


async def test_a_single_day_over_the_cap_is_reported_incomplete():
    disputes = {f"CB{i}": date(2026, 1, 5) for i in range(4)}
    north = FakeNorth(disputes, cap=2)
    result = await north.fetch_window("900300", date(2026, 1, 1), date(2026, 1, 10))
    assert not result.complete and len(result.disputes) == 2
