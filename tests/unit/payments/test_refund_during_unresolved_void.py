"""Money safety (design.md §5): no refund while a void of a capture is unresolved.

Found by the property test `test_any_sequence_keeps_the_money_invariants`: authorization →
capture (approved) → void of the capture (outcome unknown) → a refund was accepted against that
capture; once the void turned out approved, 100 was refunded of nothing captured."""

from __future__ import annotations

import uuid

import pytest

from paycore.kernel.errors import PaycoreError
from paycore.payments import model
from paycore.payments.model import Entry, Group, TxStatus, TxType

pytestmark = pytest.mark.unit

TODAY = "20261127"


def entry(type_: TxType, amount: int, parent: Entry | None, status: TxStatus = TxStatus.APPROVED) -> Entry:
    depth = 0 if parent is None else parent.depth + 1
    return Entry(uuid.uuid4(), type_, status, amount, parent.id if parent else None, TODAY, depth)


@pytest.mark.parametrize("void_status", [TxStatus.PENDING, TxStatus.UNKNOWN])
def test_refund_refused_while_a_capture_void_is_unresolved(void_status: TxStatus) -> None:
    auth = entry(TxType.AUTH, 100, None)
    capture = entry(TxType.CAPTURE, 100, auth)
    group = model.with_entry(Group(auth), capture)
    model.check_void(group, capture.id, current_batch_id=TODAY)
    void = entry(TxType.VOID, 100, capture, void_status)
    group = model.with_entry(group, void)

    with pytest.raises(PaycoreError) as info:
        model.check_refund(group, 100)
    assert info.value.spec.code == "operation_in_progress"

    # the void resolved: approved → nothing left to refund; declined → the capture is refundable
    approved = model.with_entry(
        group, Entry(void.id, TxType.VOID, TxStatus.APPROVED, 100, capture.id, TODAY, 2)
    )
    with pytest.raises(PaycoreError):
        model.check_refund(approved, 100)
    declined = model.with_entry(
        group, Entry(void.id, TxType.VOID, TxStatus.DECLINED, 100, capture.id, TODAY, 2)
    )
    assert model.check_refund(declined, 100).id == capture.id


def test_refund_of_a_capture_without_a_void_is_allowed() -> None:
    auth = entry(TxType.AUTH, 100, None)
    capture = entry(TxType.CAPTURE, 60, auth)
    group = model.with_entry(Group(auth), capture)
    assert model.check_refund(group, 60).id == capture.id
