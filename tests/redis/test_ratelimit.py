"""GCRA rate limits on a real Redis: burst, denial with retry-after, recovery, hashed keys,
the NOSCRIPT fallback and failing open when Redis is down."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from tests.redis.conftest import all_keys
from utimesh.cache.ratelimit import Rate, RateLimiter, rate_key

SUBJECT = "pharmacist-7f3a@example.org"


async def test_burst_then_denied_then_allowed_after_retry_after(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, Rate(limit=1, period_s=0.2, burst=3))
    for _ in range(3):
        assert (await limiter.check("CreateConsultation", SUBJECT)).allowed
    denied = await limiter.check("CreateConsultation", SUBJECT)
    assert not denied.allowed
    assert 0 < denied.retry_after_s <= 0.2
    assert not denied.degraded
    # a denied call consumed nothing: waiting what it says is enough (polled, never blind)
    decision = denied
    for _ in range(20):
        await asyncio.sleep(decision.retry_after_s)
        decision = await limiter.check("CreateConsultation", SUBJECT)
        if decision.allowed:
            break
    assert decision.allowed
    again = await limiter.check("CreateConsultation", SUBJECT)
    assert not again.allowed and again.retry_after_s > 0  # one interval earned one call


async def test_limits_are_per_subject_and_per_endpoint(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, Rate(limit=1, period_s=60, burst=1))
    assert (await limiter.check("CreateConsultation", SUBJECT)).allowed
    assert not (await limiter.check("CreateConsultation", SUBJECT)).allowed
    assert (await limiter.check("AskConsultation", SUBJECT)).allowed
    assert (await limiter.check("CreateConsultation", "someone-else")).allowed


async def test_endpoint_limit_across_callers_consumes_nothing_when_denied(
    redis: aioredis.Redis,
) -> None:
    limiter = RateLimiter(redis, Rate(limit=10, period_s=60, burst=10), per_endpoint=Rate(2, 60, 2))
    assert (await limiter.check("AskConsultation", "a")).allowed
    assert (await limiter.check("AskConsultation", "b")).allowed
    denied = await limiter.check("AskConsultation", "c")
    assert not denied.allowed and denied.retry_after_s > 0
    # c's own bucket was not advanced by the denied call
    keys = await all_keys(redis)
    assert rate_key("AskConsultation", "c") not in keys


async def test_keys_hold_a_digest_never_the_subject(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, Rate(limit=5, period_s=60, burst=5))
    await limiter.check("StreamConsultation", SUBJECT)
    keys = await all_keys(redis)
    assert keys == [rate_key("StreamConsultation", SUBJECT)]
    (key,) = keys
    prefix, endpoint, digest = key.split(":")
    assert (prefix, endpoint) == ("rl", "StreamConsultation")
    assert len(digest) == 32 and int(digest, 16) >= 0
    for part in (SUBJECT, "pharmacist", "example.org", "7f3a@"):
        assert part not in key
    ttl = await redis.pttl(key)
    assert 0 < ttl <= 60_000  # keys expire by themselves


async def test_script_is_reloaded_after_a_flush(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis, Rate(limit=5, period_s=60, burst=2))
    assert (await limiter.check("AskConsultation", SUBJECT)).allowed
    await redis.script_flush()  # the next EVALSHA gets NOSCRIPT
    assert (await limiter.check("AskConsultation", SUBJECT)).allowed
    assert not (await limiter.check("AskConsultation", SUBJECT)).allowed


async def test_redis_down_fails_open_with_a_warning(
    dead_redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="utimesh.cache.ratelimit")
    limiter = RateLimiter(dead_redis, Rate(limit=1, period_s=60, burst=1))
    for _ in range(3):
        decision = await limiter.check("CreateConsultation", SUBJECT)
        assert decision.allowed and decision.degraded and decision.retry_after_s == 0
    warnings = [r for r in caplog.records if r.name == "utimesh.cache.ratelimit"]
    assert len(warnings) == 1  # throttled
    assert "failing open" in warnings[0].getMessage()
    assert SUBJECT not in caplog.text


def test_rate_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="limit"):
        Rate(0, 60, 1)
    with pytest.raises(ValueError, match="burst"):
        Rate(1, 60, 0)
