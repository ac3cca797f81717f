"""REST clients through the real Envoy edge in front of the real in-process consult mesh, on
loopback: what a client sees for good calls, bad bodies, bad tokens, wrong roles, floods, large
bodies, browsers and streams, and what the access log keeps."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
import yaml
from grpc_health.v1 import health_pb2
from yarl import URL

from gateway.openapi import OPENAPI_PATH
from tests.consult.mesh import Mesh, running_mesh
from tests.gateway.harness import ALLOWED_ORIGIN, Edge, intake_json, ndjson, running_edge
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.rules import Knowledge

pytestmark = pytest.mark.asyncio(loop_scope="module")

CREATE = "/v1/consultations"
STREAM = "/v1/consultations:stream"
TIMEOUT = aiohttp.ClientTimeout(total=60)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edge(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    state = tmp_path_factory.mktemp("edge")
    async with running_edge(state, mesh.servers["consult"].port, rate_limit_tokens=10_000) as e:
        yield e


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def created(edge: Edge) -> dict[str, Any]:
    """One consultation made through the edge, shared by the read tests."""
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(
            edge.url + CREATE, json={"intake": intake_json()}, headers=edge.bearer("clinician")
        ) as response,
    ):
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        consultation: dict[str, Any] = body["consultation"]
        return consultation


async def _call(
    http: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        try:
            body = json.loads(text) if text else {}
        except json.JSONDecodeError:
            body = {"_text": text}
        return response.status, body, response.headers


def _schema_properties(document: dict[str, Any], ref: str) -> dict[str, Any]:
    props: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
    return props


def _assert_matches_openapi(document: dict[str, Any], value: Any, schema: dict[str, Any]) -> None:
    """Every key the edge prints is a property the OpenAPI document declares (recursively)."""
    if "allOf" in schema:
        schema = schema["allOf"][0]
    if "$ref" in schema:
        target = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        if target.get("type") == "object":
            assert isinstance(value, dict)
            props = target["properties"]
            for key, item in value.items():
                assert key in props, f"{key!r} is not in {schema['$ref']}"
                _assert_matches_openapi(document, item, props[key])
        elif "enum" in target:
            assert value in target["enum"]
    elif schema.get("type") == "array":
        assert isinstance(value, list)
        for item in value:
            _assert_matches_openapi(document, item, schema["items"])


# --- the happy path ------------------------------------------------------------------------


async def test_health_is_answered_without_a_token(edge: Edge, http: aiohttp.ClientSession) -> None:
    status, _, _ = await _call(http, "GET", edge.url + "/healthz")
    assert status == 200


async def test_consultation_round_trip(
    edge: Edge, http: aiohttp.ClientSession, created: dict[str, Any]
) -> None:
    assert created["name"].startswith("consultations/")
    assert created["decision"].startswith("DECISION_")
    assert created["regimen"]["drug"]
    assert created["transcript"] and created["transcript"][0]["actor"] == "triage"
    assert "DRAFT for prescriber sign-off" in created["notice"]
    # proto field names, every primitive printed (false is not "absent" for a clinician)
    assert created["needs_prescriber_review"] is False
    assert "needsPrescriberReview" not in created
    document = yaml.safe_load(OPENAPI_PATH.read_text())
    _assert_matches_openapi(
        document, created, {"$ref": "#/components/schemas/utimesh.consult.v1.Consultation"}
    )

    status, got, headers = await _call(
        http, "GET", f"{edge.url}/v1/{created['name']}", headers=edge.bearer("clinician")
    )
    assert status == 200, got
    assert got["consultation"]["name"] == created["name"]
    assert got["consultation"]["regimen"] == created["regimen"]
    assert headers.get("x-request-id")

    status, answer, _ = await _call(
        http,
        "POST",
        f"{edge.url}/v1/{created['name']}:ask",
        json={"question": "Why this antibiotic and not another?"},
        headers=edge.bearer("pharmacist"),
    )
    assert status == 200, answer
    assert answer["kind"] in {"ANSWERED", "CANNOT_ANSWER", "NEEDS_NEW_CONSULTATION", "OUT_OF_SCOPE"}


async def test_lower_camel_case_input_is_accepted_too(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    """Every key in lowerCamelCase (the json_name the transcoder accepts besides the proto
    name), nested ones included: the strict-JSON check knows both spellings."""
    intake = intake_json(camel_case=True)
    assert "redFlags" in intake and "suprapubicPain" in intake["symptoms"]
    intake["history"]["recentAntibiotics"] = {"entries": [{"drug": "cefalexin", "daysAgo": 200}]}
    status, body, _ = await _call(
        http,
        "POST",
        edge.url + CREATE,
        json={"intake": intake, "requestId": "camel-1", "maxRounds": 2},
        headers=edge.bearer("pharmacist"),
    )
    assert status == 200, body
    assert body["consultation"]["request_id"] == "camel-1"
    # nested camelCase keys were applied, not dropped
    echoed = body["consultation"]["intake"]["history"]["recent_antibiotics"]
    assert echoed == {"entries": [{"drug": "cefalexin", "days_ago": 200}]}


async def test_stream_delivers_progress_before_the_result(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    chunks: list[tuple[float, bytes]] = []
    started = time.monotonic()
    async with http.post(
        edge.url + STREAM,
        json={"intake": intake_json(), "request_id": "stream-1"},
        headers=edge.bearer("clinician"),
    ) as response:
        assert response.status == 200
        async for chunk in response.content.iter_any():
            chunks.append((time.monotonic() - started, chunk))
    events = ndjson(b"".join(c for _, c in chunks).decode())
    assert [("progress" in e) for e in events] == [True] * (len(events) - 1) + [False]
    assert events[-1]["consultation"]["request_id"] == "stream-1"
    assert events[0]["progress"]["step"] == "triage"
    # Incremental: the first chunk holds progress only, and the result came in a later chunk.
    assert len(chunks) >= 2, f"the whole stream came in one chunk: {chunks}"
    first = chunks[0][1].decode()
    assert '"progress"' in first and '"consultation"' not in first
    assert chunks[-1][0] >= chunks[0][0]


async def test_native_grpc_callers_meet_the_same_rules(edge: Edge) -> None:
    """The edge also speaks gRPC (h2c): the token and the role table apply alike."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.settings.listen_port}") as channel:
        stub = consult_pb2_grpc.ConsultationServiceStub(channel)
        request = cpb.GetConsultationRequest(name="consultations/none")
        with pytest.raises(grpc.aio.AioRpcError) as no_token:
            await stub.GetConsultation(request, timeout=10)
        assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auditor = (("authorization", edge.bearer("auditor")["authorization"]),)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateConsultation(
                cpb.CreateConsultationRequest(), timeout=10, metadata=auditor
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- bad requests ----------------------------------------------------------------------------


async def test_malformed_json_is_400_with_a_json_body(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await _call(
        http,
        "POST",
        edge.url + CREATE,
        data='{"intake": {"age": 30',
        headers={**edge.bearer("clinician"), "content-type": "application/json"},
    )
    assert status == 400
    assert body["code"] == 3
    # The edge's strict-JSON check answers before the transcoder, naming the position.
    assert body["message"] == (
        "malformed JSON at line 1, column 22 (byte 21): unexpected end of input"
    )
    info = body["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "MALFORMED_JSON" and info["domain"] == "edge.utimesh.dev"
    assert info["metadata"] == {"line": "1", "column": "22", "offset": "21"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"max_rounds": "several"}, "max_rounds"),
        ({"intake": {"age": "thirty"}}, "age"),
        ({"intake": {"sex": "SEX_NOT_A_VALUE"}}, "sex"),
    ],
    ids=["top-level", "nested", "unknown-enum"],
)
async def test_wrong_type_is_400_naming_the_field(
    edge: Edge, http: aiohttp.ClientSession, payload: dict[str, Any], field: str
) -> None:
    request = {"intake": intake_json(), **payload}
    if "intake" in payload:
        request["intake"] = {**intake_json(), **payload["intake"]}
    status, body, _ = await _call(
        http, "POST", edge.url + CREATE, json=request, headers=edge.bearer("clinician")
    )
    assert status == 400, body
    assert body["code"] == 3
    assert field in body["message"]


