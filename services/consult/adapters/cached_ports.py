"""Triage and evidence ports behind the Redis work cache. Both are deterministic for a given
request and knowledge version, and a consultation (and its retries, and identical cases from
other pharmacists) asks them the same questions, so their answers are cached for a short TTL.

Keys: `wc:v1:triage:{sha256(intake proto, deterministic bytes; profile; version)}` and
`wc:v1:evidence:{sha256(claims and jurisdiction; version)}`; free text only ever appears hashed.

Invalidation: the triage answer carries the ruleset hash and the evidence answer the corpus
version, but neither is known *before* the call without an extra round trip, so keys hold only
an optional `version` given by the composition root (e.g. a deployment's knowledge version) and
entries expire after a short TTL (10 minutes by default): after a ruleset or corpus change, a
cached answer is at most one TTL old. Any cache failure (Redis down, an undecodable value) falls
back to the inner port."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from services.consult.domain.deliberation import TriagePort
from services.consult.domain.ports import EvidencePort, Grounded
from utimesh.agents.models import Claim, ProposedRegimen
from utimesh.cache.workcache import WorkCache
from utimesh.codec.agents import claim_to_proto
from utimesh.codec.clinical import intake_to_proto
from utimesh.codec.triage import assessment_from_proto, assessment_to_proto
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.rules.allowlist import PlanCheck
from utimesh.rules.model import Assessment, Intake
from utimesh.triage.v1 import triage_pb2 as tpb

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 600.0


class CachedTriage:
    """`assess` through the cache; `validate` (proposal-specific) straight to the inner port."""

    def __init__(self, inner: TriagePort, cache: WorkCache, *, version: str = "") -> None:
        self.inner = inner
        self.cache = cache
        self.version = version

    def key(self, intake: Intake, profile: str) -> str:
        request = intake_to_proto(intake).SerializeToString(deterministic=True)
        return self.cache.key(request, profile.encode(), self.version.encode())

    async def assess(self, intake: Intake, profile: str, deadline_s: float) -> Assessment:
        key = self.key(intake, profile)
        cached = await self.cache.get(key)
        if cached is not None:
            try:
                return assessment_from_proto(tpb.AssessPatientResponse.FromString(cached))
            except (DecodeError, ValueError, KeyError):
                log.warning("triage cache: undecodable entry ignored")
        assessment = await self.inner.assess(intake, profile, deadline_s)
        await self.cache.put(key, assessment_to_proto(assessment).SerializeToString())
        return assessment

    async def validate(
        self, intake: Intake, profile: str, proposal: ProposedRegimen, deadline_s: float
    ) -> PlanCheck:
        return await self.inner.validate(intake, profile, proposal, deadline_s)


class CachedEvidence:
    def __init__(self, inner: EvidencePort, cache: WorkCache, *, version: str = "") -> None:
        self.inner = inner
        self.cache = cache
        self.version = version

    def key(self, claims: Sequence[Claim], jurisdiction: str) -> str:
        request = epb.GroundClaimsRequest(
            claims=[claim_to_proto(c) for c in claims], jurisdiction=jurisdiction
        ).SerializeToString(deterministic=True)
        return self.cache.key(request, self.version.encode())

    async def ground(
        self, claims: Sequence[Claim], jurisdiction: str, deadline_s: float
    ) -> Grounded:
        key = self.key(claims, jurisdiction)
        cached = await self.cache.get(key)
        if cached is not None:
            try:
                msg = epb.GroundClaimsResponse.FromString(cached)
                return Grounded(tuple(msg.groundings), msg.corpus_version)
            except DecodeError:
                log.warning("evidence cache: undecodable entry ignored")
        grounded = await self.inner.ground(claims, jurisdiction, deadline_s)
        value = epb.GroundClaimsResponse(
            groundings=grounded.groundings, corpus_version=grounded.corpus_version
        )
        await self.cache.put(key, value.SerializeToString())
        return grounded
