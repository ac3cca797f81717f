"""Test patients: a complete, treatable baseline intake in cases.json format, plus overrides."""

from __future__ import annotations

from typing import Any

from utimesh.evaluation.authored import BASELINE, DELETE, patient

# One baseline for the tests and the evaluation datasets (utimesh.evaluation.authored).
__all__ = ["BASELINE", "DELETE", "follow_up", "patient"]


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