async def test_invalid_value_is_400_with_field_violations(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    """The service's INVALID_ARGUMENT keeps its typed details through the transcoder."""
    status, body, _ = await _call(
        http,
        "POST",
        edge.url + CREATE,
        json={"intake": intake_json(), "max_rounds": 99},
        headers=edge.bearer("clinician"),
    )
    assert status == 400, body
    assert body["code"] == 3
    violations = [
        v["field"]
        for d in body["details"]
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["field_violations"]
    ]
    assert "max_rounds" in violations
    assert any(d["@type"].endswith("google.rpc.ErrorInfo") and d["reason"] for d in body["details"])


def _with_unknown(where: str) -> dict[str, Any]:
    request: dict[str, Any] = {"intake": intake_json()}
    if where == "top-level":
        request["max_roundz"] = 2
    elif where == "nested":
        request["intake"]["symptoms"]["dysurya"] = True
    elif where == "camel-case-path":
        request["intake"]["redFlags"] = {"fever": False, "feverish": True}
        del request["intake"]["red_flags"]
    elif where == "array-element":
        request["intake"]["history"]["recent_antibiotics"] = {
            "entries": [{"drug": "cefalexin", "foo": 1}]
        }
    return request


@pytest.mark.parametrize(
    ("where", "field", "message_type"),
    [
        ("top-level", "max_roundz", "utimesh.consult.v1.CreateConsultationRequest"),
        ("nested", "intake.symptoms.dysurya", "utimesh.clinical.v1.Symptoms"),
        ("camel-case-path", "intake.redFlags.feverish", "utimesh.clinical.v1.RedFlags"),
        (
            "array-element",
            "intake.history.recent_antibiotics.entries[0].foo",
            "utimesh.clinical.v1.RecentAntibiotic",
        ),
    ],
)
async def test_unknown_field_is_400_naming_the_field(
    edge: Edge, http: aiohttp.ClientSession, where: str, field: str, message_type: str
) -> None:
    """The transcoder would drop an unknown key silently (envoyproxy/envoy#46623): the edge's
    strict-JSON check refuses it first, naming its path."""
    status, body, headers = await _call(
        http, "POST", edge.url + CREATE, json=_with_unknown(where), headers=edge.bearer("clinician")
    )
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert body["code"] == 3
    assert body["message"] == (
        f'unknown field "{field}" in the request body ({message_type} has no such field)'
    )
    info, bad_request = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["reason"], info["domain"]) == ("UNKNOWN_FIELD", "edge.utimesh.dev")
    assert info["metadata"] == {"field": field}
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in bad_request["field_violations"]] == [field]
    assert bad_request["field_violations"][0]["reason"] == "UNKNOWN_FIELD"


