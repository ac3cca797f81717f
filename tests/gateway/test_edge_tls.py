"""The edge's TLS upstream for real: Envoy presents its client certificate, speaks h2 over TLS,
and accepts the consult server only with the pinned SPIFFE id. Observed through /healthz and
Envoy's TLS stats, against a grpc.aio server that requires client certificates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway import UpstreamTls
from tests.gateway.harness import Edge, Pki, ThrowawayCa, running_edge

CONSULT_ID = "spiffe://utimesh.local/ns/utimesh/sa/consult"
EDGE_ID = "spiffe://utimesh.local/ns/utimesh/sa/edge"
SERVICE = "utimesh.consult.v1.ConsultationService"


@pytest_asyncio.fixture
async def tls_consult(tmp_path: Path) -> AsyncIterator[tuple[int, Pki, Pki]]:
    """A TLS gRPC server (client certificates required) serving grpc.health for consult."""
    ca = ThrowawayCa(tmp_path / "pki")
    server_pki = ca.issue("consult", CONSULT_ID)
    edge_pki = ca.issue("edge", EDGE_ID)
    credentials = grpc.ssl_server_credentials(
        [(server_pki.key.read_bytes(), server_pki.cert.read_bytes())],
        root_certificates=ca.ca.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port, server_pki, edge_pki
    finally:
        await server.stop(None)


async def _healthz(edge: Edge) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(edge.url + "/healthz") as response,
    ):
        return response.status


async def _stat(edge: Edge, name: str) -> int:
    status, body = await edge.envoy.admin_get(f"/stats?filter=^{name}$")
    assert status == 200
    for line in body.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


async def _wait(
    condition_name: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)  # poll the observable condition, bounded by the deadline
    raise AssertionError(f"timed out waiting for {condition_name}")


async def test_mtls_upstream_with_the_pinned_identity_is_healthy(
    tls_consult: tuple[int, Pki, Pki], tmp_path: Path
) -> None:
    port, _, edge_pki = tls_consult
    tls = UpstreamTls(
        ca_file=edge_pki.ca, cert_file=edge_pki.cert, key_file=edge_pki.key, spiffe_id=CONSULT_ID
    )
    async with running_edge(
        tmp_path / "edge", port, upstream_tls=tls, health_check_interval_seconds=0.1
    ) as edge:

        async def healthy() -> bool:
            return await _healthz(edge) == 200

        await _wait("/healthz 200 over mTLS", healthy)
        assert await _stat(edge, "cluster.consult.ssl.handshake") >= 1


@pytest.mark.parametrize("case", ["wrong-spiffe-id", "no-client-certificate"])
async def test_upstream_tls_refuses_what_it_must(
    tls_consult: tuple[int, Pki, Pki], tmp_path: Path, case: str
) -> None:
    port, _, edge_pki = tls_consult
    if case == "wrong-spiffe-id":
        tls = UpstreamTls(
            ca_file=edge_pki.ca,
            cert_file=edge_pki.cert,
            key_file=edge_pki.key,
            spiffe_id="spiffe://utimesh.local/ns/utimesh/sa/impostor",
        )
        evidence = "cluster.consult.ssl.fail_verify_san"
    else:
        tls = UpstreamTls(ca_file=edge_pki.ca, spiffe_id=CONSULT_ID)
        evidence = "cluster.consult.health_check.failure"
    async with running_edge(
        tmp_path / "edge", port, upstream_tls=tls, health_check_interval_seconds=0.1
    ) as edge:

        async def refused() -> bool:
            return await _stat(edge, evidence) >= 1

        await _wait(evidence, refused)
        assert await _healthz(edge) == 503
        assert await _stat(edge, "cluster.consult.health_check.success") == 0
