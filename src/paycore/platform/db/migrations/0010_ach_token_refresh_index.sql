-- paycore:no-transaction
-- ACH tokens that lapse: a savings account (no storage code is known for savings) or a checking
-- account whose storage conversion failed keeps its pre-note's Financial BRIC, which expires after
-- 13 months. The `ach.token_refresh` job finds those close to expiry through this index.
DROP INDEX CONCURRENTLY IF EXISTS idx_payment_methods_ach_token_expiry;
CREATE INDEX CONCURRENTLY idx_payment_methods_ach_token_expiry
    ON customer_payment_methods (bric_expires_at)
    WHERE payment_type = 'ach' AND bric_kind = 'financial' AND is_active AND deleted_at IS NULL;