async def test_unknown_field_is_refused_on_every_body_route(
    edge: Edge, http: aiohttp.ClientSession, created: dict[str, Any]
) -> None:
    for path, request in [
        (STREAM, {"intake": intake_json(), "bogus": 1}),
        (f"/v1/{created['name']}:ask", {"question": "Why?", "bogus": 1}),
    ]:
        status, body, _ = await _call(
            http, "POST", edge.url + path, json=request, headers=edge.bearer("clinician")
        )
        assert status == 400, (path, body)
        assert body["details"][0]["metadata"] == {"field": "bogus"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/consultations/",
        "//v1/consultations",
        "/v1/./consultations",
        "/v1/consultation%73",
        "/v1/consultations/:stream",
        "/v1/consultations/{id}/:ask",
        "/v1/consultations/{id}:ask:ask",
        "/v1/consultations/:x:ask",
        "/v1/consultations/{id}:%61sk",
        "/v1/consultations/%7Bid%7D:ask",
        "/v1/consultations/{id}%3Aask",
        "/v1/consultations:stream/",
        "/v1/consultations:foo",
    ],
)
async def test_no_spelling_of_a_path_gets_an_unknown_field_past_the_edge(
    edge: Edge, http: aiohttp.ClientSession, created: dict[str, Any], path: str
) -> None:
    """Whatever path the transcoder maps to an RPC, the strict-JSON check has checked: a body
    with an unknown field never reaches the service."""
    url = edge.url + path.replace("{id}", created["name"].removeprefix("consultations/"))
    request = {"intake": intake_json(), "question": "Why?", "zzz_unknown": 1}
    status, body, _ = await _call(
        http,
        "POST",
        URL(url, encoded=True),
        json=request,
        headers=edge.bearer("clinician"),
    )
    assert status != 200, body
    assert "consult.utimesh.dev" not in json.dumps(body), body


