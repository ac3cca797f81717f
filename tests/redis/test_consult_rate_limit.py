"""The consult servicer on the in-process mesh with a Redis rate limiter: the call past the
caller's limit fails with RESOURCE_EXHAUSTED / RATE_LIMITED and says when to retry; and the
composition root's Redis wiring."""

from __future__ import annotations

import base64
import json
from contextlib import AsyncExitStack

import grpc
import pytest
import redis.asyncio as aioredis

from services.consult.adapters.cached_ports import CachedEvidence, CachedTriage
from services.consult.adapters.grpc_ports import (
    GrpcDoctor,
    GrpcEvidence,
    GrpcPharmacist,
    GrpcTriage,
)
from services.consult.domain.deliberation import Ports
from services.consult.main import ConsultSettings, build_redis, rate_limiter, with_cache
from tests.consult.mesh import running_mesh
from tests.factories import patient
from tests.redis.conftest import all_keys
from utimesh.cache.ratelimit import Rate, RateLimiter, rate_key
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.caller import ROLES_HEADER, SUB_HEADER
from utimesh.kit.channels import insecure_channel
from utimesh.kit.status import error_details
from utimesh.rules import Knowledge, parse_intake


def headers(sub: str) -> tuple[tuple[str, str], ...]:
    roles = base64.b64encode(json.dumps(["pharmacist"]).encode()).decode()
    return ((SUB_HEADER, sub), (ROLES_HEADER, roles))


async def test_call_past_the_limit_is_resource_exhausted(
    redis: aioredis.Redis, knowledge: Knowledge
) -> None:
    limiter = RateLimiter(redis, Rate(limit=1, period_s=60, burst=1))
    request = cpb.CreateConsultationRequest(intake=intake_to_proto(parse_intake(patient())))
    async with running_mesh(knowledge, rate_limiter=limiter) as mesh:
        ok = await mesh.consult.CreateConsultation(request, metadata=headers("ph-1"), timeout=20)
        assert ok.consultation.name
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.consult.CreateConsultation(request, metadata=headers("ph-1"), timeout=20)
        d = error_details(caught.value)
        assert d.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert d.reason == "RATE_LIMITED"
        assert 0 < float(d.metadata["retry_after_s"]) <= 60
        # another pharmacist, and another endpoint of the same one, are not limited by it
        other = await mesh.consult.CreateConsultation(request, metadata=headers("ph-2"), timeout=20)
        assert other.consultation.name
        ask = cpb.AskConsultationRequest(name=ok.consultation.name, question="Why this agent?")
        await mesh.consult.AskConsultation(ask, metadata=headers("ph-1"), timeout=20)
        stream = cpb.StreamConsultationRequest(intake=request.intake)
        items = [r async for r in mesh.consult.StreamConsultation(stream, metadata=headers("ph-2"))]
        assert items[-1].consultation.name  # its own endpoint bucket
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in mesh.consult.StreamConsultation(stream, metadata=headers("ph-2")):
                pass
        d = error_details(streamed.value)
        assert (d.code, d.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        with pytest.raises(grpc.aio.AioRpcError) as asked:
            await mesh.consult.AskConsultation(ask, metadata=headers("ph-1"), timeout=20)
        assert error_details(asked.value).reason == "RATE_LIMITED"
    keys = await all_keys(redis)
    assert rate_key("CreateConsultation", "ph-1") in keys
    assert not any("ph-1" in k or "ph-2" in k for k in keys)


async def test_composition_root_wires_redis_only_when_configured(redis_url: str) -> None:
    async with AsyncExitStack() as resources:
        assert await build_redis(ConsultSettings(), resources) is None
        settings = ConsultSettings(
            redis_url=redis_url, rate_per_minute=2, rate_burst=1, endpoint_rate_per_minute=5
        )
        client = await build_redis(settings, resources)
        assert client is not None
        assert await client.ping()
        limiter = rate_limiter(client, settings)
        assert limiter.per_user == Rate(2, 60.0, 1)
        assert limiter.per_endpoint == Rate(5, 60.0, 100)
        channel = insecure_channel("127.0.0.1:1")
        resources.push_async_callback(channel.close)
        ports = Ports(GrpcTriage(channel), GrpcDoctor(channel), GrpcPharmacist(channel))
        cached_ports, evidence = with_cache(client, settings, ports, GrpcEvidence(channel))
        assert isinstance(cached_ports.triage, CachedTriage)
        assert isinstance(evidence, CachedEvidence)
        assert cached_ports.doctor is ports.doctor
        off = settings.model_copy(update={"cache_ttl_seconds": 0})
        assert with_cache(client, off, ports, ports_evidence := GrpcEvidence(channel)) == (
            ports,
            ports_evidence,
        )
