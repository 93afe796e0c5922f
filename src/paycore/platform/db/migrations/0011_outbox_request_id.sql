-- LOG-2: the X-Request-ID of the API request whose transaction wrote the event, sent back as
-- `X-Request-ID` on every delivery attempt of it. NULL for events written by jobs (no request).
-- A nullable column without a default: a catalog-only change, no table rewrite.
ALTER TABLE outbox_events ADD COLUMN request_id text;
