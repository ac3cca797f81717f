"""The cases.json patient -> the REST intake: the schema covers the format, nothing is altered,
and what the edge cannot catch (unknown keys, wrong types) is rejected naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import CASES
from tests.factories import BASELINE, DELETE, follow_up, patient
from tests.gateway.harness import intake_json as harness_intake_json
from utimesh.assist.patient import PATIENT_SCHEMA, PatientError, intake_json, patient_path
from utimesh.rules.model import HISTORY_FLAGS, RED_FLAGS, SYMPTOM_FLAGS


def _problems(p: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PatientError) as caught:
        intake_json(p)
    return dict(caught.value.problems)


def test_the_schema_declares_exactly_the_cases_json_fields() -> None:
    props = PATIENT_SCHEMA["properties"]
    assert set(props) == set(BASELINE)
    assert set(props["symptoms"]["properties"]) == {*SYMPTOM_FLAGS, "duration_days"}
    assert set(props["red_flags"]["properties"]) == set(RED_FLAGS)
    assert set(props["history"]["properties"]) == {
        *HISTORY_FLAGS,
        "allergies",
        "medications",
        "recent_antibiotics",
    }
    assert set(props["follow_up"]["properties"]) == set(follow_up(24))
    assert props["sex"]["enum"] == ["female", "male", "other", "unknown", None]
    assert "identifiers" in PATIENT_SCHEMA["description"]


@pytest.mark.skipif(not CASES, reason="no development cases")
def test_every_development_case_patient_is_accepted() -> None:
    for case in CASES:
        intake_json(case["patient"])  # raises on an unknown key or a wrong type


def test_converts_like_the_cli_and_the_gateway_tests() -> None:
    assert intake_json(patient()) == harness_intake_json()
    got = intake_json(patient(history__allergies=["Sulfa (rash) "], sex="male"))
    assert got["history"]["allergies"] == {"entries": ["Sulfa (rash) "]}  # as given
    assert got["sex"] == "SEX_MALE"
    assert got["lactating"] is False  # false is an answer, kept


def test_null_or_absent_means_not_asked() -> None:
    got = intake_json(patient(age=None, symptoms__dysuria=DELETE, follow_up=None))
    assert "age" not in got and "dysuria" not in got["symptoms"] and "follow_up" not in got


def test_impossible_values_are_left_to_the_service() -> None:
    assert intake_json(patient(age=130))["age"] == 130


def test_unknown_keys_are_rejected_at_any_depth() -> None:
    got = _problems(
        patient(
            name="Jane Doe",
            history__health_card="1234",
            history__recent_antibiotics=[{"drug": "amoxicillin", "days_ago": 3, "mrn": "x"}],
        )
    )
    assert got == {
        "intake.name": "is not an intake field",
        "intake.history.health_card": "is not an intake field",
        "intake.history.recent_antibiotics[0].mrn": "is not an intake field",
    }


def test_wrong_types_are_rejected_naming_the_field() -> None:
    got = _problems(patient(age="thirty", symptoms__dysuria="yes", history__medications=[7]))
    assert got == {
        "intake.age": "must be a whole number",
        "intake.symptoms.dysuria": "must be true or false",
        "intake.history.medications[0]": "must be text",
    }


def test_a_whole_case_is_refused_with_a_hint() -> None:
    got = _problems({"id": "ON-001", "profile": "CA-ON", "patient": patient()})
    assert "intake.id" in got and "patient" in got["intake"]


def test_error_text_lists_every_problem() -> None:
    with pytest.raises(
        PatientError,
        match=r"^intake\.x: is not an intake field; intake\.age: must be a whole number$",
    ):
        intake_json(patient(age=1.5, x=1))


@pytest.mark.parametrize(
    ("edge_field", "expected"),
    [
        ("intake.age", "intake.age"),
        ("intake.history.allergies.entries[0]", "intake.history.allergies[0]"),
        (
            "intake.history.recent_antibiotics.entries[2].days_ago",
            "intake.history.recent_antibiotics[2].days_ago",
        ),
        ("intake.history.medications.entries", "intake.history.medications"),
        ("max_rounds", "max_rounds"),
    ],
)
def test_edge_paths_are_shown_in_patient_terms(edge_field: str, expected: str) -> None:
    assert patient_path(edge_field) == expected
