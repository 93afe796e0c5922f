"""Deadlines, retries with backoff and jitter, circuit breakers."""
