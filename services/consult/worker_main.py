"""Composition root of a job worker (`utimesh serve worker`): the consultation use case wired
exactly as in the consult service (same downstream services, stores and cache), fed by the
Redis stream of queued consultations instead of by RPCs. Scale by running more of them.

It serves gRPC health only (for the supervisor, Kubernetes probes): SERVING while it runs.
On SIGTERM it stops taking jobs, lets the ones in flight finish within the grace period, and
leaves any it had to cut pending on the stream, where another worker reclaims them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.consult import DOMAIN
from services.consult.domain.ports import EvidencePort
from services.consult.jobs.stream import JobStream
from services.consult.jobs.worker import Worker, WorkerConfig
from services.consult.main import (
    ConsultSettings,
    build_app,
    build_databases,
    open_downstream,
    operation_store,
    start_metrics,
    stores_on,
    with_cache,
)
from utimesh.cache.redis_client import create_redis, redact_url
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings

DEFAULT_PORT = 50056
HEALTH_NAME = "utimesh.consult.v1.Worker"
log = logging.getLogger("utimesh.worker")


class WorkerSettings(ServiceSettings):
    """Environment: UTIMESH_WORKER_* (PORT, CONCURRENCY, LEASE_SECONDS, ...). Downstream
    targets, budgets, PostgreSQL and Redis are the consult service's settings
    (UTIMESH_CONSULT_*, UTIMESH_DATABASE_URL, UTIMESH_REDIS_URL, UTIMESH_JOB_*)."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_WORKER_", extra="ignore", frozen=True)
    port: int = DEFAULT_PORT
    grace_seconds: float = Field(default=30.0, ge=0)
    concurrency: int = Field(default=4, ge=1, le=64, description="jobs run at once")
    lease_seconds: float = Field(
        default=30.0, gt=0, description="a dead worker's job is taken over after this"
    )
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    reclaim_every_seconds: float = Field(default=5.0, gt=0)
    sweep_every_seconds: float = Field(default=2.0, gt=0)
    consumer: str = Field(default="", description="consumer name; default host + random")

    def config(self) -> WorkerConfig:
        return WorkerConfig(
            concurrency=self.concurrency,
            lease_s=self.lease_seconds,
            backoff_base_s=self.backoff_base_seconds,
            backoff_max_s=self.backoff_max_seconds,
            reclaim_every_s=self.reclaim_every_seconds,
            sweep_every_s=self.sweep_every_seconds,
        )


def health_spec() -> ServiceSpec:
    def register(_: grpc.aio.Server) -> None:
        return None

    return ServiceSpec(
        name="worker", service_names=(HEALTH_NAME,), register=register, domain=DOMAIN
    )


async def _main(
    settings: WorkerSettings,
    consult: ConsultSettings,
    on_started: Callable[[int], None] | None,
) -> None:
    if not consult.database_url or not consult.redis_url:
        raise SystemExit("a worker needs UTIMESH_DATABASE_URL and UTIMESH_REDIS_URL")
    identity = settings.service_identity or "worker"
    async with AsyncExitStack() as resources:
        start_metrics(resources)  # the consultations a worker runs are counted here
        downstream = await open_downstream(consult, identity, settings.tls_dir, resources)
        dbs = await build_databases(consult, resources, "utimesh-worker")
        assert dbs is not None
        store, patients = stores_on(dbs, identity)
        # XREADGROUP blocks up to a second: the socket must wait longer than that.
        redis = create_redis(consult.redis_url, timeout_s=5.0)
        resources.push_async_callback(redis.aclose)
        log.info("jobs from Redis at %s", redact_url(consult.redis_url))
        evidence: EvidencePort = downstream.evidence
        ports, evidence = with_cache(redis, consult, downstream.ports, evidence)
        app = build_app(ports, evidence, downstream.report, store, consult, patients)
        stream = JobStream(redis)
        worker = Worker(
            app,
            operation_store(consult, dbs, identity),
            stream,
            settings.config(),
            consumer=settings.consumer,
        )
        log.info(
            "worker running",
            extra={"fields": {"consumer": worker.consumer, "concurrency": settings.concurrency}},
        )
        # Health for probes; on SIGTERM the worker stops taking jobs and finishes its own first.
        await serve(health_spec(), settings, on_started, background=worker)
        log.info("worker stopped", extra={"fields": {"completed": worker.completed}})


def run(settings: WorkerSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("worker", settings.log_level)
    asyncio.run(_main(settings, ConsultSettings(), on_started))
