"""Reuse the embedded PostgreSQL fixtures of the data-layer tests."""

from tests.data.conftest import module_database_url, open_pool, pg_server

__all__ = ["module_database_url", "open_pool", "pg_server"]
