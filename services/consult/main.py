"""Composition root of the consult service: one channel per downstream service, built once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from google.longrunning import operations_pb2_grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.consult.adapters.cached_ports import CachedEvidence, CachedTriage
from services.consult.adapters.grpc_ports import (
    GrpcDoctor,
    GrpcEvidence,
    GrpcPharmacist,
    GrpcReport,
    GrpcTriage,
)
from services.consult.adapters.memory_patients import MemoryPatientStore
from services.consult.adapters.memory_store import MemoryConsultationStore
from services.consult.adapters.pg_memory import PostgresPatientStore
from services.consult.adapters.pg_store import PostgresConsultationStore
from services.consult.app import ConsultationApp, Limits
from services.consult.domain.deliberation import Ports
from services.consult.domain.memory import PatientStore
from services.consult.domain.ports import ConsultationStore, EvidencePort, ReportPort
from services.consult.jobs.rpcs import OPERATIONS_SERVICE, Jobs, OperationsServicer
from services.consult.jobs.store import OperationStore
from services.consult.jobs.stream import JobStream
from services.consult.servicer import DOMAIN, SERVICE_NAME, ConsultationServicer
from utimesh.cache.ratelimit import Rate, RateLimiter
from utimesh.cache.redis_client import create_redis, redact_url
from utimesh.cache.workcache import WorkCache
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.db.crypto import keyring_from_env
from utimesh.db.migrations import migrate
from utimesh.db.pool import Pool, create_pool, redact_dsn
from utimesh.kit import metrics
from utimesh.kit.channels import service_channel
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings

DEFAULT_PORT = 50050
log = logging.getLogger(__name__)


class ConsultSettings(ServiceSettings):
    """Environment: UTIMESH_CONSULT_* (HOST, PORT, TRIAGE_TARGET, DOCTOR_TARGET, ...)."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_CONSULT_", extra="ignore", frozen=True)
    port: int = DEFAULT_PORT
    max_budget_seconds: float = 120.0
    triage_target: str = "127.0.0.1:50051"
    doctor_target: str = "127.0.0.1:50052"
    pharmacist_target: str = "127.0.0.1:50053"
    evidence_target: str = "127.0.0.1:50054"
    report_target: str = "127.0.0.1:50055"
    max_rounds: int = Field(default=3, ge=1, le=5)
    consultation_budget_seconds: float = Field(default=60.0, gt=0)
    agent_timeout_seconds: float = Field(default=30.0, gt=0)
    # Shared by every service of a stack, so not UTIMESH_CONSULT_-prefixed. Empty: memory store.
    database_url: str = Field(default="", validation_alias="UTIMESH_DATABASE_URL")
    db_pool_max: int = Field(default=10, ge=1, le=100)
    # A read replica for reads that write nothing (operations, audit listing); empty: primary.
    database_read_url: str = Field(default="", validation_alias="UTIMESH_DATABASE_READ_URL")
    # Queued consultations (StartConsultation), shared with the workers: attempts before a job
    # is dead-lettered, and how long a sent job may sit unclaimed before it is sent again.
    job_max_attempts: int = Field(
        default=5, ge=1, le=50, validation_alias="UTIMESH_JOB_MAX_ATTEMPTS"
    )
    job_resend_after_seconds: float = Field(
        default=120.0, gt=0, validation_alias="UTIMESH_JOB_RESEND_AFTER_SECONDS"
    )
    # Shared too (UTIMESH_REDIS_URL). Empty: no rate limits here and no work cache.
    redis_url: str = Field(default="", validation_alias="UTIMESH_REDIS_URL")
    # Per caller (JWT subject) and per endpoint (Create/Stream/AskConsultation).
    rate_per_minute: int = Field(default=60, ge=1)
    rate_burst: int = Field(default=20, ge=1)
    # Per endpoint across all callers; 0 = no such limit.
    endpoint_rate_per_minute: int = Field(default=0, ge=0)
    endpoint_rate_burst: int = Field(default=100, ge=1)
    # Triage and evidence work cache; 0 = off.
    cache_ttl_seconds: float = Field(default=600.0, ge=0)


