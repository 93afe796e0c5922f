-- Hosted checkout (EPX Browser Post): one session per pending Browser Post transaction.
-- The payment itself is a `transactions` row (source 'browser_post', status 'pending' until the
-- callback, 'expired' after its last TAC's 15 minutes plus a 10-minute grace period).

CREATE TABLE checkout_sessions (
    id                  uuid PRIMARY KEY,
    merchant_id         uuid NOT NULL REFERENCES merchants (id),
    transaction_id      uuid NOT NULL REFERENCES transactions (id),
    mode                text NOT NULL CHECK (mode IN ('sale', 'auth', 'save')),
    -- allow-listed copies of the merchant's registered return URLs, chosen at creation
    return_url          text NOT NULL CHECK (char_length(return_url) <= 2048),
    decline_url         text NOT NULL CHECK (char_length(decline_url) <= 2048),
    state               text NOT NULL DEFAULT 'open'
                             CHECK (state IN ('open', 'completed', 'expired', 'failed')),
    -- expiry of the last TAC issued, and of the session (last TAC + grace)
    tac_expires_at      timestamptz,
    expires_at          timestamptz NOT NULL,
    tacs_issued         integer NOT NULL DEFAULT 0 CHECK (tacs_issued >= 0),
    -- the applied callback: its content digest (replays), the outcome and where the shopper went
    callback_digest     bytea,
    result_status       text,
    payment_method_id   uuid,
    completed_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_checkout_sessions_transaction UNIQUE (transaction_id)
);
-- a merchant's sessions, newest first
CREATE INDEX idx_checkout_sessions_merchant_created
    ON checkout_sessions (merchant_id, created_at DESC, id DESC);
-- the expiry sweep: open sessions by due time
CREATE INDEX idx_checkout_sessions_open_expiry
    ON checkout_sessions (expires_at) WHERE state = 'open';
