"""The work cache behind the triage and evidence ports, on a real Redis: one inner call per
identical request, distinct keys for distinct requests, hashed keys, and bypass when down."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from services.consult.adapters.cached_ports import CachedEvidence, CachedTriage
from services.consult.domain.ports import Grounded
from tests.factories import patient
from tests.redis.conftest import all_keys
from utimesh.agents.models import Claim, ClaimKind, ProposedRegimen
from utimesh.cache.workcache import WorkCache, digest
from utimesh.codec.agents import claim_to_proto
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.rules import Knowledge, TriageEngine, parse_intake
from utimesh.rules.allowlist import PlanCheck
from utimesh.rules.model import Assessment, Intake

MARKER = "ZZ-PATIENT-NAME"


class CountingTriage:
    """A first-party triage port: the real engine, counting its calls."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.engine = TriageEngine(knowledge)
        self.assessed: list[str] = []

    async def assess(self, intake: Intake, profile: str, deadline_s: float) -> Assessment:
        self.assessed.append(profile)
        return self.engine.assess(intake, profile or None)

    async def validate(
        self, intake: Intake, profile: str, proposal: ProposedRegimen, deadline_s: float
    ) -> PlanCheck:
        raise AssertionError("not used")


class CountingEvidence:
    def __init__(self) -> None:
        self.calls = 0

    async def ground(
        self, claims: Sequence[Claim], jurisdiction: str, deadline_s: float
    ) -> Grounded:
        self.calls += 1
        groundings = tuple(
            epb.ClaimGrounding(claim=claim_to_proto(c), support=epb.SUPPORT_LABEL_SUPPORTS)
            for c in claims
        )
        return Grounded(groundings, f"corpus-{jurisdiction}")


def intake(**overrides: object) -> Intake:
    return parse_intake(patient(**overrides))


def claims(text: str) -> tuple[Claim, ...]:
    return (Claim(id="c1", text=text, kind=ClaimKind.TREATMENT, rule_ids=("R1",)),)


async def test_same_intake_same_assessment_one_inner_call(
    redis: aioredis.Redis, knowledge: Knowledge
) -> None:
    inner = CountingTriage(knowledge)
    triage = CachedTriage(inner, WorkCache(redis, "triage", ttl_s=60))
    first = await triage.assess(intake(), "CA-ON", 5)
    second = await triage.assess(intake(), "CA-ON", 5)
    assert second == first
    assert inner.assessed == ["CA-ON"]
    (key,) = await all_keys(redis)
    assert key.startswith("wc:v1:triage:")
    assert 0 < await redis.pttl(key) <= 60_000


async def test_different_profile_is_a_different_key(
    redis: aioredis.Redis, knowledge: Knowledge
) -> None:
    inner = CountingTriage(knowledge)
    triage = CachedTriage(inner, WorkCache(redis, "triage", ttl_s=60))
    on = await triage.assess(intake(), "CA-ON", 5)
    ab = await triage.assess(intake(), "CA-AB", 5)
    assert inner.assessed == ["CA-ON", "CA-AB"]
    assert (on.profile, ab.profile) == ("CA-ON", "CA-AB")
    assert triage.key(intake(), "CA-ON") != triage.key(intake(), "CA-AB")
    assert len(await all_keys(redis)) == 2
    # a different knowledge version given by the composition root is a different key too
    versioned = CachedTriage(inner, WorkCache(redis, "triage", ttl_s=60), version="rules-2")
    assert versioned.key(intake(), "CA-ON") != triage.key(intake(), "CA-ON")


async def test_keys_hold_no_free_text_from_the_intake(
    redis: aioredis.Redis, knowledge: Knowledge
) -> None:
    inner = CountingTriage(knowledge)
    triage = CachedTriage(inner, WorkCache(redis, "triage", ttl_s=60))
    evidence = CachedEvidence(CountingEvidence(), WorkCache(redis, "evidence", ttl_s=60))
    marked = intake(history__allergies=[MARKER])
    assert MARKER in str(marked)
    await triage.assess(marked, "CA-ON", 5)
    await evidence.ground(claims(f"allergy {MARKER}"), "CA-ON", 5)
    keys = await all_keys(redis)
    assert len(keys) == 2
    for key in keys:
        assert MARKER not in key and MARKER.lower() not in key.lower()
        *_, hashed = key.split(":")
        assert len(hashed) == 64


async def test_evidence_cached_by_claims_and_jurisdiction(redis: aioredis.Redis) -> None:
    inner = CountingEvidence()
    evidence = CachedEvidence(inner, WorkCache(redis, "evidence", ttl_s=60))
    first = await evidence.ground(claims("nitrofurantoin 100 mg"), "CA-ON", 5)
    again = await evidence.ground(claims("nitrofurantoin 100 mg"), "CA-ON", 5)
    assert again == first and inner.calls == 1
    await evidence.ground(claims("nitrofurantoin 100 mg"), "CA-AB", 5)
    await evidence.ground(claims("fosfomycin 3 g"), "CA-ON", 5)
    assert inner.calls == 3


async def test_redis_down_bypasses_the_cache(
    dead_redis: aioredis.Redis, knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="utimesh.cache.workcache")
    inner = CountingTriage(knowledge)
    triage = CachedTriage(inner, WorkCache(dead_redis, "triage", ttl_s=60))
    first = await triage.assess(intake(), "CA-ON", 5)
    second = await triage.assess(intake(), "CA-ON", 5)
    assert first == second
    assert inner.assessed == ["CA-ON", "CA-ON"]
    assert any("bypassing the cache" in r.getMessage() for r in caplog.records)


async def test_undecodable_entry_is_a_miss(redis: aioredis.Redis, knowledge: Knowledge) -> None:
    inner = CountingTriage(knowledge)
    triage = CachedTriage(inner, WorkCache(redis, "triage", ttl_s=60))
    await redis.set(triage.key(intake(), "CA-ON"), b"\xff\xff not a proto")
    assessment = await triage.assess(intake(), "CA-ON", 5)
    assert assessment.profile == "CA-ON" and inner.assessed == ["CA-ON"]


def test_digest_separates_parts() -> None:
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
