"""The data layer: PostgreSQL pools, schema migrations and the hash-chained audit log."""

from utimesh.db.pool import Conn, Pool, connect, create_pool, redact_dsn

__all__ = ["Conn", "Pool", "connect", "create_pool", "redact_dsn"]
