-- Service-to-service authentication (conventions.md "Authentication and tenancy"): client services
-- sign RS256 JWTs with their own key; `iss` selects the client and its one public key, the
-- `merchant_id` claim must be covered by an active grant, and a leaked token is revoked by `jti`.
-- New, empty tables: one transaction, no CONCURRENTLY needed.

CREATE TABLE service_clients (
    id              uuid PRIMARY KEY,
    issuer          text NOT NULL CHECK (char_length(issuer) BETWEEN 1 AND 255),
    name            text NOT NULL DEFAULT '',
    public_key_pem  text NOT NULL,                 -- RSA >= 2048 bits, SubjectPublicKeyInfo PEM
    key_fingerprint text NOT NULL,                 -- sha256 of the DER key, shown in listings
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    CONSTRAINT ck_service_clients_revoked CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    -- an issuer is never reused, not even after revocation (its old tokens must stay dead)
    CONSTRAINT uq_service_clients_issuer UNIQUE (issuer)
);

CREATE TABLE service_grants (
    id          uuid PRIMARY KEY,
    client_id   uuid NOT NULL REFERENCES service_clients (id),
    merchant_id uuid NOT NULL REFERENCES merchants (id),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT ck_service_grants_revoked CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
-- one active grant per client and merchant; serves the authentication lookup and revoke-grant
CREATE UNIQUE INDEX uq_service_grants_active ON service_grants (client_id, merchant_id)
    WHERE status = 'active';
-- listings by client (and the unfiltered listing, ordered by client) and by merchant
CREATE INDEX idx_service_grants_client ON service_grants (client_id, created_at DESC);
CREATE INDEX idx_service_grants_merchant ON service_grants (merchant_id, created_at DESC);

CREATE TABLE revoked_jtis (
    client_id   uuid NOT NULL REFERENCES service_clients (id),
    jti         text NOT NULL CHECK (char_length(jti) BETWEEN 1 AND 255),
    -- the token's own `exp`: after it (plus the leeway) the row is useless and may be purged
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, jti)
);
-- the in-memory list of live revocations (expires_at > now) and the retention purge
CREATE INDEX idx_revoked_jtis_expires ON revoked_jtis (expires_at) INCLUDE (client_id, jti);
