"""Evaluation tests: the offline run of the shipped datasets, made once per module where
several tests read it, and the embedded PostgreSQL of the data-layer tests."""

from tests.data.conftest import module_database_url, pg_server, pool

__all__ = ["module_database_url", "pg_server", "pool"]
