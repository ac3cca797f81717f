"""Test patients: a complete, treatable baseline intake in cases.json format, plus overrides."""

from __future__ import annotations

import copy
from typing import Any

BASELINE: dict[str, Any] = {
    "encounter_type": "initial",
    "assessment_date": "2026-03-01",
    "age": 30,
    "sex": "female",
    "pregnancy_status": "not_pregnant",
    "gestational_weeks": None,
    "lactating": False,
    "egfr_ml_min": None,
    "urine_test_positive": None,
    "symptoms": {
        "dysuria": True,
        "urgency": False,
        "frequency": False,
        "suprapubic_pain": False,
        "hematuria": False,
        "vaginal_discharge_or_itch": False,
        "dyspareunia": False,
        "confusion": False,
        "delirium": False,
        "falls_or_functional_decline": False,
        "cloudy_or_malodorous_urine": False,
        "duration_days": 2,
    },
    "red_flags": {
        "fever": False,
        "rigors_chills": False,
        "flank_or_back_pain": False,
        "nausea_vomiting": False,
        "systemic_illness": False,
    },
    "history": {
        "catheter": False,
        "neurogenic_bladder": False,
        "stones": False,
        "abnormal_urinary_tract": False,
        "renal_dysfunction": False,
        "immunocompromised": False,
        "diabetes": False,
        "diabetes_poorly_controlled": False,
        "urologic_instrumentation_last_30d": False,
        "hospitalized_last_90d": False,
        "g6pd_deficiency": False,
        "megaloblastic_anemia_folate_deficiency": False,
        "prior_nitrofurantoin_pulmonary_or_hepatic_reaction": False,
        "breastfeeding_infant_under_1_month": False,
        "allergies": [],
        "medications": [],
        "recent_antibiotics": [],
    },
    "recurrence": {"prior_episodes": []},
    "follow_up": None,
}

_MISSING = object()


def patient(**overrides: Any) -> dict[str, Any]:
    """BASELINE with overrides; nested keys use "__": patient(history__allergies=["sulfa"]).
    The value `DELETE` removes the key entirely."""
    p = copy.deepcopy(BASELINE)
    for key, value in overrides.items():
        target = p
        *parents, leaf = key.split("__")
        for part in parents:
            target = target[part]
        if value is DELETE:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return p


DELETE: Any = _MISSING


def follow_up(
    hours: float | None,
    improved: bool | None = False,
    worsened: bool | None = False,
    serious_adverse_effect: bool | None = False,
) -> dict[str, Any]:
    return {
        "hours_since_treatment_start": hours,
        "improved": improved,
        "worsened": worsened,
        "serious_adverse_effect": serious_adverse_effect,
        "current_regimen": "nitrofurantoin 100 mg BID",
    }