async def test_unknown_query_parameter_is_400(edge: Edge, http: aiohttp.ClientSession) -> None:
    status, body, _ = await _call(
        http, "GET", edge.url + "/v1/consultations/x?debug=1", headers=edge.bearer("auditor")
    )
    assert status == 400
    assert "debug" in body["message"]


async def test_unknown_consultation_is_404(edge: Edge, http: aiohttp.ClientSession) -> None:
    status, body, _ = await _call(
        http, "GET", edge.url + "/v1/consultations/no-such-id", headers=edge.bearer("auditor")
    )
    assert status == 404, body
    assert body["code"] == 5


async def test_request_too_large_is_413(edge: Edge, http: aiohttp.ClientSession) -> None:
    huge = {"intake": intake_json(), "request_id": "x" * (edge.settings.max_request_bytes + 1)}
    status, body, _ = await _call(
        http,
        "POST",
        edge.url + CREATE,
        data=io.BytesIO(json.dumps(huge).encode()),  # aiohttp warns on large raw bodies
        headers={**edge.bearer("clinician"), "content-type": "application/json"},
    )
    assert status == 413
    assert body["code"] == 8


# --- who may call ---------------------------------------------------------------------------


async def test_no_token_is_401(edge: Edge, http: aiohttp.ClientSession) -> None:
    status, body, _ = await _call(http, "POST", edge.url + CREATE, json={"intake": intake_json()})
    assert status == 401
    assert body["code"] == 16


async def test_expired_token_is_401(edge: Edge, http: aiohttp.ClientSession) -> None:
    headers = edge.bearer("clinician", ttl_s=60, issued_at=time.time() - 3600)
    status, body, _ = await _call(
        http, "POST", edge.url + CREATE, json={"intake": intake_json()}, headers=headers
    )
    assert status == 401
    assert "expired" in body["message"].lower()


