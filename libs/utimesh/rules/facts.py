"""Which intake facts each rule reads, as intake field paths. Lets claims say what they rest on."""

from __future__ import annotations

from utimesh.rules.model import URINARY_SYMPTOMS

_RED_FLAGS = {
    "RF-001": ("red_flags.fever",),
    "RF-002": ("red_flags.rigors_chills",),
    "RF-003": ("red_flags.flank_or_back_pain",),
    "RF-004": ("red_flags.nausea_vomiting",),
    "RF-005": ("red_flags.systemic_illness",),
    "RF-006": ("symptoms.confusion", "symptoms.delirium"),
}
_URINARY = tuple(f"symptoms.{s}" for s in URINARY_SYMPTOMS)
_FIXED: dict[str, tuple[str, ...]] = {
    **_RED_FLAGS,
    "SX-001": _URINARY,
    "SX-002": _URINARY,
    "SX-003": ("symptoms.confusion", "symptoms.delirium", "symptoms.falls_or_functional_decline"),
    "SX-004": ("symptoms.hematuria",),
    "SX-005": ("urine_test_positive", *_URINARY),
    "SX-006": ("urine_test_positive", "pregnancy_status"),
    "SX-007": ("symptoms.vaginal_discharge_or_itch", "symptoms.dyspareunia"),
    "SX-008": ("symptoms.duration_days",),
    "SX-009": ("urine_test_positive", "history.immunocompromised", "history.medications"),
    "CX-001": ("sex",),
    "CX-002": ("pregnancy_status",),
    "CX-003": ("pregnancy_status",),
    "CX-004": ("age",),
    "CX-005": ("history.immunocompromised",),
    "CX-006": ("history.diabetes_poorly_controlled",),
    "CX-007": ("history.catheter",),
    "CX-008": ("history.neurogenic_bladder",),
    "CX-009": ("history.stones",),
    "CX-010": ("history.abnormal_urinary_tract",),
    "CX-011": ("egfr_ml_min", "history.renal_dysfunction"),
    "CX-012": ("history.urologic_instrumentation_last_30d",),
    "CX-013": ("history.medications",),
    "CX-014": ("history.breastfeeding_infant_under_1_month",),
    "CX-015": ("history.medications",),
    "RX-NIT-02": ("egfr_ml_min",),
    "RX-SXT-02": ("egfr_ml_min",),
    "RX-TMP-02": ("egfr_ml_min",),
    "RX-NIT-03": ("history.g6pd_deficiency",),
    "RX-SXT-03": ("history.g6pd_deficiency",),
    "RX-NIT-04": ("history.prior_nitrofurantoin_pulmonary_or_hepatic_reaction",),
    "RX-SXT-04": ("history.megaloblastic_anemia_folate_deficiency",),
    "RX-TMP-03": ("history.megaloblastic_anemia_folate_deficiency",),
    "RX-SXT-05": ("history.recent_antibiotics",),
    "RX-SXT-06": ("history.recent_antibiotics",),
    "RX-TMP-04": ("history.recent_antibiotics",),
    "RX-FOS-02": ("age",),
    "DDI-002": ("history.medications", "age", "egfr_ml_min"),
    "W-AGE65": ("age",),
    "W-RENAL-UNKNOWN": ("age", "egfr_ml_min"),
    "W-NIT-RENAL": ("egfr_ml_min",),
    "W-ADOLESCENT": ("age",),
    "W-DM": ("history.diabetes", "history.diabetes_poorly_controlled"),
    "W-ABX-RECENT": ("history.recent_antibiotics",),
    "W-HOSP": ("history.hospitalized_last_90d",),
    "W-LACT": ("lactating",),
    "W-SULFA-NONABX": ("history.allergies",),
    "FU-003": ("follow_up.worsened",),
    "FU-004": ("follow_up.improved", "follow_up.hours_since_treatment_start"),
    "FU-005": ("follow_up.serious_adverse_effect",),
    "FU-006": ("follow_up.improved", "follow_up.worsened", "follow_up.serious_adverse_effect"),
}


def rule_facts(rule_id: str) -> tuple[str, ...]:
    """Intake paths `rule_id` reads; () for rules that read no patient fact (e.g. FU-001)."""
    if rule_id in _FIXED:
        return _FIXED[rule_id]
    if rule_id.startswith(("PREG-",)):
        return ("pregnancy_status", "gestational_weeks")
    if rule_id.startswith("REC-"):
        return ("recurrence.prior_episodes",)
    if rule_id.endswith("-01") and rule_id.startswith("RX-"):
        return ("history.allergies",)
    if rule_id.startswith("DDI-"):
        return ("history.medications",)
    return ()
