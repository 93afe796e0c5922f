"""The rules that decide money, pure: the transaction group and what it may still accept.

A payment is a *group*: its root (a sale or an authorization) and the follow-on transactions
(captures, refunds, voids) under it. Amounts are integer minor units. Follow-ons that are still
`pending` or `unknown` at the gateway *reserve* their amount, so two concurrent requests can never
together exceed a limit, and a group with an unresolved void accepts nothing more.

Invariants (property-tested): captured ≤ authorized, refunded ≤ captured, and a voided group
accepts nothing more.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from paycore.kernel import errors
from paycore.kernel.errors import PaycoreError


class TxType(enum.StrEnum):
    SALE = "sale"
    AUTH = "auth"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


class TxStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED = "failed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"


UNRESOLVED = frozenset({TxStatus.PENDING, TxStatus.UNKNOWN})
ROOT_TYPES = frozenset({TxType.SALE, TxType.AUTH})


@dataclass(frozen=True, slots=True)
class Entry:
    """One transaction of a group as the rules see it."""

    id: uuid.UUID
    type: TxType
    status: TxStatus
    amount: int
    parent_id: uuid.UUID | None = None
    batch_id: str = ""
    depth: int = 0

    @property
    def approved(self) -> bool:
        return self.status is TxStatus.APPROVED

    @property
    def unresolved(self) -> bool:
        return self.status in UNRESOLVED

    @property
    def counts(self) -> bool:
        """Approved or possibly approved: it binds money until proven otherwise."""
        return self.status is TxStatus.APPROVED or self.status in UNRESOLVED


@dataclass(frozen=True, slots=True)
class Group:
    """A payment's root and every follow-on under it, in creation order."""

    root: Entry
    children: tuple[Entry, ...] = field(default=())

    # -- derived ledger ---------------------------------------------------------------------------
    def _voids_of(self, target: uuid.UUID) -> list[Entry]:
        return [c for c in self.children if c.type is TxType.VOID and c.parent_id == target]

    def is_voided(self, target: uuid.UUID) -> bool:
        return any(v.approved for v in self._voids_of(target))

    def void_unresolved(self, target: uuid.UUID) -> bool:
        return any(v.unresolved for v in self._voids_of(target))

    @property
    def voided(self) -> bool:
        return self.is_voided(self.root.id)

    @property
    def captures(self) -> list[Entry]:
        return [c for c in self.children if c.type is TxType.CAPTURE]

    @property
    def refunds(self) -> list[Entry]:
        return [c for c in self.children if c.type is TxType.REFUND]

    @property
    def authorized(self) -> int:
        """What the root authorized (0 unless approved and not voided)."""
        if not self.root.approved or self.voided:
            return 0
        return self.root.amount

    @property
    def captured(self) -> int:
        """Money captured for good: the sale, or the approved, un-voided captures."""
        if not self.root.approved or self.voided:
            return 0
        if self.root.type is TxType.SALE:
            return self.root.amount
        return sum(c.amount for c in self.captures if c.approved and not self.is_voided(c.id))

    @property
    def capture_reserved(self) -> int:
        return sum(c.amount for c in self.captures if c.unresolved)

    @property
    def refunded(self) -> int:
        return sum(r.amount for r in self.refunds if r.approved)

    @property
    def refund_reserved(self) -> int:
        return sum(r.amount for r in self.refunds if r.unresolved)

    @property
    def capturable(self) -> int:
        if self.root.type is not TxType.AUTH or not self.root.approved or self.voided:
            return 0
        if self.void_unresolved(self.root.id):
            return 0
        return max(self.authorized - self.captured - self.capture_reserved, 0)

    @property
    def refundable(self) -> int:
        if self.voided or self.void_unresolved(self.root.id):
            return 0
        return max(self.captured - self.refunded - self.refund_reserved, 0)

    @property
    def depth_of_next(self) -> int:
        return self.root.depth + 1

    def latest_capture(self) -> Entry | None:
        live = [c for c in self.captures if c.approved and not self.is_voided(c.id)]
        return live[-1] if live else None

    def find(self, entry_id: uuid.UUID) -> Entry | None:
        if entry_id == self.root.id:
            return self.root
        return next((c for c in self.children if c.id == entry_id), None)


# -- rules ------------------------------------------------------------------------------------------
def _require_live_root(group: Group, action: str, not_allowed: errors.ProblemSpec) -> None:
    root = group.root
    if root.unresolved:
        raise PaycoreError(
            errors.PAYMENT_OUTCOME_UNKNOWN,
            f"The payment's outcome is not known yet; it cannot be {action} until it is reconciled",
        )
    if not root.approved:
        raise PaycoreError(not_allowed, f"A {root.status.value} payment cannot be {action}")
    if group.voided:
        raise PaycoreError(errors.PAYMENT_ALREADY_VOIDED, f"A voided payment cannot be {action}")
    if group.void_unresolved(root.id):
        raise PaycoreError(errors.OPERATION_IN_PROGRESS, "A void of this payment is still unresolved")


