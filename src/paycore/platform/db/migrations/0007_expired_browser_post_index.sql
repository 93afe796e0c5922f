-- paycore:no-transaction
-- Reconciliation looks up, once, each hosted-checkout payment that expired without its callback
-- (a lost shopper redirect may hide a payment). Built without blocking writes to transactions; a
-- half-built (invalid) index left by an interrupted run is dropped first.
DROP INDEX CONCURRENTLY IF EXISTS idx_transactions_expired_browser_post;
CREATE INDEX CONCURRENTLY idx_transactions_expired_browser_post
    ON transactions (updated_at)
    WHERE status = 'expired' AND failure_code = 'checkout_expired';
