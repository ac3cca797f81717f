"""The schema the strict-JSON check is generated from (gateway.strict_json): the keys the
transcoder accepts per message, what each value is, and which requests carry a body. The Lua
script itself runs in a real Envoy in test_strict_json_envoy.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.descriptor import build_with_protoc, descriptor_set_from_modules, load_descriptor_set
from gateway.settings import CONSULT_SERVICE, EDGE_SERVICES
from gateway.strict_json import (
    MapOf,
    Schema,
    SchemaError,
    build_schema,
    generate,
    json_name,
    lua_pattern,
    lua_string,
)
from tests.gateway.harness import THINGS_PROTO, THINGS_SERVICE, compile_proto

CLINICAL = "utimesh.clinical.v1"
CONSULT = "utimesh.consult.v1"
THINGS = "test.strict.v1"


@pytest.fixture(scope="module")
def consult_schema() -> Schema:
    return build_schema(descriptor_set_from_modules(), [CONSULT_SERVICE])


@pytest.fixture(scope="module")
def things_schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    fds = compile_proto(tmp_path_factory.mktemp("things"), "things.proto", THINGS_PROTO)
    return build_schema(fds, [THINGS_SERVICE])


def test_default_json_names_are_protocs(tmp_path: Path) -> None:
    """The generated-code descriptors carry no json_name, so it is derived: exactly as protoc."""
    fds = load_descriptor_set(build_with_protoc(tmp_path / "consult.pb"))
    fields = [
        f
        for file in fds.file
        if file.name.startswith("utimesh/")
        for message in file.message_type
        for f in message.field
    ]
    assert len(fields) > 100
    for f in fields:
        assert json_name(f.name) == f.json_name, f.name
    assert json_name("urologic_instrumentation_last_30d") == "urologicInstrumentationLast30d"


def test_both_descriptor_sources_give_the_same_script(tmp_path: Path) -> None:
    from_protoc = load_descriptor_set(build_with_protoc(tmp_path / "consult.pb"))
    assert generate(from_protoc, list(EDGE_SERVICES)) == generate(
        descriptor_set_from_modules(), list(EDGE_SERVICES)
    )


def test_consult_bodies(consult_schema: Schema) -> None:
    routes = {(r.method, r.template): r.body for r in consult_schema.routes}
    assert routes == {
        ("POST", "/v1/consultations"): f"{CONSULT}.CreateConsultationRequest",
        ("POST", "/v1/consultations:start"): f"{CONSULT}.StartConsultationRequest",
        ("POST", "/v1/consultations:stream"): f"{CONSULT}.StreamConsultationRequest",
        ("POST", "/v1/{name=consultations/*}:ask"): f"{CONSULT}.AskConsultationRequest",
        ("POST", "/v1/{name=consultations/*}:signOff"): f"{CONSULT}.SignOffConsultationRequest",
        ("POST", "/v1/{name=consultations/*}:followUp"): f"{CONSULT}.RecordFollowUpRequest",
        ("POST", "/v1/{name=consultations/*}:review"): f"{CONSULT}.SubmitReviewRequest",
    }
    create = consult_schema.messages[f"{CONSULT}.CreateConsultationRequest"].keys
    assert create == {
        "intake": f"{CLINICAL}.Intake",
        "profile": None,
        "request_id": None,
        "requestId": None,
        "max_rounds": None,
        "maxRounds": None,
        "patient_id": None,
        "patientId": None,
    }
    # The path-bound `name` is a known key too (the transcoder rejects a body/path collision).
    assert set(consult_schema.messages[f"{CONSULT}.AskConsultationRequest"].keys) == {
        "name",
        "question",
    }


def test_operation_bodies_are_checked_too() -> None:
    schema = build_schema(descriptor_set_from_modules(), list(EDGE_SERVICES))
    routes = {(r.method, r.template): r.body for r in schema.routes}
    cancel = routes[("POST", "/v1/{name=operations/**}:cancel")]
    assert cancel == "google.longrunning.CancelOperationRequest"
    assert set(schema.messages[cancel].keys) == {"name"}


def test_consult_intake_keys(consult_schema: Schema) -> None:
    intake = consult_schema.messages[f"{CLINICAL}.Intake"].keys
    assert intake["red_flags"] == intake["redFlags"] == f"{CLINICAL}.RedFlags"
    assert intake["symptoms"] == f"{CLINICAL}.Symptoms"
    assert intake["sex"] is None and intake["egfrMlMin"] is None
    history = consult_schema.messages[f"{CLINICAL}.History"].keys
    assert history["recentAntibiotics"] == f"{CLINICAL}.RecentAntibioticList"
    entries = consult_schema.messages[f"{CLINICAL}.RecentAntibioticList"].keys["entries"]
    assert entries == f"{CLINICAL}.RecentAntibiotic"
    assert consult_schema.messages[f"{CLINICAL}.FreeTextList"].keys == {"entries": None}
    assert set(consult_schema.messages[f"{CLINICAL}.RecentAntibiotic"].keys) == {
        "drug",
        "days_ago",
        "daysAgo",
    }
    # Only what a request body can reach: no response types.
    assert f"{CONSULT}.Consultation" not in consult_schema.messages


def test_maps_well_known_types_and_bindings(things_schema: Schema) -> None:
    routes = {(r.method, r.template): r.body for r in things_schema.routes}
    assert routes == {
        # body: "thing" -> the body is a Thing, not the request
        ("POST", "/v1/{parent=shelves/*}/things"): f"{THINGS}.Thing",
        ("PUT", "/v1/things"): f"{THINGS}.CreateThingRequest",
        ("LOCK", "/v1/{name=things/*}:touch"): f"{THINGS}.TouchRequest",
        # GET (no body) and the raw HttpBody upload are not checked.
    }
    thing = things_schema.messages[f"{THINGS}.Thing"].keys
    assert thing["parts"] == MapOf(
        values=f"{THINGS}.Thing.Part", entry=f"{THINGS}.Thing.PartsEntry"
    )
    assert thing["labels"] == MapOf(values=None, entry=f"{THINGS}.Thing.LabelsEntry")
    assert thing["extra"] is None and thing["payload"] is None and thing["when"] is None
    assert thing["history"] == thing["main"] == f"{THINGS}.Thing.Part"
    assert thing["parentThing"] == f"{THINGS}.Thing"  # recursion terminates
    assert "odd" in thing and "Odd-Name" in thing and "oddName" not in thing
    assert set(things_schema.messages[f"{THINGS}.Thing.PartsEntry"].keys) == {"key", "value"}
    # google.protobuf.Empty is an ordinary message without fields: any key is unknown.
    assert things_schema.messages["google.protobuf.Empty"].keys == {}
    assert "google.protobuf.Struct" not in things_schema.messages


def test_unknown_service_is_an_error() -> None:
    with pytest.raises(SchemaError, match=r"no\.such\.Service"):
        build_schema(descriptor_set_from_modules(), ["no.such.Service"])


@pytest.mark.parametrize(
    ("template", "pattern"),
    [
        ("/v1/consultations", "^/v1/consultations$"),
        ("/v1/consultations:stream", "^/v1/consultations:stream$"),
        ("/v1/{name=consultations/*}:ask", "^/v1/consultations/[^/]*:ask$"),
        ("/v1/{name}", "^/v1/[^/]*$"),
        ("/v1/{name=things/**}", "^/v1/things.*$"),
        ("/v1/{parent=shelves/*}/books/{book}", "^/v1/shelves/[^/]*/books/[^/]*$"),
        ("/v1/a.b-c+d(e)", "^/v1/a%.b%-c%+d%(e%)$"),
    ],
)
def test_templates_become_anchored_lua_patterns(template: str, pattern: str) -> None:
    assert lua_pattern(template) == pattern


def test_lua_string_literals_are_plain_ascii() -> None:
    assert lua_string('a"b\\c') == '"a\\"b\\\\c"'
    assert lua_string("é\n") == '"\\195\\169\\010"'
