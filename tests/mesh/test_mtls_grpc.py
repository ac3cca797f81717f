"""A real triage server with mutual TLS on a loopback port: the allowed caller gets through;
plaintext, certificate-less and foreign-CA clients fail the handshake; a same-CA certificate of
the wrong service gets PERMISSION_DENIED with reason CALLER_NOT_ALLOWED; health is open to any
mesh identity, reflection only to the operator and the supervisor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.triage.main import TriageSettings, build_spec
from services.triage.servicer import SERVICE_NAME
from tests.factories import patient
from utimesh.codec.clinical import intake_to_proto
from utimesh.kit.channels import (
    CHANNEL_OPTIONS,
    insecure_channel,
    service_channel,
    supervisor_channel,
)
from utimesh.kit.server import RunningServer, ServiceSpec, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.kit.status import ErrorDetails, error_details
from utimesh.kit.tls import Pki, ensure_pki
from utimesh.rules import TriageEngine, parse_intake
from utimesh.rules.knowledge import Knowledge
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")

IDENTITIES = ("triage", "consult", "doctor", "edge", "supervisor", "operator")
HANDSHAKE_REFUSED = grpc.StatusCode.UNAVAILABLE


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"), IDENTITIES)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA issuing the same identity names: trusted by nobody in the mesh."""
    return ensure_pki(tmp_path_factory.mktemp("foreign"), ["consult", "triage"])


@pytest.fixture(autouse=True)
def no_tls_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UTIMESH_TLS_DIR", raising=False)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(knowledge: Knowledge, pki: Pki) -> AsyncIterator[RunningServer]:
    settings = ServiceSettings(port=0, tls_dir=pki.directory)
    running = await start_server(build_spec(TriageEngine(knowledge)), settings)
    yield running
    await running.server.stop(None)


@pytest.fixture(scope="module")
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def assess_request() -> tpb.AssessPatientRequest:
    return tpb.AssessPatientRequest(intake=intake_to_proto(parse_intake(patient())))


async def assess(channel: grpc.aio.Channel) -> tpb.AssessPatientResponse:
    stub = triage_pb2_grpc.TriageServiceStub(channel)
    response: tpb.AssessPatientResponse = await stub.AssessPatient(assess_request(), timeout=5)
    return response


async def refused(channel: grpc.aio.Channel) -> ErrorDetails:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await assess(channel)
    return error_details(info.value)


# --- who gets through -------------------------------------------------------------------------


async def test_server_runs_under_its_service_identity(server: RunningServer) -> None:
    assert server.identity == "triage"


async def test_the_allowed_caller_is_served(target: str, pki: Pki) -> None:
    async with service_channel(target, "consult", callee="triage", pki=pki) as channel:
        response = await assess(channel)
    assert response.ruleset_hash


@pytest.mark.parametrize("caller", ["doctor", "edge", "operator", "supervisor"])
async def test_a_mesh_identity_not_on_the_allow_list_is_refused(
    target: str, pki: Pki, caller: str
) -> None:
    d = await refused(service_channel(target, caller, pki=pki))
    assert (d.code, d.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert d.metadata == {"caller": caller, "callee": "triage"}


async def test_a_plaintext_client_fails_the_handshake(target: str) -> None:
    d = await refused(insecure_channel(target))
    assert d.code == HANDSHAKE_REFUSED


async def test_a_client_without_a_certificate_fails_the_handshake(target: str, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
    d = await refused(grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS))
    assert d.code == HANDSHAKE_REFUSED


async def test_a_certificate_from_another_ca_is_refused_by_the_server(
    target: str, pki: Pki, foreign: Pki
) -> None:
    # The client trusts the right CA, so only the server's check can refuse it.
    impostor = foreign.get("consult")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem,
        private_key=impostor.key_pem,
        certificate_chain=impostor.cert_pem,
    )
    d = await refused(grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS))
    assert d.code == HANDSHAKE_REFUSED


async def test_a_client_refuses_a_server_from_another_ca(target: str, foreign: Pki) -> None:
    d = await refused(service_channel(target, "consult", pki=foreign))
    assert d.code == HANDSHAKE_REFUSED


async def test_a_client_refuses_a_server_of_another_service(target: str, pki: Pki) -> None:
    # consult expects doctor at this address; triage's certificate does not name doctor.
    d = await refused(service_channel(target, "consult", callee="doctor", pki=pki))
    assert d.code == HANDSHAKE_REFUSED


