"""Idempotency-Key handling (conventions.md): fingerprints, replay, in-flight and reuse rules."""
