"""Real embedded PostgreSQL and Redis for the job-queue tests (the data and Redis fixtures)."""

from tests.data.conftest import fresh_migrated_url, fresh_url, open_pool, pg_server
from tests.redis.conftest import redis, redis_url

__all__ = ["fresh_migrated_url", "fresh_url", "open_pool", "pg_server", "redis", "redis_url"]
