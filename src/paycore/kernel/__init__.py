"""Shared, pure domain vocabulary: money, ids, errors, clock."""
