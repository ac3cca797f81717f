"""Redis-backed shared state: the client factory, GCRA rate limits and the work cache.

Keys never contain an identifier: subjects and payloads only appear as SHA-256 digests."""

from utimesh.cache.ratelimit import Rate, RateDecision, RateLimiter
from utimesh.cache.redis_client import create_redis
from utimesh.cache.workcache import WorkCache, digest

__all__ = ["Rate", "RateDecision", "RateLimiter", "WorkCache", "create_redis", "digest"]
