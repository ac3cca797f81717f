"""A Redis cache for repeated, identical, deterministic work (triage assessments, evidence
groundings). Keys are `{namespace}:{sha256 of the request bytes}`: requests may hold clinical
free text, so they only ever appear hashed. Values are serialized responses with a TTL.

The cache is an optimisation only: any Redis failure bypasses it (a miss on read, a no-op on
write) with a throttled warning, so a consultation never fails because of the cache."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "wc"
KEY_VERSION = "v1"  # bump when a cached value's encoding changes


def digest(*parts: bytes) -> str:
    """SHA-256 over length-prefixed parts (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


class WorkCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        *,
        ttl_s: float = 600.0,
        warn_every_s: float = 60.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._redis = redis
        self.namespace = namespace
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._warn_every_s = warn_every_s
        self._last_warning: float | None = None

    def key(self, *parts: bytes) -> str:
        return f"{KEY_PREFIX}:{KEY_VERSION}:{self.namespace}:{digest(*parts)}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            self._warn("read", exc)
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._redis.set(key, value, px=self.ttl_ms)
        except (RedisError, OSError) as exc:
            self._warn("write", exc)

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[bytes]],
    ) -> tuple[bytes, bool]:
        """The cached value of `key`, or `compute()` stored under it; and whether it was a hit.
        Errors of `compute` propagate and nothing is stored."""
        cached = await self.get(key)
        if cached is not None:
            return cached, True
        value = await compute()
        await self.put(key, value)
        return value, False

    def _warn(self, op: str, exc: Exception) -> None:
        now = time.monotonic()
        if self._last_warning is not None and now - self._last_warning < self._warn_every_s:
            return
        self._last_warning = now
        log.warning(
            "work cache %s: Redis %s failed (%s); bypassing the cache",
            self.namespace,
            op,
            type(exc).__name__,
        )
