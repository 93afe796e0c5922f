-- The background-job queue (ADR 0004) and outbound webhooks (conventions.md, RES-4, RES-5).

-- Jobs enqueued on demand, in the transaction of the change that causes them.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'succeeded', 'dead')),
    run_at          timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    dedupe_key      text,
    traceparent     text,
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT ck_jobs_lease CHECK ((status = 'running') = (locked_until IS NOT NULL))
);
-- claims: due queued jobs, oldest first
CREATE INDEX idx_jobs_due ON jobs (run_at) WHERE status = 'queued';
-- lease reaper: running jobs whose worker stopped renewing
CREATE INDEX idx_jobs_running_lease ON jobs (locked_until) WHERE status = 'running';
-- one pending job per (name, dedupe_key)
CREATE UNIQUE INDEX uq_jobs_dedupe ON jobs (name, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running');
-- retention of finished jobs
CREATE INDEX idx_jobs_finished ON jobs (finished_at) WHERE status IN ('succeeded', 'dead');

-- Periodic jobs: one row per scheduled job, claimed by one worker at a time.
CREATE TABLE job_schedules (
    name            text PRIMARY KEY,
    every_seconds   double precision NOT NULL CHECK (every_seconds > 0),
    next_run_at     timestamptz NOT NULL,
    scheduled_for   timestamptz,
    locked_by       text,
    locked_until    timestamptz,
    last_started_at timestamptz,
    last_finished_at timestamptz,
    last_status     text,
    last_error      text,
    runs            bigint NOT NULL DEFAULT 0
);

-- Webhook endpoints: a merchant's receivers and their signing secrets (encrypted at rest).
CREATE TABLE webhook_endpoints (
    id                          uuid PRIMARY KEY,
    merchant_id                 uuid NOT NULL REFERENCES merchants (id),
    url                         text NOT NULL,
    description                 text,
    event_types                 text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    status                      text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason             text,
    metadata                    jsonb,
    secret_ciphertext           text NOT NULL,
    secret_key_version          text NOT NULL,
    -- the secret before the last rotation, still signed with until it expires
    previous_secret_ciphertext  text,
    previous_secret_key_version text,
    previous_secret_expires_at  timestamptz,
    consecutive_failures        integer NOT NULL DEFAULT 0,
    failing_since               timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz
);
CREATE INDEX idx_webhook_endpoints_merchant_created
    ON webhook_endpoints (merchant_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
-- encryption-key rotation sweep
CREATE INDEX idx_webhook_endpoints_key_version ON webhook_endpoints (secret_key_version);

-- Event listings by type (the outbox already has (merchant_id, created_at DESC, id DESC)).
CREATE INDEX idx_outbox_events_merchant_type_created
    ON outbox_events (merchant_id, event_type, created_at DESC, id DESC);
-- retention of old events
CREATE INDEX idx_outbox_events_created ON outbox_events (created_at);

-- One delivery per (event, endpoint): the same row is updated per attempt (RES-4).
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    merchant_id     uuid NOT NULL,
    event_type      text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    claim_token     uuid,
    locked_until    timestamptz,
    last_status_code integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT uq_webhook_deliveries_event_endpoint UNIQUE (event_id, endpoint_id)
);
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX idx_webhook_deliveries_lease ON webhook_deliveries (locked_until) WHERE status = 'delivering';
CREATE INDEX idx_webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, status);

-- The delivery log: one row per HTTP attempt.
CREATE TABLE webhook_delivery_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    outcome         text NOT NULL,
    status_code     integer,
    duration_ms     integer NOT NULL,
    error           text
);
CREATE INDEX idx_webhook_delivery_attempts_delivery ON webhook_delivery_attempts (delivery_id, id);
