"""strict_json_schema: pydantic schemas turned into what OpenAI strict structured outputs accept."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from utimesh.llm import strict_json_schema


class Concern(BaseModel):
    severity: Literal["low", "moderate", "high"]
    text: str
    drug: str | None = None


class Review(BaseModel):
    """A pharmacist's review."""

    verdict: Literal["approve", "revise", "reject"] = Field(description="the decision")
    primary: Concern = Field(description="the most important concern")  # $ref with a sibling
    concerns: list[Concern] = []
    monitoring: list[str] = []
    confidence: float = 0.5


class Node(BaseModel):
    label: str
    children: list[Node] = []
    parent: Node | None = Field(default=None, description="recursive, with a sibling keyword")


class Counts(BaseModel):
    counts: dict[str, int]


def objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield node
        for value in node.values():
            yield from objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from objects(item)


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            # Property names are not keywords: a field called "default" must survive.
            yield from (keys(value) if key != "properties" else _property_keys(value))
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


def _property_keys(properties: dict[str, Any]) -> Iterator[str]:
    for value in properties.values():
        yield from keys(value)


def test_every_object_is_closed_and_requires_all_its_properties() -> None:
    schema = strict_json_schema(Review)
    found = list(objects(schema))
    assert len(found) >= 3  # Review, the inlined primary Concern, Concern in $defs
    for obj in found:
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    assert schema["required"] == ["verdict", "primary", "concerns", "monitoring", "confidence"]


def test_defaults_dropped_and_ref_siblings_inlined() -> None:
    schema = strict_json_schema(Review)
    assert "default" not in set(keys(schema))
    primary = schema["properties"]["primary"]
    assert "$ref" not in primary
    assert primary["description"] == "the most important concern"
    assert primary["properties"]["severity"]["enum"] == ["low", "moderate", "high"]
    # A plain reference stays a reference into the kept $defs.
    assert schema["properties"]["concerns"]["items"] == {"$ref": "#/$defs/Concern"}
    assert schema["$defs"]["Concern"]["required"] == ["severity", "text", "drug"]


def test_the_source_schema_is_not_modified() -> None:
    before = Review.model_json_schema()
    strict_json_schema(Review)
    assert Review.model_json_schema() == before


def test_recursive_models_keep_their_references() -> None:
    schema = strict_json_schema(Node)
    assert schema["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    node = schema["$defs"]["Node"]
    assert node["additionalProperties"] is False
    assert node["required"] == ["label", "children", "parent"]


def test_a_strict_answer_still_validates_against_the_model() -> None:
    # What a model writes under the strict schema (every field present) is a valid Review.
    answer = {
        "verdict": "revise",
        "primary": {"severity": "high", "text": "interaction", "drug": None},
        "concerns": [],
        "monitoring": ["renal function"],
        "confidence": 0.9,
    }
    assert Review.model_validate(answer).primary.severity == "high"


def test_free_form_mappings_are_refused() -> None:
    with pytest.raises(ValueError, match="free-form mapping"):
        strict_json_schema(Counts)
