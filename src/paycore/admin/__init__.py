"""The admin API (`/admin/v1`): operator credentials, kill switches, cache eviction, circuit
breakers and heap snapshots — authenticated with admin tokens and audit-logged (ADR 0010)."""
