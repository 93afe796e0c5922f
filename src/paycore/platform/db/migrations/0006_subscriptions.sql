-- Subscriptions: recurring charges of a saved payment method on a calendar schedule, and every
-- charge attempt of every period (docs/subscriptions.md). Timestamps are timestamptz (UTC).

CREATE TABLE subscriptions (
    id                          uuid PRIMARY KEY,
    merchant_id                 uuid NOT NULL REFERENCES merchants (id),
    customer_id                 text NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 64),
    -- no foreign key: saved payment methods are soft-deleted, then purged after retention, while a
    -- canceled subscription keeps the id for its history
    payment_method_id           uuid NOT NULL,
    status                      text NOT NULL CHECK (status IN ('active', 'paused', 'past_due', 'canceled')),
    amount                      bigint NOT NULL CHECK (amount > 0),
    currency                    char(3) NOT NULL,
    interval_unit               text NOT NULL CHECK (interval_unit IN ('day', 'week', 'month', 'year')),
    interval_count              smallint NOT NULL CHECK (interval_count >= 1),
    start_at                    timestamptz NOT NULL,
    -- the schedule: period n is billed at anchor_at + (n - anchor_index) intervals, clamped at month
    -- ends from the anchor (subscriptions/calendar.py); an interval change re-anchors at the
    -- boundary where it takes effect
    anchor_at                   timestamptz NOT NULL,
    anchor_index                integer NOT NULL DEFAULT 0 CHECK (anchor_index >= 0),
    -- the period billed next and when: its billing date, or a dunning retry
    period_index                integer NOT NULL DEFAULT 0 CHECK (period_index >= 0),
    next_billing_at             timestamptz NOT NULL,
    -- a billing run's claim: the row is not claimed again before this (a dead runner's lapses)
    locked_until                timestamptz,
    -- the last paid period
    current_period_start        timestamptz,
    current_period_end          timestamptz,
    -- declines of the period being billed, and when the first of them happened (dunning)
    dunning_attempts            smallint NOT NULL DEFAULT 0 CHECK (dunning_attempts >= 0),
    dunning_started_at          timestamptz,
    -- the first approved charge: ORIG_AUTH_AMOUNT of the later merchant-initiated charges
    initial_amount              bigint CHECK (initial_amount > 0),
    cancel_at_period_end        boolean NOT NULL DEFAULT false,
    canceled_at                 timestamptz,
    cancellation_reason         text,
    paused_at                   timestamptz,
    -- changes that take effect at the next period
    pending_amount              bigint CHECK (pending_amount > 0),
    pending_interval_unit       text CHECK (pending_interval_unit IN ('day', 'week', 'month', 'year')),
    pending_interval_count      smallint CHECK (pending_interval_count >= 1),
    pending_payment_method_id   uuid,
    description                 text,
    metadata                    jsonb,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ck_subscriptions_pending_interval
        CHECK ((pending_interval_unit IS NULL) = (pending_interval_count IS NULL)),
    CONSTRAINT ck_subscriptions_canceled CHECK ((status = 'canceled') = (canceled_at IS NOT NULL))
);
-- the billing run's claim: due active subscriptions, oldest first (FOR UPDATE SKIP LOCKED)
CREATE INDEX idx_subscriptions_due ON subscriptions (next_billing_at) WHERE status = 'active';
-- the subscriptions of a payment method (roadmap index)
CREATE INDEX idx_subscriptions_payment_method ON subscriptions (payment_method_id, status);
-- listings, keyset order (created_at DESC, id DESC), with each filter
CREATE INDEX idx_subscriptions_merchant_created ON subscriptions (merchant_id, created_at DESC, id DESC);
CREATE INDEX idx_subscriptions_merchant_status_created
    ON subscriptions (merchant_id, status, created_at DESC, id DESC);
CREATE INDEX idx_subscriptions_merchant_customer_created
    ON subscriptions (merchant_id, customer_id, created_at DESC, id DESC);
CREATE INDEX idx_subscriptions_merchant_payment_method_created
    ON subscriptions (merchant_id, payment_method_id, created_at DESC, id DESC);

-- One row per charge attempt of a period: the first try and every dunning retry.
CREATE TABLE subscription_charges (
    id                  uuid PRIMARY KEY,
    subscription_id     uuid NOT NULL REFERENCES subscriptions (id),
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    period_index        integer NOT NULL CHECK (period_index >= 0),
    period_start        timestamptz NOT NULL,
    period_end          timestamptz NOT NULL,
    attempt             smallint NOT NULL CHECK (attempt >= 1),
    status              text NOT NULL CHECK (status IN ('pending', 'approved', 'declined', 'failed')),
    amount              bigint NOT NULL CHECK (amount > 0),
    currency            char(3) NOT NULL,
    payment_method_id   uuid NOT NULL,
    -- the `transactions` row of this attempt (source 'subscription'). Chosen when the attempt is
    -- claimed, before the payment exists; NULL when the attempt never reached the gateway
    transaction_id      uuid,
    -- the attempt's internal Idempotency-Key (a space: no API key can take it)
    idempotency_key     text NOT NULL,
    decline_category    text,
    gateway_code        text,
    failure_code        text,
    -- a declined attempt: when the next one is due (NULL: none, the subscription went past_due)
    next_retry_at       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,
    CONSTRAINT ck_subscription_charges_period CHECK (period_end > period_start),
    CONSTRAINT uq_subscription_charges_attempt UNIQUE (subscription_id, period_index, attempt),
    CONSTRAINT uq_subscription_charges_transaction UNIQUE (transaction_id)
);
-- Two charges for one period are impossible: at most one attempt of a period is in flight or
-- approved. A new attempt can exist only after the previous one was declined or failed.
CREATE UNIQUE INDEX uq_subscription_charges_one_live_per_period
    ON subscription_charges (subscription_id, period_index) WHERE status IN ('pending', 'approved');
