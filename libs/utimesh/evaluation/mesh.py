"""An in-process mesh: real grpc.aio servers for triage, doctor, pharmacist, evidence, report and
consult on loopback port 0, wired with real channels. `utimesh eval` runs datasets through it so
that an evaluation exercises the same servicers, codecs and allow-list as production; the tests
use it too. Agents run offline unless given a model profile."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from services.consult.adapters.grpc_ports import (
    GrpcDoctor,
    GrpcEvidence,
    GrpcPharmacist,
    GrpcReport,
    GrpcTriage,
)
from services.consult.adapters.memory_store import MemoryConsultationStore
from services.consult.domain.deliberation import Ports
from services.consult.main import ConsultSettings
from services.consult.main import build_spec as consult_spec
from services.doctor.main import build_spec as doctor_spec
from services.pharmacist.main import build_spec as pharmacist_spec
from services.triage.main import build_spec as triage_spec
from utimesh.cache.ratelimit import RateLimiter
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.channels import insecure_channel
from utimesh.kit.server import RunningServer, ServiceSpec, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.llm import ModelProfile, StructuredLLM
from utimesh.rules import Knowledge, TriageEngine

OFFLINE = ModelProfile()
#: Nothing listens on port 1: calls to it fail fast with UNAVAILABLE (an agent that is down).
DEAD = "127.0.0.1:1"


def evidence_spec(knowledge: Knowledge) -> ServiceSpec:
    """The evidence service over the packaged corpus (BM25, plus dense where installed)."""
    from services.evidence.main import build_retriever, build_spec

    corpus, retriever = build_retriever(knowledge)
    return build_spec(corpus, retriever)


def report_spec(
    knowledge: Knowledge, llm: StructuredLLM | None = None, profile: ModelProfile = OFFLINE
) -> ServiceSpec:
    from services.report.main import build_spec

    return build_spec(knowledge, llm, profile)


@dataclass
class Mesh:
    """The consult client of a running mesh and every server (by service name)."""

    consult: consult_pb2_grpc.ConsultationServiceStub
    servers: dict[str, RunningServer]


@contextlib.asynccontextmanager
async def running_mesh(
    knowledge: Knowledge,
    *,
    doctor_profile: ModelProfile = OFFLINE,
    pharmacist_profile: ModelProfile = OFFLINE,
    report_profile: ModelProfile = OFFLINE,
    llm: StructuredLLM | None = None,
    engine: TriageEngine | None = None,
    doctor_target: str | None = None,
    pharmacist_target: str | None = None,
    evidence_target: str | None = None,
    report_target: str | None = None,
    agent_timeout_s: float = 10.0,
    rate_limiter: RateLimiter | None = None,
) -> AsyncIterator[Mesh]:
    """Start the mesh, yield its consult client, stop everything on exit.

    `engine` replaces triage's engine (default: one over `knowledge`), e.g. an engine over an
    altered ruleset to prove that the release gate catches it. A `*_target` sends that service's
    calls elsewhere (e.g. DEAD, to test degradation)."""
    settings = ServiceSettings(port=0)
    servers: dict[str, RunningServer] = {}
    channels: list[grpc.aio.Channel] = []
    try:
        triage_engine = engine if engine is not None else TriageEngine(knowledge)
        servers["triage"] = await start_server(triage_spec(triage_engine), settings)
        servers["doctor"] = await start_server(
            doctor_spec(knowledge, llm, doctor_profile), settings
        )
        servers["pharmacist"] = await start_server(
            pharmacist_spec(knowledge, llm, pharmacist_profile), settings
        )
        servers["evidence"] = await start_server(evidence_spec(knowledge), settings)
        servers["report"] = await start_server(
            report_spec(knowledge, llm, report_profile), settings
        )

        def channel(target: str) -> grpc.aio.Channel:
            channels.append(insecure_channel(target))
            return channels[-1]

        ports = Ports(
            GrpcTriage(channel(f"127.0.0.1:{servers['triage'].port}")),
            GrpcDoctor(channel(doctor_target or f"127.0.0.1:{servers['doctor'].port}")),
            GrpcPharmacist(channel(pharmacist_target or f"127.0.0.1:{servers['pharmacist'].port}")),
        )
        evidence = GrpcEvidence(channel(evidence_target or f"127.0.0.1:{servers['evidence'].port}"))
        report = GrpcReport(channel(report_target or f"127.0.0.1:{servers['report'].port}"))
        consult_settings = ConsultSettings(port=0, agent_timeout_seconds=agent_timeout_s)
        spec = consult_spec(
            ports,
            evidence,
            report,
            MemoryConsultationStore(),
            consult_settings,
            limiter=rate_limiter,
        )
        servers["consult"] = await start_server(spec, settings)
        client = channel(f"127.0.0.1:{servers['consult'].port}")
        yield Mesh(consult_pb2_grpc.ConsultationServiceStub(client), servers)
    finally:
        for ch in channels:
            await ch.close()
        for server in servers.values():
            await server.server.stop(None)
