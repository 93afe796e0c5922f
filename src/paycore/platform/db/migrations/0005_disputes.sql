-- Chargebacks synced from North's dispute reporting (epx-protocol.md §8).

CREATE TABLE disputes (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    case_number         text NOT NULL,
    status              text NOT NULL CHECK (status IN ('new', 'pending', 'responded', 'won', 'lost', 'accepted')),
    gateway_status      text NOT NULL,          -- North's value, raw (unknown values kept here)
    dispute_type        text,
    reason_code         text,
    reason_description  text,
    reason_category     text NOT NULL,
    card_brand          text,
    card_last4          text,
    tran_nbr            bigint,
    transaction_id      uuid REFERENCES transactions (id),
    payment_id          uuid,
    match_status        text NOT NULL CHECK (match_status IN ('matched', 'unmatched', 'mismatch')),
    amount              bigint NOT NULL CHECK (amount >= 0),          -- chargeback amount, minor units
    transaction_amount  bigint CHECK (transaction_amount >= 0),
    currency            char(3) NOT NULL DEFAULT 'USD',
    dispute_date        date,
    chargeback_date     date,
    transaction_date    date,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_disputes_merchant_case UNIQUE (merchant_id, case_number)
);
CREATE INDEX idx_disputes_merchant_created ON disputes (merchant_id, created_at DESC, id DESC);
CREATE INDEX idx_disputes_merchant_status_created ON disputes (merchant_id, status, created_at DESC, id DESC);
CREATE INDEX idx_disputes_merchant_payment ON disputes (merchant_id, payment_id, created_at DESC, id DESC)
    WHERE payment_id IS NOT NULL;

-- Per-merchant sync progress: the first sync reads 90 days, later ones overlapping windows.
CREATE TABLE dispute_sync_state (
    merchant_id         uuid PRIMARY KEY REFERENCES merchants (id),
    last_success_at     timestamptz,
    last_attempt_at     timestamptz,
    last_error          text,
    complete            boolean NOT NULL DEFAULT true
);
