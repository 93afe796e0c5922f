"""Shared infrastructure: database, resilience, observability, shutdown, task tracking."""
