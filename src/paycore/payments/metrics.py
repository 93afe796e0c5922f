"""Business metrics for money operations (MON-1): one call per operation, from a finally path."""

from __future__ import annotations

from paycore.platform.observability import metrics as m


class PaymentMetrics:
    """Records `payment_transactions_total`, `payment_amount_cents_total` and the duration.

    The merchant label is a slug from `PAYCORE_METRICS_MERCHANT_LABELS` or `other` (bounded).
    """

    def __init__(self, labelled_merchants: frozenset[str] = frozenset()) -> None:
        self.labelled = labelled_merchants

    def merchant_label(self, slug: str) -> str:
        return slug if slug in self.labelled else "other"

    def record(
        self,
        *,
        merchant_slug: str,
        payment_type: str,
        transaction_type: str,
        status: str,
        amount: int,
        currency: str,
        duration: float,
        decline_category: str | None = None,
    ) -> None:
        merchant = self.merchant_label(merchant_slug)
        m.PAYMENT_TRANSACTIONS.labels(merchant, payment_type, transaction_type, status).inc()
        m.PAYMENT_AMOUNT_CENTS.labels(merchant, payment_type, transaction_type, status, currency).inc(amount)
        m.PAYMENT_DURATION.labels(payment_type, transaction_type, status).observe(duration)
        if status == "declined":
            m.PAYMENT_DECLINES.labels(payment_type, decline_category or "unknown").inc()