def build_spec(
    ports: Ports,
    evidence: EvidencePort,
    report: ReportPort,
    store: ConsultationStore,
    settings: ConsultSettings,
    patients: PatientStore | None = None,
    limiter: RateLimiter | None = None,
    jobs: Jobs | None = None,
) -> ServiceSpec:
    """`patients` defaults to an in-memory patient store (no database); `limiter` to none;
    `jobs` (queued consultations and google.longrunning.Operations) to none."""
    app = build_app(ports, evidence, report, store, settings, patients)
    servicer = ConsultationServicer(app, limiter, jobs)

    def register(server: grpc.aio.Server) -> None:
        consult_pb2_grpc.add_ConsultationServiceServicer_to_server(servicer, server)
        if jobs is not None:
            operations_pb2_grpc.add_OperationsServicer_to_server(
                OperationsServicer(app, jobs), server
            )

    names = (SERVICE_NAME, OPERATIONS_SERVICE) if jobs is not None else (SERVICE_NAME,)
    return ServiceSpec(name="consult", service_names=names, register=register, domain=DOMAIN)


def build_app(
    ports: Ports,
    evidence: EvidencePort,
    report: ReportPort,
    store: ConsultationStore,
    settings: ConsultSettings,
    patients: PatientStore | None = None,
) -> ConsultationApp:
    """The consultation use case as the service and the workers both run it."""
    limits = Limits(
        default_rounds=settings.max_rounds,
        budget_s=settings.consultation_budget_seconds,
        agent_timeout_s=settings.agent_timeout_seconds,
    )
    return ConsultationApp(
        ports,
        evidence,
        report,
        store,
        limits,
        patients=patients if patients is not None else MemoryPatientStore(),
    )


async def build_store(
    settings: ConsultSettings, resources: AsyncExitStack, actor: str
) -> ConsultationStore:
    """Postgres (schema migrated at start) when UTIMESH_DATABASE_URL is set, else memory."""
    return (await build_stores(settings, resources, actor))[0]


@dataclass(frozen=True)
class Databases:
    """The primary's pool (writes, and reads that are audited: an audited read writes its
    event) and the pool reads that write nothing use (a replica's, or the primary's)."""

    pool: Pool
    read_pool: Pool


async def build_databases(
    settings: ConsultSettings, resources: AsyncExitStack, application: str
) -> Databases | None:
    """Pools for UTIMESH_DATABASE_URL (schema migrated at start) and UTIMESH_DATABASE_READ_URL;
    None without a database. Closed with `resources`."""
    if not settings.database_url:
        return None
    pool = await create_pool(
        settings.database_url, application_name=application, max_size=settings.db_pool_max
    )
    resources.push_async_callback(pool.close)
    result = await migrate(pool)
    log.info("PostgreSQL at %s (schema %04d)", redact_dsn(settings.database_url), result.version)
    read_pool = pool
    if settings.database_read_url:
        read_pool = await create_pool(
            settings.database_read_url,
            application_name=f"{application}-read",
            max_size=settings.db_pool_max,
        )
        resources.push_async_callback(read_pool.close)
        log.info("reads that write nothing use %s", redact_dsn(settings.database_read_url))
    return Databases(pool, read_pool)


async def build_stores(
    settings: ConsultSettings, resources: AsyncExitStack, actor: str
) -> tuple[ConsultationStore, PatientStore]:
    """The consultation and patient stores: on Postgres (schema migrated at start, patient
    identifiers sealed with the key ring of UTIMESH_PHI_KEYS or the dev key file) when
    UTIMESH_DATABASE_URL is set, else in memory."""
    dbs = await build_databases(settings, resources, "utimesh-consult")
    if dbs is None:
        log.warning("UTIMESH_DATABASE_URL is not set: consultations are kept in memory only")
        return MemoryConsultationStore(), MemoryPatientStore()
    return stores_on(dbs, actor)


def stores_on(dbs: Databases, actor: str) -> tuple[ConsultationStore, PatientStore]:
    return (
        PostgresConsultationStore(dbs.pool, actor=actor, read_pool=dbs.read_pool),
        PostgresPatientStore(dbs.pool, keyring_from_env(), actor=actor),
    )


def operation_store(settings: ConsultSettings, dbs: Databases, actor: str) -> OperationStore:
    return OperationStore(
        dbs.pool,
        keyring_from_env(),
        read_pool=dbs.read_pool,
        max_attempts=settings.job_max_attempts,
        resend_after_s=settings.job_resend_after_seconds,
        actor=actor,
    )