async def test_service_channel_reads_the_pki_from_the_environment(
    target: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UTIMESH_TLS_DIR", str(pki.directory))
    async with service_channel(target, "consult", callee="triage") as channel:
        assert (await assess(channel)).ruleset_hash


async def test_the_supervisor_channel_checks_health_but_cannot_assess(
    target: str, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UTIMESH_TLS_DIR", str(pki.directory))
    async with supervisor_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    d = await refused(supervisor_channel(target))
    assert (d.code, d.metadata["caller"]) == (grpc.StatusCode.PERMISSION_DENIED, "supervisor")


# --- health and reflection --------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["supervisor", "operator", "doctor"])
async def test_any_mesh_identity_may_check_health(target: str, pki: Pki, caller: str) -> None:
    async with service_channel(target, caller, pki=pki) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names: list[str] = []
    async for reply in call:
        names += [s.name for s in reply.list_services_response.service]
    return names


@pytest.mark.parametrize("caller", ["operator", "supervisor"])
async def test_reflection_is_open_to_operator_and_supervisor(
    target: str, pki: Pki, caller: str
) -> None:
    async with service_channel(target, caller, pki=pki) as channel:
        assert SERVICE_NAME in await list_services(channel)


async def test_reflection_is_closed_to_services(target: str, pki: Pki) -> None:
    async with service_channel(target, "consult", pki=pki) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            # Read without writing: see _refused_call for why.
            await call.read()
    d = error_details(info.value)
    assert (d.code, d.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


# --- every handler shape is checked -----------------------------------------------------------


async def _unary(request: bytes, context: Any) -> bytes:
    return request


async def _server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield request


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b"".join([r async for r in requests])


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        yield r


def _echo_spec() -> ServiceSpec:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
    }

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("Echo", handlers),))

    return ServiceSpec("echo", ("Echo",), register, "echo.utimesh.dev")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def echo(pki: Pki) -> AsyncIterator[str]:
    """A server with one method of each shape, running as `triage` (consult may call it)."""
    settings = ServiceSettings(port=0, tls_dir=pki.directory, service_identity="triage")
    running = await start_server(_echo_spec(), settings)
    yield f"127.0.0.1:{running.port}"
    await running.server.stop(None)


async def _call(channel: grpc.aio.Channel, shape: str) -> Any:
    method = f"/Echo/{shape}"
    if shape == "Unary":
        return await channel.unary_unary(method)(b"x", timeout=5)
    if shape == "ServerStream":
        return [r async for r in channel.unary_stream(method)(b"x", timeout=5)]
    if shape == "ClientStream":
        return await channel.stream_unary(method)(iter([b"x", b"y"]), timeout=5)
    return [r async for r in channel.stream_stream(method)(iter([b"x", b"y"]), timeout=5)]


EXPECTED = {
    "Unary": b"x",
    "ServerStream": [b"x", b"x"],
    "ClientStream": b"xy",
    "Bidi": [b"x", b"y"],
}


@pytest.mark.parametrize("shape", list(EXPECTED))
async def test_every_handler_shape_serves_the_allowed_caller(
    echo: str, pki: Pki, shape: str
) -> None:
    async with service_channel(echo, "consult", pki=pki) as channel:
        assert await _call(channel, shape) == EXPECTED[shape]


async def _refused_call(channel: grpc.aio.Channel, shape: str) -> None:
    """Call `shape` expecting a refusal. Request-streaming calls send nothing: when a server ends
    a call while the client is still writing, grpc.aio may replace the server's status with
    INTERNAL "Internal error from Core" (grpc/grpc#36066), whoever refused it."""
    method = f"/Echo/{shape}"
    if shape == "ClientStream":
        await channel.stream_unary(method)(timeout=5)
    elif shape == "Bidi":
        await channel.stream_stream(method)(timeout=5).read()
    else:
        await _call(channel, shape)


@pytest.mark.parametrize("shape", list(EXPECTED))
async def test_every_handler_shape_refuses_other_callers(echo: str, pki: Pki, shape: str) -> None:
    async with service_channel(echo, "doctor", pki=pki) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _refused_call(channel, shape)
    d = error_details(info.value)
    assert (d.code, d.reason, d.domain) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
        "echo.utimesh.dev",
    )


# --- configuration ----------------------------------------------------------------------------


async def test_a_service_without_a_policy_does_not_start(pki: Pki) -> None:
    settings = ServiceSettings(port=0, tls_dir=pki.directory, service_identity="nobody")
    with pytest.raises(ValueError, match=r"no \[services.nobody\]"):
        await start_server(_echo_spec(), settings)


async def test_a_bad_policy_file_stops_the_start(pki: Pki, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[mesh]\n")
    settings = ServiceSettings(port=0, tls_dir=pki.directory, mesh_policy=policy)
    with pytest.raises(ValueError, match="bad mesh policy"):
        await start_server(_echo_spec(), settings)


async def test_the_shared_environment_variable_turns_tls_on_for_every_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UTIMESH_TLS_DIR", str(tmp_path))
    monkeypatch.setenv("UTIMESH_TRIAGE_SERVICE_IDENTITY", "triage")
    settings = TriageSettings()
    assert (settings.tls_dir, settings.service_identity) == (tmp_path, "triage")


async def test_without_tls_settings_servers_and_channels_stay_plaintext(
    knowledge: Knowledge,
) -> None:
    running = await start_server(build_spec(TriageEngine(knowledge)), ServiceSettings(port=0))
    try:
        assert running.identity is None
        async with service_channel(f"127.0.0.1:{running.port}", "consult") as channel:
            assert (await assess(channel)).ruleset_hash
    finally:
        await running.server.stop(None)
