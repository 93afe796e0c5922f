-- paycore initial schema: merchants, API keys, transactions, idempotency, audit log, outbox.
-- Every timestamp is timestamptz (FIX-1); the database's default zone is UTC (FIX-3).

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'UTC');
END
$$;

CREATE TABLE merchants (
    id                      uuid PRIMARY KEY,
    slug                    text NOT NULL,
    name                    text NOT NULL,
    environment             text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    status                  text NOT NULL DEFAULT 'active'
                                 CHECK (status IN ('active', 'suspended', 'deactivated')),
    -- EPX 4-part merchant key (not secret: epx-protocol.md §1.3)
    epx_cust_nbr            text NOT NULL CHECK (epx_cust_nbr ~ '^[0-9]{1,16}$'),
    epx_merch_nbr           text NOT NULL CHECK (epx_merch_nbr ~ '^[0-9]{1,16}$'),
    epx_dba_nbr             text NOT NULL CHECK (epx_dba_nbr ~ '^[0-9]{1,16}$'),
    epx_terminal_nbr        text NOT NULL CHECK (epx_terminal_nbr ~ '^[0-9]{1,16}$'),
    -- MAC secret, encrypted at rest with a versioned key (never in an API response)
    mac_secret_ciphertext   text,
    mac_secret_key_version  text,
    multi_capture           boolean NOT NULL DEFAULT true,
    timezone                text NOT NULL DEFAULT 'UTC',
    return_urls             text[] NOT NULL DEFAULT '{}',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_merchants_slug UNIQUE (slug),
    CONSTRAINT uq_merchants_epx_key UNIQUE (epx_cust_nbr, epx_merch_nbr, epx_dba_nbr, epx_terminal_nbr)
);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    key_hash        bytea NOT NULL,
    display_prefix  text NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('test', 'live')),
    name            text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    CONSTRAINT uq_api_keys_hash UNIQUE (key_hash)
);
CREATE INDEX idx_api_keys_merchant ON api_keys (merchant_id, created_at DESC);

CREATE TABLE transactions (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    group_id            uuid NOT NULL,
    parent_id           uuid REFERENCES transactions (id),
    depth               smallint NOT NULL DEFAULT 0 CHECK (depth >= 0),
    type                text NOT NULL
                             CHECK (type IN ('sale', 'auth', 'capture', 'void', 'refund', 'storage', 'prenote')),
    payment_type        text NOT NULL CHECK (payment_type IN ('card', 'ach')),
    status              text NOT NULL
                             CHECK (status IN ('pending', 'approved', 'declined', 'failed', 'unknown', 'expired')),
    source              text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'browser_post', 'subscription')),
    amount              bigint NOT NULL CHECK (amount >= 0),
    currency            char(3) NOT NULL,
    tran_nbr            bigint NOT NULL CHECK (tran_nbr BETWEEN 1000000000 AND 9999999999),
    tran_type           text NOT NULL,
    batch_id            text NOT NULL,
    -- the BRIC this transaction acted on (token or original transaction) and its own BRIC
    orig_auth_guid      text,
    auth_guid           text,
    auth_resp           text,
    auth_code           text,
    auth_resp_text      text,
    avs_result          text,
    cvv_result          text,
    card_brand          text,
    card_last4          text,
    ntid                text,
    decline_category    text,
    failure_code        text,
    -- the gateway form body as first sent (never card data): retries resend it byte for byte
    gateway_request     text,
    attempts            smallint NOT NULL DEFAULT 0,
    customer_id         text,
    payment_method_id   uuid,
    subscription_id     uuid,
    description         text,
    metadata            jsonb,
    -- group ledger, maintained on the root row in the outcome transaction
    amount_captured     bigint NOT NULL DEFAULT 0 CHECK (amount_captured >= 0),
    amount_refunded     bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    voided_at           timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,
    CONSTRAINT ck_transactions_not_own_parent CHECK (parent_id IS NULL OR parent_id <> id),
    CONSTRAINT ck_transactions_root_group CHECK ((parent_id IS NULL) = (group_id = id)),
    CONSTRAINT ck_transactions_refund_le_captured CHECK (amount_refunded <= amount_captured),
    CONSTRAINT uq_transactions_merchant_tran_nbr UNIQUE (merchant_id, tran_nbr)
);
-- Payment listings (roots only) with keyset order (created_at DESC, id DESC): no Sort, no OFFSET.
CREATE INDEX idx_transactions_merchant_created
    ON transactions (merchant_id, created_at DESC, id DESC) WHERE parent_id IS NULL;
CREATE INDEX idx_transactions_merchant_status_created
    ON transactions (merchant_id, status, created_at DESC, id DESC) WHERE parent_id IS NULL;
CREATE INDEX idx_transactions_merchant_customer_created
    ON transactions (merchant_id, customer_id, created_at DESC, id DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX idx_transactions_merchant_subscription_created
    ON transactions (merchant_id, subscription_id, created_at DESC) WHERE subscription_id IS NOT NULL;
CREATE INDEX idx_transactions_merchant_payment_method_created
    ON transactions (merchant_id, payment_method_id, created_at DESC) WHERE payment_method_id IS NOT NULL;
CREATE INDEX idx_transactions_type_status_created ON transactions (type, status, created_at DESC);
-- the group (captures, refunds, voids of one payment)
CREATE INDEX idx_transactions_group ON transactions (group_id, created_at);
-- reconciliation sweep: pending/unknown outcomes, oldest first
CREATE INDEX idx_transactions_unresolved
    ON transactions (updated_at) WHERE status IN ('pending', 'unknown');

CREATE TABLE idempotency_keys (
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint     bytea NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    status          text NOT NULL CHECK (status IN ('in_flight', 'completed')),
    response_status integer,
    response_body   bytea,
    resource_id     uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idx_idempotency_keys_expires ON idempotency_keys (expires_at);
CREATE INDEX idx_idempotency_keys_resource ON idempotency_keys (resource_id) WHERE resource_id IS NOT NULL;

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    object_type text,
    object_id   text,
    merchant_id uuid,
    request_id  text,
    ip          text,
    outcome     text NOT NULL CHECK (outcome IN ('success', 'failure')),
    details     jsonb
);
CREATE INDEX idx_audit_log_merchant_time ON audit_log (merchant_id, occurred_at DESC);
CREATE INDEX idx_audit_log_time ON audit_log (occurred_at DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER trg_audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE outbox_events (
    id              uuid PRIMARY KEY,
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    event_type      text NOT NULL,
    aggregate_type  text NOT NULL,
    aggregate_id    uuid NOT NULL,
    payload         jsonb NOT NULL,
    traceparent     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    dispatched_at   timestamptz
);
CREATE INDEX idx_outbox_events_undispatched ON outbox_events (created_at) WHERE dispatched_at IS NULL;
CREATE INDEX idx_outbox_events_merchant_created ON outbox_events (merchant_id, created_at DESC, id DESC);
