"""A consult service with queued consultations, in process: the five downstream services and
consult on loopback (plaintext), consultations, patients and operations in a real PostgreSQL,
the stream in a real Redis, and workers that can run in this process or as real processes
(`utimesh serve worker`) to be killed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.longrunning import operations_pb2, operations_pb2_grpc

from services.consult.adapters.grpc_ports import (
    GrpcDoctor,
    GrpcEvidence,
    GrpcPharmacist,
    GrpcReport,
    GrpcTriage,
)
from services.consult.domain.deliberation import Ports
from services.consult.jobs.rpcs import Jobs
from services.consult.jobs.stream import JobStream
from services.consult.jobs.worker import Worker, WorkerConfig
from services.consult.main import (
    ConsultSettings,
    Databases,
    build_app,
    build_spec,
    operation_store,
    stores_on,
)
from services.doctor.main import build_spec as doctor_spec
from services.pharmacist.main import build_spec as pharmacist_spec
from services.triage.main import build_spec as triage_spec
from tests.factories import patient
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.db.pool import Pool
from utimesh.evaluation.mesh import OFFLINE, evidence_spec, report_spec
from utimesh.kit.channels import insecure_channel
from utimesh.kit.server import RunningServer, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.llm import ModelProfile, StructuredLLM
from utimesh.rules import Knowledge, TriageEngine, parse_intake

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# One key ring for the consult service and its workers (in this process and child processes):
# a job sealed by one must open in the other.
_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def keyring_env() -> dict[str, str]:
    return {"UTIMESH_PHI_KEYS": f"jobs1:{_KEY}"}


def start_request(
    request_id: str = "", patient_id: str = "", **overrides: Any
) -> cpb.StartConsultationRequest:
    return cpb.StartConsultationRequest(
        intake=intake_to_proto(parse_intake(patient(**overrides))),
        request_id=request_id,
        patient_id=patient_id,
    )


@dataclass
class JobMesh:
    consult: consult_pb2_grpc.ConsultationServiceStub
    operations: operations_pb2_grpc.OperationsStub
    targets: dict[str, str]
    settings: ConsultSettings
    dbs: Databases
    redis: aioredis.Redis
    app_parts: tuple[Ports, GrpcEvidence, GrpcReport]
    workers: list[tuple[Worker, asyncio.Task[None]]] = field(default_factory=list)

    def worker(
        self, config: WorkerConfig, *, triage_target: str = "", consumer: str = ""
    ) -> Worker:
        ports, evidence, report = self.app_parts
        if triage_target:
            ports = Ports(
                GrpcTriage(insecure_channel(triage_target)), ports.doctor, ports.pharmacist
            )
        store, patients = stores_on(self.dbs, "worker")
        app = build_app(ports, evidence, report, store, self.settings, patients)
        return Worker(
            app,
            operation_store(self.settings, self.dbs, "worker"),
            JobStream(self.redis),
            config,
            consumer=consumer,
        )

    def start_worker(self, config: WorkerConfig, **kwargs: Any) -> Worker:
        worker = self.worker(config, **kwargs)
        self.workers.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def stop_workers(self) -> None:
        for worker, task in self.workers:
            worker.stop()
            await worker.drain(5)
            await task
        self.workers.clear()

    async def wait_done(
        self, names: list[str], within_s: float = 60.0
    ) -> list[operations_pb2.Operation]:
        deadline = time.monotonic() + within_s
        while True:
            ops = [
                await self.operations.GetOperation(
                    operations_pb2.GetOperationRequest(name=n), timeout=10
                )
                for n in names
            ]
            if all(op.done for op in ops):
                return ops
            if time.monotonic() > deadline:
                states = [
                    cpb.ConsultationOperationMetadata.FromString(o.metadata.value).state
                    for o in ops
                ]
                raise AssertionError(f"not done within {within_s}s: states {states}")
            await asyncio.sleep(0.1)

    async def wait_done_tolerant(
        self, names: list[str], within_s: float
    ) -> list[operations_pb2.Operation]:
        """wait_done through outages: a failed poll (PostgreSQL restarting) is tried again."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                return await self.wait_done(names, within_s=max(1.0, deadline - time.monotonic()))
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


def metadata(op: operations_pb2.Operation) -> cpb.ConsultationOperationMetadata:
    meta = cpb.ConsultationOperationMetadata()
    assert op.metadata.Unpack(meta)
    return meta


def consultation(op: operations_pb2.Operation) -> cpb.Consultation:
    c = cpb.Consultation()
    assert op.response.Unpack(c)
    return c