def rate_limiter(redis: aioredis.Redis, settings: ConsultSettings) -> RateLimiter:
    per_endpoint = (
        Rate.per_minute(settings.endpoint_rate_per_minute, settings.endpoint_rate_burst)
        if settings.endpoint_rate_per_minute
        else None
    )
    return RateLimiter(
        redis,
        Rate.per_minute(settings.rate_per_minute, settings.rate_burst),
        per_endpoint=per_endpoint,
    )


def with_cache(
    redis: aioredis.Redis, settings: ConsultSettings, ports: Ports, evidence: EvidencePort
) -> tuple[Ports, EvidencePort]:
    """The triage and evidence ports behind the Redis work cache (unchanged when its TTL is 0)."""
    if settings.cache_ttl_seconds <= 0:
        return ports, evidence
    ttl = settings.cache_ttl_seconds
    triage = CachedTriage(ports.triage, WorkCache(redis, "triage", ttl_s=ttl))
    return (
        dataclasses.replace(ports, triage=triage),
        CachedEvidence(evidence, WorkCache(redis, "evidence", ttl_s=ttl)),
    )


async def build_redis(
    settings: ConsultSettings, resources: AsyncExitStack
) -> aioredis.Redis | None:
    """The process's one Redis client when UTIMESH_REDIS_URL is set (closed with `resources`)."""
    if not settings.redis_url:
        log.warning("UTIMESH_REDIS_URL is not set: no service rate limits and no work cache")
        return None
    redis = create_redis(settings.redis_url)
    resources.push_async_callback(redis.aclose)
    log.info("rate limits and work cache in Redis at %s", redact_url(settings.redis_url))
    return redis


@dataclass(frozen=True)
class Downstream:
    """Clients of the five services a consultation calls, on one channel each."""

    ports: Ports
    evidence: GrpcEvidence
    report: GrpcReport


async def open_downstream(
    settings: ConsultSettings, caller: str, tls_dir: Path | None, resources: AsyncExitStack
) -> Downstream:
    """One channel per downstream service (mTLS as `caller` when `tls_dir` is set; each callee's
    identity is checked), closed with `resources`."""
    names = ("triage", "doctor", "pharmacist", "evidence", "report")
    targets = (
        settings.triage_target,
        settings.doctor_target,
        settings.pharmacist_target,
        settings.evidence_target,
        settings.report_target,
    )
    channels = [
        service_channel(t, caller, callee=n, tls_dir=tls_dir)
        for n, t in zip(names, targets, strict=True)
    ]
    for channel in channels:
        resources.push_async_callback(channel.close)
    triage, doctor, pharmacist, evidence, report = channels
    return Downstream(
        Ports(GrpcTriage(triage), GrpcDoctor(doctor), GrpcPharmacist(pharmacist)),
        GrpcEvidence(evidence),
        GrpcReport(report),
    )


def start_metrics(resources: AsyncExitStack) -> None:
    """Online signals (utimesh.kit.metrics) on /metrics when UTIMESH_METRICS_PORT is set."""
    if (exporter := metrics.start_exporter_from_env()) is not None:
        resources.callback(exporter.close)


async def _main(settings: ConsultSettings, on_started: Callable[[int], None] | None) -> None:
    caller = settings.service_identity or "consult"
    async with AsyncExitStack() as resources:  # closes the pool after the server has drained
        start_metrics(resources)
        downstream = await open_downstream(settings, caller, settings.tls_dir, resources)
        ports = downstream.ports
        dbs = await build_databases(settings, resources, "utimesh-consult")
        store: ConsultationStore = MemoryConsultationStore()
        patients: PatientStore = MemoryPatientStore()
        if dbs is None:
            log.warning("UTIMESH_DATABASE_URL is not set: consultations are kept in memory only")
        else:
            store, patients = stores_on(dbs, caller)
        evidence: EvidencePort = downstream.evidence
        limiter, jobs = None, None
        if (redis := await build_redis(settings, resources)) is not None:
            ports, evidence = with_cache(redis, settings, ports, evidence)
            limiter = rate_limiter(redis, settings)
            if dbs is not None:
                jobs = Jobs(operation_store(settings, dbs, caller), JobStream(redis))
        if jobs is None:
            log.warning("no job queue (needs PostgreSQL and Redis): StartConsultation is off")
        spec = build_spec(
            ports, evidence, downstream.report, store, settings, patients, limiter, jobs
        )
        await serve(spec, settings, on_started)


def run(settings: ConsultSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("consult", settings.log_level)
    asyncio.run(_main(settings, on_started))
