"""One `redis.asyncio.Redis` client per process, tuned for an optional, fail-soft dependency:
short socket timeouts and a single quick retry, so a down Redis costs a call milliseconds (the
rate limiter then fails open and the work cache is bypassed) rather than seconds."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 0.25


def redact_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def create_redis(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> aioredis.Redis:
    """A client for `url` (redis:// or rediss://). Connecting is lazy: nothing fails here when
    Redis is down. The caller closes it (`await client.aclose()`)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        client_name="utimesh",
    )
