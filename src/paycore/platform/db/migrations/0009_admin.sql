-- Admin API (ADR 0010): operator credentials, separate from merchant API keys, and the run-time
-- overrides of the kill switches (RES-11).

CREATE TABLE admin_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE,           -- HMAC-SHA256 with PAYCORE_API_KEY_SECRET
    prefix       text NOT NULL,                   -- shown in listings, never the token
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX idx_admin_tokens_created ON admin_tokens (created_at DESC);

CREATE TABLE feature_flag_overrides (
    flag        text PRIMARY KEY,
    enabled     boolean NOT NULL,
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
