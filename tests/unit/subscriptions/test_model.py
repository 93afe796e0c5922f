"""Subscription rules: creation, pending changes, pause/resume/cancel, dunning decisions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.idempotency.model import KEY_PATTERN
from paycore.kernel.errors import PaycoreError
from paycore.subscriptions import model
from paycore.subscriptions.calendar import Interval
from paycore.subscriptions.model import ClaimAction, Outcome, Subscription

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
SCHEDULE = (1 * 86400.0, 3 * 86400.0, 5 * 86400.0)
MONTHLY = Interval("month")


def make(start: datetime = T0, interval: Interval = MONTHLY, amount: int = 1000, **kw) -> Subscription:
    sub = model.new_subscription(
        id=uuid.uuid4(),
        merchant_id=uuid.uuid4(),
        customer_id="cus_1",
        payment_method_id=uuid.uuid4(),
        amount=amount,
        currency="USD",
        interval=interval,
        start_at=start,
        now=kw.pop("now", start),
    )
    return model._replace(sub, sub.updated_at, **kw) if kw else sub


def charge(
    sub: Subscription, outcome: Outcome, now: datetime, category: str | None = None, amount=None, code=None
):
    return model.after_charge(
        sub,
        period_index=sub.period_index,
        outcome=outcome,
        retryable=model.retryable_decline(code, category),
        amount=amount or sub.amount,
        now=now,
        schedule=SCHEDULE,
        retry_delay=timedelta(minutes=5),
    )


def paid(sub: Subscription, now: datetime | None = None) -> Subscription:
    return charge(sub, Outcome.APPROVED, now or sub.next_billing_at).subscription


# --- creation ------------------------------------------------------------------------------------
def test_new_subscription_is_active_and_due_at_its_start():
    sub = make()
    assert sub.status == "active" and sub.period_index == 0 and sub.next_billing_at == T0
    assert sub.anchor_at == T0 and sub.current_period_end is None and not sub.unpaid


def test_start_date_bounds():
    now = T0
    assert make(start=now - timedelta(hours=23), now=now).next_billing_at == now - timedelta(hours=23)
    for bad in (now - timedelta(hours=25), now + timedelta(days=367)):
        with pytest.raises(PaycoreError) as info:
            make(start=bad, now=now)
        assert info.value.code == "subscription_start_invalid"
    with pytest.raises(PaycoreError):
        make(start=datetime(2026, 2, 1), now=now)  # naive


def test_interval_of_maps_errors_to_a_problem():
    with pytest.raises(PaycoreError) as info:
        model.interval_of("month", 40)
    assert info.value.code == "subscription_interval_invalid" and info.value.status == 422


# --- billing outcomes ----------------------------------------------------------------------------
def test_approved_charge_pays_the_period_and_schedules_the_next():
    sub = make()
    decision = charge(sub, Outcome.APPROVED, T0 + timedelta(minutes=1))
    after = decision.subscription
    assert decision.events == (model.EVENT_RENEWED,) and decision.charge_status == "approved"
    assert (after.current_period_start, after.current_period_end) == (
        T0,
        datetime(2026, 2, 28, 10, tzinfo=UTC),
    )
    assert after.period_index == 1 and after.next_billing_at == after.current_period_end
    assert after.initial_amount == 1000 and after.locked_until is None
    again = paid(after)
    assert again.current_period_end == datetime(2026, 3, 31, 10, tzinfo=UTC)  # back to the 31st
    assert again.initial_amount == 1000


def test_soft_declines_follow_the_schedule_then_past_due():
    sub = make()
    first_failure = T0 + timedelta(minutes=2)
    d1 = charge(sub, Outcome.DECLINED, first_failure, "soft_decline")
    assert d1.events == (model.EVENT_PAYMENT_FAILED,) and d1.charge_status == "declined"
    assert d1.subscription.next_billing_at == first_failure + 1 * DAY == d1.next_retry_at
    assert d1.subscription.dunning_attempts == 1 and d1.subscription.status == "active"
    d2 = charge(d1.subscription, Outcome.DECLINED, first_failure + 1 * DAY, "soft_decline")
    assert d2.subscription.next_billing_at == first_failure + 3 * DAY
    d3 = charge(d2.subscription, Outcome.DECLINED, first_failure + 3 * DAY, "error", code="96")
    assert d3.subscription.next_billing_at == first_failure + 5 * DAY
    d4 = charge(d3.subscription, Outcome.DECLINED, first_failure + 5 * DAY, "soft_decline")
    assert d4.events == (model.EVENT_PAYMENT_FAILED, model.EVENT_PAST_DUE)
    assert d4.subscription.status == "past_due" and d4.subscription.dunning_attempts == 4
    assert d4.next_retry_at is None
    assert d4.subscription.period_index == 0  # the period stays unpaid


def test_a_retry_that_succeeds_resets_dunning_and_keeps_the_calendar():
    sub = make()
    d1 = charge(sub, Outcome.DECLINED, T0, "soft_decline")
    ok = charge(d1.subscription, Outcome.APPROVED, T0 + DAY)
    assert ok.subscription.dunning_attempts == 0 and ok.subscription.dunning_started_at is None
    assert ok.subscription.next_billing_at == datetime(2026, 2, 28, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "category", "code"),
    [
        (Outcome.DECLINED, "hard_decline", "14"),
        (Outcome.DECLINED, "hard_decline", "54"),
        (Outcome.DECLINED, "error", "12"),  # invalid transaction: inspect the request, no retry
        (Outcome.DECLINED, "unknown", "77"),
        (Outcome.DECLINED, "hard_decline", None),
        (Outcome.UNUSABLE, None, None),
    ],
)
def test_hard_declines_and_unusable_methods_go_past_due_at_once(outcome, category, code):
    decision = charge(make(), outcome, T0, category, code=code)
    assert decision.subscription.status == "past_due"
    assert decision.events == (model.EVENT_PAYMENT_FAILED, model.EVENT_PAST_DUE)
    assert decision.charge_status == ("declined" if outcome is Outcome.DECLINED else "failed")


def test_not_processed_and_pending_outcomes_only_hold_the_subscription():
    sub = make()
    failed = charge(sub, Outcome.FAILED, T0)
    assert failed.events == () and failed.charge_status == "failed"
    assert failed.subscription.dunning_attempts == 0 and failed.subscription.next_billing_at == T0
    assert failed.subscription.locked_until == T0 + timedelta(minutes=5)
    pending = charge(sub, Outcome.PENDING, T0)
    assert pending.events == () and pending.charge_status == "pending"
    assert pending.subscription.locked_until == T0 + timedelta(minutes=5)


def test_outcomes_of_a_canceled_subscription_or_a_settled_period_change_nothing():
    sub = make()
    canceled, _ = model.cancel(sub, T0, at_period_end=False)
    decision = charge(canceled, Outcome.APPROVED, T0)
    assert decision.subscription is canceled and decision.events == ()
    moved = paid(sub)
    stale = model.after_charge(
        moved, period_index=0, outcome=Outcome.APPROVED, retryable=False, amount=1, now=T0
    )
    assert stale.subscription is moved and stale.charge_status == "approved"


def test_a_paused_subscription_out_of_retries_stays_paused():
    sub = make()
    for _ in range(3):
        sub = charge(sub, Outcome.DECLINED, T0, "soft_decline").subscription
    sub = model.pause(sub, T0)
    decision = charge(sub, Outcome.DECLINED, T0, "soft_decline")
    assert decision.subscription.status == "paused" and decision.events == (model.EVENT_PAYMENT_FAILED,)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["ok", "soft", "hard", "failed", "pending"]), min_size=1, max_size=40))
def test_every_period_is_paid_once_in_order_and_dates_follow_the_calendar(steps):
    sub = make()
    now = T0
    paid_periods: list[int] = []
    for step in steps:
        if sub.status != "active":
            break
        now = max(now, sub.next_billing_at)
        outcome, category = {
            "ok": (Outcome.APPROVED, None),
            "soft": (Outcome.DECLINED, "soft_decline"),
            "hard": (Outcome.DECLINED, "hard_decline"),
            "failed": (Outcome.FAILED, None),
            "pending": (Outcome.PENDING, None),
        }[step]
        before = sub.period_index
        sub = charge(sub, outcome, now, category).subscription
        if outcome is Outcome.APPROVED:
            paid_periods.append(before)
            assert sub.current_period_start == sub.period_date(before)
            assert sub.next_billing_at == sub.period_date(before + 1)
        else:
            assert sub.period_index == before
    assert paid_periods == list(range(len(paid_periods)))


# --- changes --------------------------------------------------------------------------------------
def test_changes_wait_for_the_next_period_and_reanchor_the_interval():
    sub = paid(make())  # period 0 paid: Jan 31 → Feb 28
    pm = uuid.uuid4()
    changed = model.update(sub, T0 + DAY, amount=2500, interval=Interval("week", 2), payment_method_id=pm)
    assert (changed.amount, changed.interval_unit, changed.payment_method_id) == (
        1000,
        "month",
        sub.payment_method_id,
    )
    assert changed.pending_amount == 2500 and changed.pending_payment_method_id == pm
    assert model.pending_effective_at(changed) == datetime(2026, 2, 28, 10, tzinfo=UTC)
    opened = model.open_period(changed, datetime(2026, 2, 28, 10, tzinfo=UTC))
    assert (opened.amount, opened.payment_method_id, opened.interval_unit, opened.interval_count) == (
        2500,
        pm,
        "week",
        2,
    )
    assert not opened.has_pending_changes
    assert opened.anchor_at == datetime(2026, 2, 28, 10, tzinfo=UTC) and opened.anchor_index == 1
    after = paid(opened)
    assert after.current_period_start == datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert after.current_period_end == datetime(2026, 3, 14, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        after.period_date(0)  # before the new anchor: history


def test_setting_back_the_current_value_withdraws_a_pending_change():
    sub = paid(make())
    changed = model.update(sub, T0, amount=2000, interval=Interval("year"))
    back = model.update(changed, T0, amount=1000, interval=Interval("month"))
    assert not back.has_pending_changes and model.pending_effective_at(back) is None


def test_a_new_payment_method_applies_at_once_while_a_period_is_unpaid():
    failing = charge(make(), Outcome.DECLINED, T0, "soft_decline").subscription
    pm = uuid.uuid4()
    changed = model.update(failing, T0, payment_method_id=pm, amount=5000)
    assert changed.payment_method_id == pm and changed.pending_payment_method_id is None
    assert changed.pending_amount == 5000
    assert model.pending_effective_at(changed) == datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert model.open_period(changed, T0) is changed  # the unpaid period keeps its terms


def test_updates_of_a_canceled_subscription_and_cancel_at_period_end_via_update():
    sub = paid(make())
    with pytest.raises(PaycoreError) as info:
        model.update(sub, T0, cancel_at_period_end=True)
    assert info.value.code == "subscription_invalid_state"
    scheduled, now = model.cancel(sub, T0 + DAY, at_period_end=True)
    assert scheduled.cancel_at_period_end and not now
    assert not model.update(scheduled, T0 + DAY, cancel_at_period_end=False).cancel_at_period_end
    canceled, _ = model.cancel(sub, T0, at_period_end=False)
    with pytest.raises(PaycoreError) as info:
        model.update(canceled, T0, amount=1)
    assert info.value.code == "subscription_canceled"
    assert model.update(sub, T0) is sub


# --- pause / resume / cancel ------------------------------------------------------------------------
def test_pause_and_resume_within_a_paid_period_changes_nothing_else():
    sub = paid(make())
    paused = model.pause(sub, T0 + DAY)
    assert paused.status == "paused" and paused.paused_at == T0 + DAY
    assert model.pause(paused, T0 + 2 * DAY) is paused
    resumed = model.resume(paused, T0 + 2 * DAY)
    assert resumed.status == "active" and resumed.next_billing_at == sub.next_billing_at
    assert resumed.period_index == 1 and resumed.paused_at is None
    assert model.resume(resumed, T0) is resumed


def test_resume_skips_periods_that_passed_entirely_and_bills_the_current_one_now():
    sub = paid(make())  # paid Jan 31 → Feb 28; next: period 1 on Feb 28
    paused = model.pause(sub, T0 + DAY)
    later = datetime(2026, 5, 3, tzinfo=UTC)  # periods 1 (Feb 28) and 2 (Mar 31) passed; 3 started Apr 30
    resumed = model.resume(paused, later)
    assert resumed.period_index == 3 and resumed.next_billing_at == datetime(2026, 4, 30, 10, tzinfo=UTC)
    assert resumed.next_billing_at <= later  # due at once


def test_resume_of_a_past_due_subscription_retries_the_unpaid_period_with_fresh_dunning():
    sub = charge(make(), Outcome.DECLINED, T0, "hard_decline").subscription
    assert sub.status == "past_due"
    with pytest.raises(PaycoreError) as info:
        model.pause(sub, T0)
    assert info.value.code == "subscription_invalid_state"
    resumed = model.resume(sub, T0 + 2 * DAY)
    assert resumed.status == "active" and resumed.period_index == 0 and resumed.dunning_attempts == 0
    assert resumed.next_billing_at == T0 + 2 * DAY


@settings(max_examples=100, deadline=None)
@given(
    paid_periods=st.integers(0, 5),
    pause_after=st.timedeltas(timedelta(0), timedelta(days=40)),
    pause_for=st.timedeltas(timedelta(0), timedelta(days=400)),
)
def test_resume_never_bills_a_period_that_ended_and_never_goes_back(paid_periods, pause_after, pause_for):
    sub = make()
    for _ in range(paid_periods):
        sub = paid(sub)
    paused_at = sub.start_at + pause_after
    resumed_at = paused_at + pause_for
    resumed = model.resume(model.pause(sub, paused_at), resumed_at)
    assert resumed.period_index >= sub.period_index
    assert resumed.period_date(resumed.period_index + 1) > resumed_at  # its period has not ended
    if resumed.period_index > sub.period_index:
        assert resumed.period_date(resumed.period_index) <= resumed_at  # and it has started


def test_cancel_at_period_end_only_with_a_paid_period_running():
    sub = paid(make())
    scheduled, now = model.cancel(sub, T0 + DAY, at_period_end=True)
    assert scheduled.status == "active" and scheduled.cancel_at_period_end and not now
    assert model.decide_claim(scheduled, live_attempt=False) is ClaimAction.CANCEL
    ended = model.cancel_at_period_end(scheduled, datetime(2026, 3, 1, tzinfo=UTC))
    assert ended.status == "canceled" and ended.canceled_at == sub.current_period_end
    assert ended.cancellation_reason == "period_end"
    for not_running in (make(), charge(make(), Outcome.DECLINED, T0, "soft_decline").subscription):
        canceled, now = model.cancel(not_running, T0, at_period_end=True)
        assert canceled.status == "canceled" and now and canceled.canceled_at == T0


def test_cancel_is_idempotent_and_drops_pending_changes():
    sub = model.update(paid(make()), T0, amount=9999)
    canceled, now = model.cancel(sub, T0, at_period_end=False)
    assert now and not canceled.has_pending_changes and canceled.cancellation_reason == "requested"
    again, now_again = model.cancel(canceled, T0 + DAY, at_period_end=False)
    assert again is canceled and not now_again
    with pytest.raises(PaycoreError):
        model.resume(canceled, T0)
    with pytest.raises(PaycoreError):
        model.pause(canceled, T0)


@pytest.mark.parametrize(
    ("code", "category", "retry"),
    [("05", "soft_decline", True), ("51", "soft_decline", True), ("61", "soft_decline", True),
     ("65", "soft_decline", True), ("91", "soft_decline", True), ("96", "error", True),
     ("14", "hard_decline", False), ("41", "hard_decline", False), ("43", "hard_decline", False),
     ("57", "hard_decline", False), ("82", "hard_decline", False), ("12", "error", False),
     ("99", "unknown", False), (None, "soft_decline", True), (None, "error", False)],
)  # fmt: skip
def test_which_declines_are_retried(code, category, retry):
    assert model.retryable_decline(code, category) is retry


# --- claims, keys, schedule -----------------------------------------------------------------------
def test_decide_claim():
    sub = make()
    assert model.decide_claim(sub, live_attempt=False) is ClaimAction.CHARGE
    assert model.decide_claim(sub, live_attempt=True) is ClaimAction.RESUME


def test_charge_keys_are_deterministic_and_never_a_valid_api_key():
    sid = uuid.uuid4()
    key = model.charge_key(sid, 3, 2)
    assert key == model.charge_key(sid, 3, 2) == f"internal sub:{sid}:3:2"
    assert model.charge_key(sid, 3, 1) != key and len(key) <= 255
    assert KEY_PATTERN.match(key) is None


@pytest.mark.parametrize("bad", [(), (0.0,), (3.0, 1.0), (1.0, 1.0)])
def test_check_schedule(bad):
    assert model.check_schedule((1.0, 2.0)) == (1.0, 2.0)
    with pytest.raises(ValueError):
        model.check_schedule(bad)