def _require_positive(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise PaycoreError(errors.AMOUNT_INVALID, "amount must be a positive integer", param="amount")


def check_capture(group: Group, amount: int, *, multi_capture: bool) -> None:
    """Raise unless `amount` may be captured now."""
    _require_positive(amount)
    if group.root.type is not TxType.AUTH:
        raise PaycoreError(errors.PAYMENT_NOT_CAPTURABLE, "Only an authorization can be captured")
    _require_live_root(group, "captured", errors.PAYMENT_NOT_CAPTURABLE)
    if not multi_capture and any(c.counts for c in group.captures):
        raise PaycoreError(errors.MULTI_CAPTURE_DISABLED, param="amount")
    if amount > group.capturable:
        raise PaycoreError(
            errors.AMOUNT_EXCEEDS_CAPTURABLE,
            f"amount {amount} exceeds the capturable {group.capturable}",
            param="amount",
            extra={"amount_capturable": group.capturable},
        )


def check_refund(group: Group, amount: int) -> Entry:
    """Raise unless `amount` may be refunded now; returns the transaction to refund against."""
    _require_positive(amount)
    _require_live_root(group, "refunded", errors.PAYMENT_NOT_REFUNDABLE)
    if any(c.type is TxType.VOID and c.unresolved for c in group.children):
        # A capture whose void may yet be approved is not money to refund from.
        raise PaycoreError(errors.OPERATION_IN_PROGRESS, "A void of a capture is still unresolved")
    target = group.root if group.root.type is TxType.SALE else group.latest_capture()
    if target is None or group.captured == 0:
        raise PaycoreError(errors.PAYMENT_NOT_REFUNDABLE, "Nothing has been captured yet")
    if amount > group.refundable:
        raise PaycoreError(
            errors.AMOUNT_EXCEEDS_REFUNDABLE,
            f"amount {amount} exceeds the refundable {group.refundable}",
            param="amount",
            extra={"amount_refundable": group.refundable},
        )
    return target


def check_void(group: Group, target_id: uuid.UUID | None, *, current_batch_id: str) -> Entry:
    """Raise unless the target (the root by default, or one capture) may be voided now.

    A void is in full: an authorization with nothing captured, or a sale or capture whose batch
    has not settled (a batch settles when its business day ends); with any refund it is refused.
    """
    _require_live_root(group, "voided", errors.PAYMENT_NOT_VOIDABLE)
    target = group.root if target_id is None else group.find(target_id)
    if target is None or target.type not in {TxType.SALE, TxType.AUTH, TxType.CAPTURE}:
        raise PaycoreError(
            errors.PAYMENT_NOT_VOIDABLE, "Only the payment or one of its captures can be voided"
        )
    if target.unresolved:
        raise PaycoreError(errors.OPERATION_IN_PROGRESS, "That capture is still waiting for the gateway")
    if not target.approved:
        raise PaycoreError(errors.PAYMENT_NOT_VOIDABLE, f"A {target.status.value} capture cannot be voided")
    if group.is_voided(target.id):
        raise PaycoreError(errors.PAYMENT_ALREADY_VOIDED, "Already voided")
    if group.void_unresolved(target.id):
        raise PaycoreError(errors.OPERATION_IN_PROGRESS, "A void of this transaction is still unresolved")
    if any(r.counts for r in group.refunds):
        raise PaycoreError(errors.PAYMENT_NOT_VOIDABLE, "A payment with refunds cannot be voided")
    if target.type is TxType.AUTH:
        if any(c.counts for c in group.captures):
            raise PaycoreError(
                errors.PAYMENT_NOT_VOIDABLE,
                "The authorization has captures: void the captures or refund instead",
            )
    elif target.batch_id and target.batch_id < current_batch_id:
        raise PaycoreError(errors.PAYMENT_SETTLED)
    return target


def check_depth(group: Group, max_depth: int, parent: Entry | None = None) -> int:
    depth = (parent.depth if parent is not None else group.root.depth) + 1
    if depth > max_depth:
        raise PaycoreError(errors.TRANSACTION_DEPTH_EXCEEDED, f"depth {depth} exceeds {max_depth}")
    return depth


def build_group(root: Entry, children: Iterable[Entry]) -> Group:
    return Group(root=root, children=tuple(children))


def with_entry(group: Group, entry: Entry) -> Group:
    """The group after adding or replacing one follow-on (for pure simulations and tests)."""
    if entry.id == group.root.id:
        return Group(root=entry, children=group.children)
    kept = tuple(c for c in group.children if c.id != entry.id)
    if len(kept) == len(group.children):
        return Group(root=group.root, children=(*group.children, entry))
    return Group(root=group.root, children=tuple(entry if c.id == entry.id else c for c in group.children))
