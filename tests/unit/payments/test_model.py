"""The money rules of a payment group: table tests and hypothesis properties."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paycore.kernel.errors import PaycoreError
from paycore.payments import model
from paycore.payments.model import Entry, Group, TxStatus, TxType

pytestmark = pytest.mark.unit

TODAY = "20261127"
YESTERDAY = "20261126"


def root(
    type_: TxType = TxType.AUTH,
    amount: int = 10_000,
    status: TxStatus = TxStatus.APPROVED,
    batch: str = TODAY,
) -> Entry:
    return Entry(id=uuid.uuid4(), type=type_, status=status, amount=amount, batch_id=batch)


def child(
    parent: Entry, type_: TxType, amount: int, status: TxStatus = TxStatus.APPROVED, batch: str = TODAY
) -> Entry:
    return Entry(
        id=uuid.uuid4(),
        type=type_,
        status=status,
        amount=amount,
        parent_id=parent.id,
        batch_id=batch,
        depth=parent.depth + 1,
    )


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(PaycoreError) as info:
        fn(*args, **kwargs)
    return info.value.code


def test_partial_captures_up_to_the_authorized_amount():
    auth = root()
    group = Group(auth)
    model.check_capture(group, 4_000, multi_capture=True)
    group = model.with_entry(group, child(auth, TxType.CAPTURE, 4_000))
    model.check_capture(group, 6_000, multi_capture=True)
    group = model.with_entry(group, child(auth, TxType.CAPTURE, 6_000))
    assert group.captured == 10_000
    assert group.capturable == 0
    assert code_of(model.check_capture, group, 1, multi_capture=True) == "amount_exceeds_capturable"


def test_pending_capture_reserves_its_amount():
    auth = root()
    group = model.with_entry(Group(auth), child(auth, TxType.CAPTURE, 7_000, TxStatus.PENDING))
    assert group.capturable == 3_000
    assert code_of(model.check_capture, group, 3_001, multi_capture=True) == "amount_exceeds_capturable"
    unknown = model.with_entry(Group(auth), child(auth, TxType.CAPTURE, 7_000, TxStatus.UNKNOWN))
    assert unknown.capturable == 3_000


def test_declined_capture_frees_its_reservation():
    auth = root()
    group = model.with_entry(Group(auth), child(auth, TxType.CAPTURE, 7_000, TxStatus.DECLINED))
    assert group.capturable == 10_000


def test_single_capture_merchant_refuses_a_second_capture():
    auth = root()
    group = model.with_entry(Group(auth), child(auth, TxType.CAPTURE, 4_000))
    assert code_of(model.check_capture, group, 1_000, multi_capture=False) == "multi_capture_not_enabled"


def test_sale_cannot_be_captured_and_declined_auth_cannot_either():
    assert (
        code_of(model.check_capture, Group(root(TxType.SALE)), 1, multi_capture=True)
        == "payment_not_capturable"
    )
    declined = Group(root(status=TxStatus.DECLINED))
    assert code_of(model.check_capture, declined, 1, multi_capture=True) == "payment_not_capturable"


def test_unknown_root_accepts_nothing_until_reconciled():
    group = Group(root(status=TxStatus.UNKNOWN))
    assert code_of(model.check_capture, group, 1, multi_capture=True) == "payment_outcome_unknown"
    assert code_of(model.check_refund, group, 1) == "payment_outcome_unknown"


@pytest.mark.parametrize("amount", [0, -1])
def test_non_positive_amounts_are_refused(amount):
    assert code_of(model.check_capture, Group(root()), amount, multi_capture=True) == "amount_invalid"


def test_refunds_limited_to_captured_minus_refunded():
    sale = root(TxType.SALE, 20_000)
    group = Group(sale)
    assert model.check_refund(group, 5_000) is sale
    group = model.with_entry(group, child(sale, TxType.REFUND, 5_000))
    group = model.with_entry(group, child(sale, TxType.REFUND, 7_500))
    assert group.refundable == 7_500
    assert code_of(model.check_refund, group, 7_501) == "amount_exceeds_refundable"
    pending = model.with_entry(group, child(sale, TxType.REFUND, 7_500, TxStatus.PENDING))
    assert code_of(model.check_refund, pending, 1) == "amount_exceeds_refundable"


def test_refund_of_an_authorization_targets_the_latest_capture():
    auth = root()
    first = child(auth, TxType.CAPTURE, 3_000)
    second = child(auth, TxType.CAPTURE, 2_000)
    group = model.with_entry(model.with_entry(Group(auth), first), second)
    assert model.check_refund(group, 5_000) is second
    assert code_of(model.check_refund, Group(auth), 1) == "payment_not_refundable"


def test_void_of_an_authorization_needs_nothing_captured():
    auth = root()
    assert model.check_void(Group(auth), None, current_batch_id=TODAY) is auth
    captured = model.with_entry(Group(auth), child(auth, TxType.CAPTURE, 1_000))
    assert code_of(model.check_void, captured, None, current_batch_id=TODAY) == "payment_not_voidable"


def test_void_of_a_sale_only_before_settlement():
    assert model.check_void(Group(root(TxType.SALE)), None, current_batch_id=TODAY)
    settled = Group(root(TxType.SALE, batch=YESTERDAY))
    assert code_of(model.check_void, settled, None, current_batch_id=TODAY) == "payment_settled"


def test_void_of_one_unsettled_capture_restores_capturable():
    auth = root()
    cap = child(auth, TxType.CAPTURE, 4_000)
    group = model.with_entry(Group(auth), cap)
    assert model.check_void(group, cap.id, current_batch_id=TODAY) is cap
    group = model.with_entry(group, child(cap, TxType.VOID, 4_000))
    assert group.captured == 0
    assert group.capturable == 10_000
    assert not group.voided


def test_refunded_payment_cannot_be_voided():
    sale = root(TxType.SALE)
    group = model.with_entry(Group(sale), child(sale, TxType.REFUND, 100))
    assert code_of(model.check_void, group, None, current_batch_id=TODAY) == "payment_not_voidable"


def test_voided_group_accepts_nothing_more():
    auth = root()
    group = model.with_entry(Group(auth), child(auth, TxType.VOID, 10_000))
    assert group.voided
    assert code_of(model.check_capture, group, 1, multi_capture=True) == "payment_already_voided"
    assert code_of(model.check_refund, group, 1) == "payment_already_voided"
    assert code_of(model.check_void, group, None, current_batch_id=TODAY) == "payment_already_voided"


def test_unresolved_void_blocks_everything():
    auth = root()
    group = model.with_entry(Group(auth), child(auth, TxType.VOID, 10_000, TxStatus.UNKNOWN))
    assert code_of(model.check_capture, group, 1, multi_capture=True) == "operation_in_progress"


def test_depth_limit():
    auth = root()
    group = Group(auth)
    deep = Entry(id=uuid.uuid4(), type=TxType.CAPTURE, status=TxStatus.APPROVED, amount=1, depth=10)
    assert model.check_depth(group, 10) == 1
    assert code_of(model.check_depth, group, 10, deep) == "transaction_depth_exceeded"


# --- properties ---------------------------------------------------------------------------------
OUTCOMES = st.sampled_from(
    [TxStatus.APPROVED, TxStatus.DECLINED, TxStatus.PENDING, TxStatus.UNKNOWN, TxStatus.FAILED]
)
OPS = st.lists(
    st.tuples(
        st.sampled_from(["capture", "refund", "void", "void_capture", "resolve"]),
        st.integers(min_value=-5, max_value=12_000),
        OUTCOMES,
    ),
    max_size=40,
)


def _apply(group: Group, op: str, amount: int, outcome: TxStatus) -> Group:
    """Try one operation through the rules; if allowed, add it with the given gateway outcome."""
    try:
        if op == "capture":
            model.check_capture(group, amount, multi_capture=True)
            return model.with_entry(group, child(group.root, TxType.CAPTURE, amount, outcome))
        if op == "refund":
            target = model.check_refund(group, amount)
            return model.with_entry(group, child(target, TxType.REFUND, amount, outcome))
        if op == "void":
            target = model.check_void(group, None, current_batch_id=TODAY)
            return model.with_entry(group, child(target, TxType.VOID, target.amount, outcome))
        if op == "void_capture":
            caps = [c for c in group.captures if c.approved]
            if not caps:
                return group
            target = model.check_void(group, caps[amount % len(caps)].id, current_batch_id=TODAY)
            return model.with_entry(group, child(target, TxType.VOID, target.amount, outcome))
        # resolve: the oldest unresolved follow-on gets its final outcome
        pending = [c for c in group.children if c.unresolved]
        if pending and outcome not in (TxStatus.PENDING, TxStatus.UNKNOWN):
            first = pending[0]
            return model.with_entry(
                group,
                Entry(
                    first.id, first.type, outcome, first.amount, first.parent_id, first.batch_id, first.depth
                ),
            )
        return group
    except PaycoreError:
        return group


@settings(max_examples=400, deadline=None)
@given(root_type=st.sampled_from([TxType.AUTH, TxType.SALE]), amount=st.integers(1, 10_000), ops=OPS)
def test_any_sequence_keeps_the_money_invariants(root_type, amount, ops):
    group = Group(root(root_type, amount))
    voided_at_step: int | None = None
    for step, (op, op_amount, outcome) in enumerate(ops):
        before = group
        group = _apply(group, op, op_amount, outcome)
        # possibly-approved amounts never exceed the limits, counting reservations
        committed_captures = sum(c.amount for c in group.captures if c.counts and not group.is_voided(c.id))
        if group.root.type is TxType.AUTH:
            assert committed_captures <= group.root.amount
        assert group.captured <= group.authorized
        assert group.refunded <= group.captured or group.voided
        assert group.refunded + group.refund_reserved <= max(group.captured, 0) or group.voided
        if voided_at_step is None and group.voided:
            voided_at_step = step
        if voided_at_step is not None and step > voided_at_step and op != "resolve":
            assert group == before, "a voided group accepted an operation"
