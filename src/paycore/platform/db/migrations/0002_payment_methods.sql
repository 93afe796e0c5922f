-- Saved payment methods (cards and bank accounts) and the ACH returns ingested for them.
-- Never a card number, a CVV or a bank account number: tokens, last 4 digits and expiry only
-- (conventions.md, PCI DSS 3.3.1 / 3.4.1, NACHA).

CREATE TABLE customer_payment_methods (
    id                          uuid PRIMARY KEY,
    merchant_id                 uuid NOT NULL REFERENCES merchants (id),
    customer_id                 text NOT NULL CHECK (char_length(customer_id) BETWEEN 1 AND 64),
    payment_type                text NOT NULL CHECK (payment_type IN ('card', 'ach')),
    -- the gateway token: a Storage BRIC, or (savings accounts, failed CKC8) the pre-note's
    -- Financial BRIC, which expires after 13 months
    bric                        text NOT NULL CHECK (bric ~ '^[A-Za-z0-9]{1,40}$'),
    bric_kind                   text NOT NULL CHECK (bric_kind IN ('storage', 'financial')),
    bric_expires_at             timestamptz,
    is_default                  boolean NOT NULL DEFAULT false,
    is_active                   boolean NOT NULL DEFAULT true,
    verification_status         text NOT NULL CHECK (verification_status IN ('pending', 'verified', 'failed')),
    -- card
    card_brand                  text,
    card_last4                  text CHECK (card_last4 ~ '^[0-9]{4}$'),
    exp_month                   smallint CHECK (exp_month BETWEEN 1 AND 12),
    exp_year                    smallint CHECK (exp_year BETWEEN 2000 AND 2199),
    ntid                        text,
    -- bank account (the account number itself is never stored)
    account_type                text CHECK (account_type IN ('checking', 'savings')),
    account_last4               text CHECK (account_last4 ~ '^[0-9]{4}$'),
    routing_number              text CHECK (routing_number ~ '^[0-9]{9}$'),
    holder_name                 text,
    sec_code                    text CHECK (sec_code IN ('PPD', 'CCD', 'WEB', 'TEL')),
    prenote_transaction_id      uuid REFERENCES transactions (id),
    verified_at                 timestamptz,
    verification_failed_at      timestamptz,
    verification_failure_code   text,
    return_count                integer NOT NULL DEFAULT 0 CHECK (return_count >= 0),
    deactivation_reason         text,
    billing                     jsonb,
    metadata                    jsonb,
    last_used_at                timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    CONSTRAINT ck_payment_methods_card CHECK (
        payment_type <> 'card' OR (account_type IS NULL AND account_last4 IS NULL AND routing_number IS NULL)),
    CONSTRAINT ck_payment_methods_ach CHECK (
        payment_type <> 'ach' OR (account_type IS NOT NULL AND account_last4 IS NOT NULL
                                  AND routing_number IS NOT NULL AND card_last4 IS NULL)),
    -- a deleted method is never the default
    CONSTRAINT ck_payment_methods_deleted_not_default CHECK (deleted_at IS NULL OR NOT is_default),
    -- At most one default per customer. An exclusion constraint rather than a unique index: a
    -- non-deferrable unique index is checked row by row, so the single statement that moves the
    -- default (`SET is_default = (id = $target)`) could trip over the old default depending on the
    -- scan order. DEFERRABLE INITIALLY IMMEDIATE checks it at the end of the statement (the SQL
    -- standard's semantics); it is still enforced by an index of this name.
    CONSTRAINT uq_payment_methods_one_default EXCLUDE USING btree (merchant_id WITH =, customer_id WITH =)
        WHERE (is_default AND deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE
);

-- CRITICAL-2: the ACH verification sweep. Partial and covering: the sweep's query repeats these
-- three predicates verbatim and selects only the covered columns (an Index Only Scan).
CREATE INDEX idx_payment_methods_ach_verification
    ON customer_payment_methods (payment_type, verification_status, created_at)
    INCLUDE (id, merchant_id, customer_id)
    WHERE payment_type = 'ach' AND verification_status = 'pending' AND deleted_at IS NULL;
-- ACH return matching: the method whose pre-note was returned
CREATE INDEX idx_payment_methods_prenote_transaction
    ON customer_payment_methods (prenote_transaction_id)
    WHERE prenote_transaction_id IS NOT NULL AND deleted_at IS NULL;
-- a customer's methods, default first then newest (no Sort)
CREATE INDEX idx_payment_methods_customer_sorted
    ON customer_payment_methods (merchant_id, customer_id, is_default DESC, created_at DESC)
    WHERE deleted_at IS NULL;
-- the customer's default, usable method
CREATE INDEX idx_payment_methods_default_active
    ON customer_payment_methods (merchant_id, customer_id, is_default, is_active)
    WHERE is_default AND is_active AND deleted_at IS NULL;
-- the retention purge: soft-deleted methods, oldest first
CREATE INDEX idx_payment_methods_deleted
    ON customer_payment_methods (deleted_at) WHERE deleted_at IS NOT NULL;

-- ACH returns and notifications of change as read from the gateway's returns report, one row per
-- (merchant, entry, code): ingestion is idempotent. No account numbers (a NOC's corrected data is
-- not kept).
CREATE TABLE ach_returns (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    tran_nbr            bigint NOT NULL,
    code                text NOT NULL CHECK (code ~ '^[RC][0-9]{2}$'),
    kind                text NOT NULL CHECK (kind IN ('return', 'noc')),
    return_class        text CHECK (return_class IN ('unauthorized', 'administrative', 'other')),
    entry               text NOT NULL CHECK (entry IN ('prenote', 'debit', 'credit', 'unknown')),
    transaction_id      uuid REFERENCES transactions (id),
    payment_method_id   uuid REFERENCES customer_payment_methods (id) ON DELETE SET NULL,
    action              text NOT NULL,
    return_date         date NOT NULL,
    amount              bigint CHECK (amount >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_ach_returns_entry_code UNIQUE (merchant_id, tran_nbr, code)
);
-- return-rate windows per merchant
CREATE INDEX idx_ach_returns_merchant_date ON ach_returns (merchant_id, return_date);
CREATE INDEX idx_ach_returns_payment_method ON ach_returns (payment_method_id)
    WHERE payment_method_id IS NOT NULL;