async def test_token_signed_by_another_key_is_401(
    edge: Edge, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from gateway.jwt_dev import ensure_dev_issuer

    stranger = ensure_dev_issuer(tmp_path / "other-issuer")
    headers = {"authorization": f"Bearer {stranger.mint('mallory', ['clinician'])}"}
    status, _, _ = await _call(
        http, "POST", edge.url + CREATE, json={"intake": intake_json()}, headers=headers
    )
    assert status == 401


async def test_token_in_the_query_string_is_not_read(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    token = edge.issuer.mint("dave", ["auditor"])
    status, _, _ = await _call(
        http, "GET", f"{edge.url}/v1/consultations/no-such-id?access_token={token}"
    )
    assert status == 401


async def test_wrong_audience_is_refused(edge: Edge, http: aiohttp.ClientSession) -> None:
    headers = edge.bearer("clinician", audience="some-other-api")
    status, _, _ = await _call(
        http, "POST", edge.url + CREATE, json={"intake": intake_json()}, headers=headers
    )
    assert status in (401, 403)


@pytest.mark.parametrize(
    ("roles", "method", "path", "allowed"),
    [
        (("auditor",), "POST", CREATE, False),
        (("auditor",), "GET", "{name}", True),
        (("auditor",), "POST", "{name}:ask", False),
        (("prescriber",), "POST", CREATE, False),
        (("prescriber",), "GET", "{name}", True),
        (("prescriber",), "POST", "{name}:ask", True),
        (("operator",), "GET", "{name}", False),
        (("operator",), "GET", "/admin/ready", True),
        (("clinician",), "GET", "/admin/ready", False),
        (("pharmacist",), "POST", STREAM, True),
        ((), "GET", "{name}", False),
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else str(v),
)
async def test_roles(
    edge: Edge,
    http: aiohttp.ClientSession,
    created: dict[str, Any],
    roles: tuple[str, ...],
    method: str,
    path: str,
    allowed: bool,
) -> None:
    url = edge.url + path.replace("{name}", f"/v1/{created['name']}")
    body: dict[str, Any] | None = None
    if method == "POST":
        body = {"question": "What dose?"} if path.endswith(":ask") else {"intake": intake_json()}
    status, got, _ = await _call(http, method, url, json=body, headers=edge.bearer(*roles))
    if allowed:
        assert status == 200, got
    else:
        assert status == 403, got
        assert got["code"] == 7


async def test_role_headers_from_the_client_are_not_trusted(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    headers = {**edge.bearer("auditor"), "x-utimesh-roles": "clinician", "x-utimesh-sub": "root"}
    status, _, _ = await _call(
        http, "POST", edge.url + CREATE, json={"intake": intake_json()}, headers=headers
    )
    assert status == 403


# --- browsers, floods, logs ------------------------------------------------------------------


async def test_cors_preflight_for_an_allowed_origin(
    edge: Edge, http: aiohttp.ClientSession
) -> None:
    preflight = {
        "origin": ALLOWED_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    status, _, headers = await _call(http, "OPTIONS", edge.url + CREATE, headers=preflight)
    assert status == 200
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"]

    stranger = {**preflight, "origin": "https://evil.example"}
    _, _, headers = await _call(http, "OPTIONS", edge.url + CREATE, headers=stranger)
    assert "access-control-allow-origin" not in headers


async def test_rate_limit_is_429_per_client(
    mesh: Mesh, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with running_edge(
        tmp_path,
        mesh.servers["consult"].port,
        rate_limit_tokens=2,
        rate_limit_fill_interval_seconds=60,
    ) as tiny:
        url = tiny.url + "/v1/consultations/no-such-id"
        statuses = []
        for _ in range(3):
            status, body, headers = await _call(http, "GET", url, headers=tiny.bearer("auditor"))
            statuses.append(status)
        assert statuses == [404, 404, 429]
        assert body["code"] == 8
        assert headers["retry-after"] == "60"
        # Another client (another loopback source address) has its own bucket.
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=other, timeout=TIMEOUT) as elsewhere:
            status, _, _ = await _call(elsewhere, "GET", url, headers=tiny.bearer("auditor"))
        assert status == 404
        # Health probes are not rate limited.
        status, _, _ = await _call(http, "GET", tiny.url + "/healthz")
        assert status == 200


async def test_access_log_keeps_no_bodies_or_queries(
    edge: Edge, http: aiohttp.ClientSession, created: dict[str, Any]
) -> None:
    secret = "patient-says-SENTINEL-7731"
    _, _, asked = await _call(
        http,
        "POST",
        f"{edge.url}/v1/{created['name']}:ask",
        json={"question": secret},
        headers=edge.bearer("clinician"),
    )
    _, _, queried = await _call(
        http,
        "GET",
        f"{edge.url}/v1/{created['name']}?q={secret}",
        headers=edge.bearer("clinician"),
    )
    wanted = {asked["x-request-id"], queried["x-request-id"]}
    deadline = time.monotonic() + 15
    entries: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and not wanted <= set(entries):
        if edge.access_log.exists():
            lines = edge.access_log.read_text().splitlines()
            entries = {e["request_id"]: e for e in map(json.loads, lines)}
        await asyncio.sleep(0.05)  # poll: Envoy flushes the log file on its own timer (1 s)
    assert wanted <= set(entries), "access log entries did not appear"
    text = edge.access_log.read_text()
    assert secret not in text and "?" not in text and "Bearer" not in text
    ask = entries[asked["x-request-id"]]
    assert ask["path"] == "/utimesh.consult.v1.ConsultationService/AskConsultation"
    assert ask["method"] == "POST" and ask["status"] == 200
    assert ask["upstream_cluster"] == "consult" and isinstance(ask["duration_ms"], int)


async def test_health_follows_the_consult_service(
    mesh: Mesh, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """/healthz is Envoy's view of consult's grpc.health.v1 status, not a constant."""
    health = mesh.servers["consult"].health
    service = "utimesh.consult.v1.ConsultationService"

    async def wait_for(url: str, want: int) -> None:
        deadline = time.monotonic() + 15
        status = 0
        while time.monotonic() < deadline:
            status, _, _ = await _call(http, "GET", url)
            if status == want:
                return
            await asyncio.sleep(0.05)  # poll the observable status, bounded by the deadline
        raise AssertionError(f"/healthz stayed {status}, wanted {want}")

    async with running_edge(
        tmp_path, mesh.servers["consult"].port, health_check_interval_seconds=0.1
    ) as fast:
        url = fast.url + "/healthz"
        await wait_for(url, 200)
        try:
            await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            await wait_for(url, 503)
        finally:
            await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await wait_for(url, 200)
