"""GCRA rate limits in Redis: one atomic Lua script, keyed by endpoint and a digest of the
caller's subject (`rl:{endpoint}:{sha256(sub)[:32]}`), never the raw subject.

GCRA (the generic cell rate algorithm) keeps one number per key, the theoretical arrival time
(TAT) of the next request. A rate of `limit` per `period_s` spaces requests by the emission
interval T = period_s / limit; `burst` requests may arrive at once. A request at `now` is allowed
when `max(TAT, now) + T - burst * T <= now`, and then TAT becomes `max(TAT, now) + T`; otherwise
the caller may retry after the difference. Time comes from Redis (`TIME`), so every replica of a
service agrees on it whatever their clocks.

Availability choice: when Redis cannot be reached the limiter FAILS OPEN (the call is allowed,
a warning is logged at most once per `warn_every_s`). Rate limiting protects capacity, it is not
a safety or authorisation control; the edge (Envoy) still applies its own per-client limit, and
failing closed would turn a cache outage into a full clinical-service outage."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger(__name__)

# KEYS: one key per limit. ARGV: for each key, its emission interval (µs) and burst.
# Every limit must allow the request; only then are all TATs advanced (all or nothing).
# Returns {allowed (1/0), retry_after (µs)}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local retry = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if allow_at > now then
    if allow_at - now > retry then retry = allow_at - now end
  end
  tats[i] = new_tat
end
if retry > 0 then
  return {0, retry}
end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((tats[i] - now) / 1000)
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', ttl_ms)
end
return {1, 0}
"""
GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()
KEY_PREFIX = "rl"
ALL_CALLERS = "all"  # the subject part of a per-endpoint (all callers) key


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period_s` seconds, `burst` of them at once."""

    limit: int
    period_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_s <= 0 or self.burst < 1:
            raise ValueError("a rate needs limit >= 1, period_s > 0 and burst >= 1")

    @property
    def interval_us(self) -> int:
        return max(1, round(self.period_s / self.limit * 1_000_000))

    @classmethod
    def per_minute(cls, limit: int, burst: int) -> Rate:
        return cls(limit, 60.0, burst)


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    degraded: bool = False  # allowed only because Redis could not be asked (fail open)


def subject_digest(subject: str) -> str:
    return hashlib.sha256(subject.encode()).hexdigest()[:32]


def rate_key(endpoint: str, subject: str) -> str:
    """`rl:{endpoint}:{sha256(subject)[:32]}`: the subject never appears in the key."""
    return f"{KEY_PREFIX}:{endpoint}:{subject_digest(subject)}"


class RateLimiter:
    """Per-user (per subject, per endpoint) limits, plus an optional limit per endpoint across
    all callers. Both are checked in one script: a denied call consumes neither."""

    def __init__(
        self,
        redis: aioredis.Redis,
        per_user: Rate,
        *,
        per_endpoint: Rate | None = None,
        warn_every_s: float = 60.0,
    ) -> None:
        self._redis = redis
        self.per_user = per_user
        self.per_endpoint = per_endpoint
        self._warn_every_s = warn_every_s
        self._last_warning: float | None = None

    def _limits(self, endpoint: str, subject: str) -> tuple[list[str], list[int]]:
        limits: list[tuple[str, Rate]] = [(rate_key(endpoint, subject), self.per_user)]
        if self.per_endpoint is not None:
            limits.append((f"{KEY_PREFIX}:{endpoint}:{ALL_CALLERS}", self.per_endpoint))
        keys = [k for k, _ in limits]
        args = [v for _, r in limits for v in (r.interval_us, r.burst)]
        return keys, args

    async def _run(self, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        try:
            result = await self._redis.evalsha(GCRA_SHA, len(keys), *keys, *args)
        except NoScriptError:  # first use on this server, or after SCRIPT FLUSH / a restart
            result = await self._redis.eval(GCRA_LUA, len(keys), *keys, *args)
        return [int(v) for v in result]

    async def check(self, endpoint: str, subject: str) -> RateDecision:
        """Count one call of `subject` to `endpoint`; allowed, or when it may retry."""
        keys, args = self._limits(endpoint, subject)
        try:
            allowed, retry_us = await self._run(keys, args)
        except (RedisError, OSError) as exc:
            self._warn(endpoint, exc)
            return RateDecision(True, 0.0, degraded=True)
        if allowed:
            return RateDecision(True, 0.0)
        return RateDecision(False, math.ceil(retry_us / 1000) / 1000)

    def _warn(self, endpoint: str, exc: Exception) -> None:
        now = time.monotonic()
        if self._last_warning is not None and now - self._last_warning < self._warn_every_s:
            return
        self._last_warning = now
        log.warning(
            "rate limiter cannot reach Redis (%s): failing open for %s; the edge limit still applies",
            type(exc).__name__,
            endpoint,
        )
