"""The checked-in OpenAPI document: fresh, complete, and in the JSON the transcoder speaks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.openapi import OPENAPI_PATH, generate
from gateway.policy import roles_for
from utimesh.consult.v1 import consult_pb2

SERVICE = consult_pb2.DESCRIPTOR.services_by_name["ConsultationService"]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
    return data


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        op["operationId"]: op
        for item in document["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }


def test_checked_in_document_is_up_to_date() -> None:
    assert OPENAPI_PATH.read_text() == generate(), (
        "gateway/openapi.yaml is stale: run `python -m gateway.openapi`"
    )


def test_every_rpc_is_an_operation_with_its_roles(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert set(SERVICE.methods_by_name) <= set(operations)
    for name, operation in operations.items():
        if name == "Health":
            assert operation["security"] == []
            continue
        assert operation["x-utimesh-roles"] == list(roles_for(name))
        assert {"401", "403", "429"} <= set(operation["responses"])


def test_paths_follow_the_http_rules(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert set(paths["/v1/consultations"]) == {"post"}
    assert set(paths["/v1/consultations:stream"]) == {"post"}
    assert set(paths["/v1/consultations/{consultation_id}"]) == {"get"}
    ask = paths["/v1/consultations/{consultation_id}:ask"]["post"]
    assert ask["parameters"][0]["in"] == "path"
    body = ask["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"question"}, "the path-bound name is not in the body"
    stream = paths["/v1/consultations:stream"]["post"]
    assert stream["x-streaming"] == "newline-delimited-json"


def test_schemas_use_proto_field_names_and_string_enums(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    consultation = schemas["utimesh.consult.v1.Consultation"]["properties"]
    assert {"request_id", "needs_prescriber_review", "report_markdown"} <= set(consultation)
    assert not any(any(c.isupper() for c in name) for name in consultation)
    outcome = schemas["utimesh.consult.v1.Outcome"]
    assert outcome["type"] == "string" and "OUTCOME_AGREED" in outcome["enum"]
    assert "DRAFT for prescriber sign-off" in document["info"]["description"]


def test_error_body_is_a_google_rpc_status(document: dict[str, Any]) -> None:
    status = document["components"]["schemas"]["Status"]
    assert status["required"] == ["code", "message"]
    assert set(status["properties"]) == {"code", "message", "details"}
    bad = document["components"]["schemas"]["google.rpc.BadRequest"]
    assert "field_violations" in bad["properties"]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    assert refs
    for ref in refs:
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref
