"""Reuse the embedded PostgreSQL fixtures of the data-layer tests."""

from tests.data.conftest import module_database_url, pg_server, pool

__all__ = ["module_database_url", "pg_server", "pool"]
