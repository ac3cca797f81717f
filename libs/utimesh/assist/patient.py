"""The patient an assistant passes in: the cases.json `patient` format, checked and turned into
the REST API's intake JSON (utimesh.clinical.v1.Intake with proto field names).

The conversion is the one the CLI and the tests use (`parse_intake` -> `intake_to_proto` ->
proto JSON). Two checks come first, because the REST edge cannot make them: a key that is not
an intake field is rejected (Envoy's transcoder silently drops unknown fields, and a stray
`name` or `patient_id` must not be accepted as if it were clinical data), and a value of the
wrong type is rejected naming its field (the codec would otherwise leave it unset, and triage
would refer for missing data instead of saying what was wrong). Values are never altered;
whether they are possible (age 0..120, ...) is the service's to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict

from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake
from utimesh.rules.model import (
    HISTORY_FLAGS,
    RED_FLAGS,
    SYMPTOM_FLAGS,
    EncounterType,
    PregnancyStatus,
    Sex,
)

__all__ = ["PATIENT_SCHEMA", "PatientError", "intake_json", "patient_path"]

# Free-text and antibiotic lists are wrapped in the proto (`{"entries": [...]}`), not here.
_WRAPPED_LISTS = ("history.allergies", "history.medications", "history.recent_antibiotics")


def _flag(description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["boolean", "null"]}
    if description:
        schema["description"] = description
    return schema


def _value(kind: str, description: str) -> dict[str, Any]:
    return {"type": [kind, "null"], "description": description}


def _choice(values: list[str], description: str) -> dict[str, Any]:
    return {"type": ["string", "null"], "enum": [*values, None], "description": description}


def _object(properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": ["object", "null"],
        "description": description,
        "properties": properties,
        "additionalProperties": False,
    }


def _list(items: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": ["array", "null"], "description": description, "items": items}


_FLAG_NOTES = {
    "hematuria": "Visible hematuria.",
    "cloudy_or_malodorous_urine": "Recorded, but never a criterion.",
    "fever": "Temperature >= 38.0 C or reported fever.",
    "flank_or_back_pain": "Including costovertebral-angle tenderness.",
    "systemic_illness": "Malaise, hypotension, tachycardia, sepsis.",
    "abnormal_urinary_tract": "Obstruction, reflux, stent, diversion or urological surgery.",
    "renal_dysfunction": "Any documented kidney disease or impairment.",
    "immunocompromised": "The pharmacist's judgement (chemotherapy, transplant, low-CD4 HIV, ...).",
}

_DATE = "ISO date YYYY-MM-DD."

#: JSON Schema of one patient in the cases.json format. Every field may be null (= not asked);
#: ranges are described, not enforced here: the service checks them and names the field.
PATIENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Patient",
    "description": (
        "One patient in the cases.json `patient` format. null or absent = not asked; an "
        "unanswered required question makes triage refer for missing data (DATA-001). "
        "NO identifiers: no names, ids, health-card or record numbers, addresses or dates of "
        "birth, in any field (free-text allergies and medications included)."
    ),
    "properties": {
        "encounter_type": _choice(
            [e.value for e in EncounterType], "initial visit or follow_up during a course."
        ),
        "assessment_date": _value("string", "Date of this assessment, " + _DATE),
        "age": _value("integer", "Whole years, 0..120."),
        "sex": _choice([s.value for s in Sex], "Sex assigned at birth / anatomy."),
        "pregnancy_status": _choice(
            [p.value for p in PregnancyStatus], "Required when sex is female."
        ),
        "gestational_weeks": _value("integer", "Completed weeks, 0..45; null if not pregnant."),
        "lactating": _flag(),
        "egfr_ml_min": _value(
            "number", "Kidney function in mL/min (CrCl preferred, else eGFR); null = unknown."
        ),
        "urine_test_positive": _flag("Dipstick or culture result; null = not done."),
        "symptoms": _object(
            {
                **{k: _flag(_FLAG_NOTES.get(k, "")) for k in SYMPTOM_FLAGS},
                "duration_days": _value("integer", "Whole days since symptoms began, >= 0."),
            },
            "Urinary and nonspecific symptoms: true, false, or null = not asked.",
        ),
        "red_flags": _object(
            {k: _flag(_FLAG_NOTES.get(k, "")) for k in RED_FLAGS},
            "Red flags of upper-tract or systemic infection; each must be answered.",
        ),
        "history": _object(
            {
                **{k: _flag(_FLAG_NOTES.get(k, "")) for k in HISTORY_FLAGS},
                "allergies": _list({"type": "string"}, "Free text; [] = none known."),
                "medications": _list({"type": "string"}, "Free text; [] = none known."),
                "recent_antibiotics": _list(
                    {
                        "type": "object",
                        "properties": {
                            "drug": {"type": "string", "description": "Drug name."},
                            "days_ago": {"type": "integer", "description": "Whole days, >= 0."},
                        },
                        "additionalProperties": False,
                    },
                    "Systemic antibiotics of the last 180 days or more; [] = none.",
                ),
            },
            "Medical history: true, false, or null = not asked.",
        ),
        "recurrence": _object(
            {
                "prior_episodes": _list(
                    {
                        "type": "object",
                        "properties": {
                            "onset_date": {"type": "string", "description": _DATE},
                            "treated": {"type": ["boolean", "null"]},
                            "treatment_end_date": {
                                "type": ["string", "null"],
                                "description": _DATE + " A future date = still on treatment.",
                            },
                        },
                        "additionalProperties": False,
                    },
                    "Previous UTI episodes (not this one); [] = none.",
                )
            },
            "Previous episodes.",
        ),
        "follow_up": _object(
            {
                "hours_since_treatment_start": _value("number", "Hours since the first dose."),
                "improved": _flag(),
                "worsened": _flag(),
                "serious_adverse_effect": _flag("Rash, dyspnea, jaundice, ..."),
                "current_regimen": _value("string", "Free text, informative only."),
            },
            "Answers at a follow-up visit; null at an initial visit.",
        ),
    },
    "additionalProperties": False,
}


class PatientError(ValueError):
    """A patient that cannot be sent: each problem is (intake field path, what is wrong)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {why}" for path, why in problems))


