"""PostgreSQL access: the pool, named queries with timeout tiers, transactions, migrations."""

from paycore.platform.db.database import (
    Connection,
    Database,
    DatabaseUnavailable,
    PoolExhausted,
    Query,
    QueryTimeout,
    Tier,
)

__all__ = [
    "Connection",
    "Database",
    "DatabaseUnavailable",
    "PoolExhausted",
    "Query",
    "QueryTimeout",
    "Tier",
]
