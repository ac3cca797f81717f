"""gRPC server bootstrap: one grpc.aio server per process with health checking (per-service
status, not hard-coded), reflection, the service interceptor, and a graceful drain on SIGTERM.

With `ServiceSettings.tls_dir` set (UTIMESH_TLS_DIR), the server speaks mutual TLS only: it
presents its service certificate, requires a client certificate of the mesh CA, and refuses
callers that `mesh/policy.toml` does not allow (utimesh.kit.tls, utimesh.kit.authz; gRPC's own
TLS plays Istio's part locally). Without it, plaintext as in tests and simple local runs."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from utimesh.kit import tracing
from utimesh.kit.authz import AuthzInterceptor, MeshPolicy, load_policy
from utimesh.kit.interceptors import ServiceInterceptor
from utimesh.kit.settings import ServiceSettings
from utimesh.kit.tls import Pki, ensure_pki, server_credentials

log = logging.getLogger("utimesh.server")

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),  # never share a port silently with a stale process
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
)


@dataclass(frozen=True)
class ServiceSpec:
    """What a service process serves."""

    name: str  # short name, e.g. "triage"
    service_names: Sequence[str]  # full gRPC names, e.g. "utimesh.triage.v1.TriageService"
    register: Callable[[grpc.aio.Server], None]
    domain: str  # ErrorInfo domain


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    spec: ServiceSpec
    identity: str | None = None  # the certificate identity under mutual TLS; None = plaintext

    async def drain(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace`, then stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


@dataclass(frozen=True)
class _Mesh:
    identity: str
    pki: Pki
    policy: MeshPolicy


def _load_mesh(spec: ServiceSpec, settings: ServiceSettings) -> _Mesh | None:
    """The certificate and the policy of this service when TLS is configured (blocking I/O)."""
    if settings.tls_dir is None:
        return None
    identity = settings.service_identity or spec.name
    policy = load_policy(settings.mesh_policy)
    if identity not in policy.services:
        raise ValueError(f"{spec.name}: the mesh policy has no [services.{identity}] entry")
    return _Mesh(identity, ensure_pki(settings.tls_dir, [identity]), policy)


async def start_server(spec: ServiceSpec, settings: ServiceSettings) -> RunningServer:
    """Build, bind and start; health reports SERVING only once the port is bound."""
    # Certificates and policy are read (or made) in a thread: no blocking I/O on the loop.
    mesh = await asyncio.to_thread(_load_mesh, spec, settings)
    # Tracing first (when on): a call refused by authorization still shows in its trace.
    interceptors: list[grpc.aio.ServerInterceptor] = tracing.server_interceptors()
    if mesh is not None:
        # First: a refused call runs nothing else.
        interceptors.append(
            AuthzInterceptor(service=mesh.identity, policy=mesh.policy, domain=spec.domain)
        )
    interceptors.append(
        ServiceInterceptor(domain=spec.domain, max_budget_s=settings.max_budget_seconds)
    )
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    spec.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    if mesh is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(mesh.pki, mesh.identity))
    if port == 0:
        raise OSError(f"{spec.name}: cannot bind {address}")
    await server.start()
    for name in ("", *spec.service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        server, port, health_servicer, spec, identity=None if mesh is None else mesh.identity
    )


class Background(Protocol):
    """Work a process does beside serving (a job worker's loops): run until stopped, then
    finish what is in hand within a grace period."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    async def drain(self, grace_s: float) -> None: ...


async def serve(
    spec: ServiceSpec,
    settings: ServiceSettings,
    on_started: Callable[[int], None] | None = None,
    background: Background | None = None,
) -> None:
    """Run until SIGTERM or SIGINT (or until `background` ends by itself), then drain
    gracefully: the background work first (it stops taking new work and finishes what it
    holds), then the server."""
    running = await start_server(spec, settings)
    # Startup objects live for the whole process: keep them out of every later full collection
    # (a ~16 ms pause on the first one otherwise).
    gc.collect()
    gc.freeze()
    log.info(
        "serving",
        extra={
            "fields": {
                "service": spec.name,
                "address": f"{settings.host}:{running.port}",
                "mtls": running.identity is not None,
            }
        },
    )
    if on_started:
        on_started(running.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(stop.wait())
    work = asyncio.create_task(background.run()) if background is not None else None
    await asyncio.wait(
        {waiter, stopper, *([work] if work else [])}, return_when=asyncio.FIRST_COMPLETED
    )
    if background is not None and work is not None:
        background.stop()
        await background.drain(settings.grace_seconds)
        await asyncio.gather(work, return_exceptions=True)
    if stop.is_set() or work is not None:
        log.info(
            "draining", extra={"fields": {"service": spec.name, "grace_s": settings.grace_seconds}}
        )
        await running.drain(settings.grace_seconds)
    for task in (waiter, stopper):
        task.cancel()
    log.info("stopped", extra={"fields": {"service": spec.name}})