def _unknown_keys(value: Any, schema: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """Keys of `value` (recursively) that `schema` does not declare, as (path, reason)."""
    out: list[tuple[str, str]] = []
    if isinstance(value, Mapping) and "properties" in schema:
        known: Mapping[str, Any] = schema["properties"]
        for key, item in value.items():
            where = f"{path}.{key}"
            if key not in known:
                out.append((where, "is not an intake field"))
            else:
                out += _unknown_keys(item, known[key], where)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += _unknown_keys(item, schema["items"], f"{path}[{i}]")
    return out


def intake_json(patient: Mapping[str, Any]) -> dict[str, Any]:
    """The REST API's `intake` for one cases.json patient, or PatientError naming every field
    that is unknown or of the wrong type, as `intake.<path in the patient>`."""
    problems = _unknown_keys(patient, PATIENT_SCHEMA, "intake")
    if isinstance(patient.get("patient"), Mapping):
        problems.append(("intake", "pass the case's `patient` object only, without id or profile"))
    intake = parse_intake(patient)
    problems += [(f"intake.{path}", why) for path, why in intake.unreadable]
    if problems:
        raise PatientError(problems)
    return MessageToDict(intake_to_proto(intake), preserving_proto_field_name=True)


def patient_path(field: str) -> str:
    """A field path of the REST request (`intake.history.allergies.entries[0]`) in the terms
    of the patient format (`intake.history.allergies[0]`); other paths are returned as given."""
    for wrapped in _WRAPPED_LISTS:
        prefix = f"intake.{wrapped}.entries"
        if field == prefix or field.startswith((prefix + "[", prefix + ".")):
            return f"intake.{wrapped}" + field[len(prefix) :]
    return field