@contextlib.asynccontextmanager
async def job_mesh(
    knowledge: Knowledge,
    database_url: str,
    redis_url: str,
    *,
    doctor_profile: ModelProfile = OFFLINE,
    llm: StructuredLLM | None = None,
    max_attempts: int = 3,
    resend_after_s: float = 30.0,
) -> AsyncIterator[JobMesh]:
    saved = {k: os.environ.get(k) for k in keyring_env()}
    os.environ.update(keyring_env())  # read by stores_on / operation_store below
    plain = ServiceSettings(port=0)
    servers: dict[str, RunningServer] = {}
    channels: list[grpc.aio.Channel] = []
    pools: list[Pool] = []

    def channel(target: str) -> grpc.aio.Channel:
        channels.append(insecure_channel(target))
        return channels[-1]

    from utimesh.cache.redis_client import create_redis
    from utimesh.db.pool import create_pool

    redis = create_redis(redis_url, timeout_s=5.0)
    try:
        servers["triage"] = await start_server(triage_spec(TriageEngine(knowledge)), plain)
        servers["doctor"] = await start_server(doctor_spec(knowledge, llm, doctor_profile), plain)
        servers["pharmacist"] = await start_server(pharmacist_spec(knowledge, None, OFFLINE), plain)
        servers["evidence"] = await start_server(evidence_spec(knowledge), plain)
        servers["report"] = await start_server(report_spec(knowledge), plain)
        targets = {n: f"127.0.0.1:{s.port}" for n, s in servers.items()}
        ports = Ports(
            GrpcTriage(channel(targets["triage"])),
            GrpcDoctor(channel(targets["doctor"])),
            GrpcPharmacist(channel(targets["pharmacist"])),
        )
        evidence = GrpcEvidence(channel(targets["evidence"]))
        report = GrpcReport(channel(targets["report"]))
        settings = ConsultSettings(
            port=0,
            database_url=database_url,
            redis_url=redis_url,
            job_max_attempts=max_attempts,
            job_resend_after_seconds=resend_after_s,
            agent_timeout_seconds=10,
        )
        pool = await create_pool(
            database_url, min_size=1, max_size=10, application_name="jobs-tests"
        )
        pools.append(pool)
        dbs = Databases(pool, pool)
        store, patients = stores_on(dbs, "consult")
        jobs = Jobs(operation_store(settings, dbs, "consult"), JobStream(redis))
        await jobs.stream.ensure_group()
        spec = build_spec(ports, evidence, report, store, settings, patients, None, jobs)
        servers["consult"] = await start_server(spec, plain)
        targets["consult"] = f"127.0.0.1:{servers['consult'].port}"
        client = channel(targets["consult"])
        mesh = JobMesh(
            consult_pb2_grpc.ConsultationServiceStub(client),
            operations_pb2_grpc.OperationsStub(client),
            targets,
            settings,
            dbs,
            redis,
            (ports, evidence, report),
        )
        try:
            yield mesh
        finally:
            await mesh.stop_workers()
    finally:
        for ch in channels:
            await ch.close()
        for server in servers.values():
            await server.server.stop(None)
        for p in pools:
            await p.close()
        await redis.aclose()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def worker_process(
    mesh: JobMesh, *, lease_s: float = 2.0, name: str = "w"
) -> Iterator[subprocess.Popen[bytes]]:
    """`utimesh serve worker` as a real process, pointed at this mesh's services and stores."""
    env = {
        **os.environ,
        **keyring_env(),
        "UTIMESH_DATABASE_URL": mesh.settings.database_url,
        "UTIMESH_REDIS_URL": mesh.settings.redis_url,
        "UTIMESH_JOB_MAX_ATTEMPTS": str(mesh.settings.job_max_attempts),
        "UTIMESH_JOB_RESEND_AFTER_SECONDS": str(mesh.settings.job_resend_after_seconds),
        "UTIMESH_WORKER_LEASE_SECONDS": str(lease_s),
        "UTIMESH_WORKER_RECLAIM_EVERY_SECONDS": "0.5",
        "UTIMESH_WORKER_SWEEP_EVERY_SECONDS": "0.5",
        "UTIMESH_WORKER_BACKOFF_BASE_SECONDS": "0.2",
        "UTIMESH_WORKER_CONSUMER": name,
        "UTIMESH_WORKER_PORT": "0",
        "UTIMESH_CONSULT_AGENT_TIMEOUT_SECONDS": "10",
        **{
            f"UTIMESH_CONSULT_{n.upper()}_TARGET": t
            for n, t in mesh.targets.items()
            if n != "consult"
        },
    }
    env.pop("UTIMESH_TLS_DIR", None)
    log = open(f"{tempfile.gettempdir()}/utimesh-test-worker-{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "utimesh.cli", "serve", "worker"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    try:
        yield proc
    finally:
        log.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class SlowProxy:
    """A TCP relay that holds every chunk from client to server for `delay_s`: a slow service
    (here, a doctor that takes a while to answer) without touching the service itself."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> SlowProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, self.delay_s)),
            asyncio.create_task(self._pump(up_reader, writer, 0.0)),
        ]
        self.tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self.tasks.difference_update(pumps)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float) -> None:
        try:
            while chunk := await src.read(65536):
                if delay_s:
                    await asyncio.sleep(delay_s)
                dst.write(chunk)
                await dst.drain()
        finally:
            dst.close()
