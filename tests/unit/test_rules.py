"""Table-driven rule tests: boundaries and branches of RULES.md, one readable id per row.

Each row: profile, patient overrides, expected decision, expected agent (or None), rules that
must fire, rules that must not fire. Assertion messages name the rules, so changing a clinical
rule or parameter in data/ shows up here by rule id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import CASES
from tests.factories import DELETE, follow_up, patient
from utimesh.rules import Agent, Decision, TriageEngine, parse_intake


@dataclass(frozen=True)
class Row:
    id: str
    overrides: dict[str, Any]
    decision: Decision
    agent: Agent | None = None
    fire: tuple[str, ...] = ()
    not_fire: tuple[str, ...] = ()
    profile: str = "CA-ON"
    warnings: tuple[str, ...] | None = None  # exact set when given
    notes: str = field(default="", compare=False)


T, N, R = Decision.RECOMMEND_TREATMENT, Decision.NO_ANTIBIOTICS, Decision.REFER
NO_DYSURIA = {"symptoms__dysuria": False}

ROWS = [
    # --- DATA-001: missing answers and impossible values --------------------------------------
    Row("DATA-001 age missing", {"age": None}, R, fire=("DATA-001",), not_fire=("SX-001",)),
    Row("DATA-001 age key absent", {"age": DELETE}, R, fire=("DATA-001",)),
    Row("DATA-001 age 121", {"age": 121}, R, fire=("DATA-001",)),
    Row("DATA-001 age as text", {"age": "thirty"}, R, fire=("DATA-001",)),
    Row("DATA-001 negative kidney function", {"egfr_ml_min": -1}, R, fire=("DATA-001",)),
    Row("DATA-001 gestational weeks 46", {"gestational_weeks": 46}, R, fire=("DATA-001",)),
    Row("DATA-001 sex not in enum", {"sex": "f"}, R, fire=("DATA-001",)),
    Row("DATA-001 symptom null", {"symptoms__urgency": None}, R, fire=("DATA-001",)),
    Row("DATA-001 medications not recorded", {"history__medications": None}, R, fire=("DATA-001",)),
    Row(
        "DATA-001 antibiotic days_ago negative",
        {"history__recent_antibiotics": [{"drug": "amoxicillin", "days_ago": -3}]},
        R,
        fire=("DATA-001",),
    ),
    Row(
        "DATA-001 prior episode onset after assessment",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2026-03-05", "treated": False, "treatment_end_date": None}
            ]
        },
        R,
        fire=("DATA-001",),
    ),
    Row(
        "DATA-001 prior episode ends before onset",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2025-10-05", "treated": True, "treatment_end_date": "2025-10-01"}
            ]
        },
        R,
        fire=("DATA-001",),
    ),
    Row(
        "DATA-001 malformed assessment date",
        {"assessment_date": "01/03/2026"},
        R,
        fire=("DATA-001",),
    ),
    Row(
        "DATA-001 follow-up visit without answers",
        {"encounter_type": "follow_up"},
        R,
        fire=("DATA-001",),
    ),
    Row(
        "pregnancy status may be null for a male",
        {"sex": "male", "pregnancy_status": None},
        R,
        fire=("CX-001",),
        not_fire=("DATA-001",),
    ),
    Row(
        "follow-up answers ignored at an initial visit",
        {"follow_up": follow_up(None)},
        T,
        Agent.NIT,
        not_fire=("DATA-001",),
    ),
    # --- red flags ------------------------------------------------------------------------------
    Row(
        "RF-001 fever without urinary criteria",
        {**NO_DYSURIA, "red_flags__fever": True},
        R,
        fire=("RF-001",),
        not_fire=("SX-002",),
    ),
    Row(
        "RF-005 systemic illness",
        {"red_flags__systemic_illness": True},
        R,
        fire=("RF-005",),
        not_fire=("SX-001",),
    ),
    Row("RF-006 criteria met with delirium", {"symptoms__delirium": True}, R, fire=("RF-006",)),
    Row(
        "RF-006 needs criteria: confusion alone is SX-003",
        {**NO_DYSURIA, "symptoms__confusion": True},
        R,
        fire=("SX-002", "SX-003"),
        not_fire=("RF-006",),
    ),
    Row(
        "RF-002 at a follow-up visit",
        {
            "encounter_type": "follow_up",
            "follow_up": follow_up(24, improved=True),
            "red_flags__rigors_chills": True,
        },
        R,
        fire=("RF-002",),
        not_fire=("FU-006",),
    ),
    # --- follow-up ------------------------------------------------------------------------------
    Row(
        "FU-004 not improved at 48 h",
        {"encounter_type": "follow_up", "follow_up": follow_up(48)},
        R,
        fire=("FU-004",),
    ),
    Row(
        "FU-006 not improved at 47.9 h",
        {"encounter_type": "follow_up", "follow_up": follow_up(47.9)},
        N,
        fire=("FU-006",),
        not_fire=("FU-004",),
    ),
    Row(
        "FU-003 worse at 6 h",
        {"encounter_type": "follow_up", "follow_up": follow_up(6, worsened=True)},
        R,
        fire=("FU-003",),
    ),
    Row(
        "FU-005 serious adverse effect while improved",
        {
            "encounter_type": "follow_up",
            "follow_up": follow_up(60, improved=True, serious_adverse_effect=True),
        },
        R,
        fire=("FU-005",),
    ),
    Row(
        "FU-006 improved at 72 h",
        {"encounter_type": "follow_up", "follow_up": follow_up(72, improved=True)},
        N,
        fire=("FU-006",),
        not_fire=("SX-001", "FU-001"),
    ),
    # --- symptom criteria ---------------------------------------------------------------------
    Row(
        "SX-001 urgency and frequency are one item",
        {**NO_DYSURIA, "symptoms__urgency": True, "symptoms__frequency": True},
        N,
        fire=("SX-002",),
    ),
    Row(
        "SX-001 frequency and suprapubic pain",
        {**NO_DYSURIA, "symptoms__frequency": True, "symptoms__suprapubic_pain": True},
        T,
        Agent.NIT,
        fire=("SX-001",),
    ),
    Row(
        "SX-001 cloudy urine is never a criterion",
        {**NO_DYSURIA, "symptoms__cloudy_or_malodorous_urine": True, "symptoms__urgency": True},
        N,
        fire=("SX-002",),
    ),
    Row(
        "SX-004 isolated hematuria",
        {**NO_DYSURIA, "symptoms__hematuria": True},
        R,
        fire=("SX-002", "SX-004"),
    ),
    Row(
        "SX-005 ASB not treated",
        {**NO_DYSURIA, "urine_test_positive": True},
        N,
        fire=("SX-002", "SX-005"),
        not_fire=("SX-006", "SX-009"),
    ),
    Row(
        "SX-006 ASB in pregnancy",
        {
            **NO_DYSURIA,
            "urine_test_positive": True,
            "pregnancy_status": "pregnant",
            "gestational_weeks": 20,
        },
        R,
        fire=("SX-005", "SX-006", "PREG-005"),
    ),
    Row(
        "SX-009 ASB on prednisone",
        {
            **NO_DYSURIA,
            "urine_test_positive": True,
            "history__medications": ["Prednisone 20 mg daily"],
        },
        R,
        fire=("SX-005", "SX-009"),
    ),
    Row(
        "SX-008 urgency alone for 15 days",
        {**NO_DYSURIA, "symptoms__urgency": True, "symptoms__duration_days": 15},
        R,
        fire=("SX-002", "SX-008"),
    ),
    Row(
        "SX-008 dysuria for 15 days", {"symptoms__duration_days": 15}, R, fire=("SX-001", "SX-008")
    ),
    Row(
        "SX-008 boundary 14 days treats",
        {"symptoms__duration_days": 14},
        T,
        Agent.NIT,
        not_fire=("SX-008",),
    ),
    Row(
        "SX-008 duration unknown treats",
        {"symptoms__duration_days": None},
        T,
        Agent.NIT,
        not_fire=("SX-008",),
    ),
    Row(
        "SX-007 vaginal discharge",
        {"symptoms__vaginal_discharge_or_itch": True},
        R,
        fire=("SX-007",),
    ),
    # --- complicating factors -----------------------------------------------------------------
    Row("CX-001 sex unknown", {"sex": "unknown"}, R, fire=("CX-001",)),
    Row("CX-001 sex other", {"sex": "other", "pregnancy_status": None}, R, fire=("CX-001",)),
    Row(
        "female who cannot be pregnant treats", {"pregnancy_status": "not_applicable"}, T, Agent.NIT
    ),
    Row(
        "CX-002 + PREG-003/004 at 40 weeks",
        {"pregnancy_status": "pregnant", "gestational_weeks": 40},
        R,
        fire=("CX-002", "PREG-001", "PREG-003", "PREG-004"),
        not_fire=("PREG-002",),
    ),
    Row("CX-003 pregnancy not excluded", {"pregnancy_status": "unknown"}, R, fire=("CX-003",)),
    Row("CX-004 age 15", {"age": 15}, R, fire=("CX-004",)),
    Row("CX-004 age 15 in CA-AB", {"age": 15}, R, fire=("CX-004",), profile="CA-AB"),
    Row(
        "CX-006 poorly controlled diabetes",
        {"history__diabetes": True, "history__diabetes_poorly_controlled": True},
        R,
        fire=("CX-006",),
    ),
    Row("CX-011 CA-ON kidney function 59.9", {"egfr_ml_min": 59.9}, R, fire=("CX-011",)),
    Row(
        "CX-011 CA-ON kidney function 60 treats",
        {"egfr_ml_min": 60},
        T,
        Agent.NIT,
        not_fire=("CX-011",),
    ),
    Row(
        "CX-011 CA-AB kidney function 29", {"egfr_ml_min": 29}, R, fire=("CX-011",), profile="CA-AB"
    ),
    Row(
        "CX-011 renal dysfunction flag, kidney function normal",
        {"history__renal_dysfunction": True, "egfr_ml_min": 90},
        R,
        fire=("CX-011",),
    ),
    Row(
        "CX-013 brand immunosuppressant",
        {"history__medications": ["Imuran 50 mg"]},
        R,
        fire=("CX-013",),
    ),
    Row(
        "CX-014 infant under one month",
        {"lactating": True, "history__breastfeeding_infant_under_1_month": True},
        R,
        fire=("CX-014",),
    ),
    Row(
        "CX-015 allopurinol",
        {"history__medications": ["allopurinol 100 mg daily"]},
        R,
        fire=("CX-015",),
    ),
    Row(
        "all complicating factors are collected",
        {"sex": "male", "age": 15, "history__catheter": True, "history__stones": True},
        R,
        fire=("CX-001", "CX-004", "CX-007", "CX-009"),
    ),
    # --- relapse and recurrence -----------------------------------------------------------------
    Row(
        "REC-001 treatment ended 28 days ago",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2026-01-25", "treated": True, "treatment_end_date": "2026-02-01"}
            ]
        },
        R,
        fire=("REC-001",),
    ),
    Row(
        "REC-001 treatment ended 29 days ago treats",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2026-01-25", "treated": True, "treatment_end_date": "2026-01-31"}
            ]
        },
        T,
        Agent.NIT,
        not_fire=("REC-001",),
    ),
    Row(
        "REC-001 untreated onset 28 days ago",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2026-02-01", "treated": False, "treatment_end_date": None}
            ]
        },
        R,
        fire=("REC-001",),
    ),
    Row(
        "REC-001 still on treatment",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2026-02-25", "treated": True, "treatment_end_date": "2026-03-03"}
            ]
        },
        R,
        fire=("REC-001",),
    ),
    Row(
        "REC-002 two onsets within 182 days",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2025-12-01", "treated": True, "treatment_end_date": "2025-12-06"},
                {"onset_date": "2025-08-31", "treated": True, "treatment_end_date": "2025-09-05"},
            ]
        },
        R,
        fire=("REC-002",),
        not_fire=("REC-003",),
    ),
    Row(
        "REC-002 second onset 183 days ago treats",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2025-12-01", "treated": True, "treatment_end_date": "2025-12-06"},
                {"onset_date": "2025-08-30", "treated": True, "treatment_end_date": "2025-09-04"},
            ]
        },
        T,
        Agent.NIT,
        not_fire=("REC-002",),
    ),
    Row(
        "REC-003 three onsets within 365 days",
        {
            "recurrence__prior_episodes": [
                {"onset_date": "2025-12-01", "treated": True, "treatment_end_date": None},
                {"onset_date": "2025-06-01", "treated": True, "treatment_end_date": None},
                {"onset_date": "2025-03-01", "treated": True, "treatment_end_date": None},
            ]
        },
        R,
        fire=("REC-003",),
        not_fire=("REC-002",),
    ),
    # --- drug selection and exclusions --------------------------------------------------------
    Row(
        "RX-NIT-01 brand allergy selects SXT in CA-ON",
        {"history__allergies": ["Macrodantin"]},
        T,
        Agent.SXT,
        fire=("RX-NIT-01", "RX-SEL-SXT"),
    ),
    Row(
        "RX-NIT-01 brand allergy selects FOS in CA-AB",
        {"history__allergies": ["Macrodantin"]},
        T,
        Agent.FOS,
        fire=("RX-NIT-01", "RX-SEL-FOS"),
        profile="CA-AB",
    ),
    Row(
        "RX-NIT-02 CA-AB kidney function 39",
        {"egfr_ml_min": 39, "age": 50},
        T,
        Agent.FOS,
        fire=("RX-NIT-02",),
        profile="CA-AB",
    ),
    Row(
        "W-NIT-RENAL CA-AB kidney function 40",
        {"egfr_ml_min": 40, "age": 50},
        T,
        Agent.NIT,
        fire=("W-NIT-RENAL",),
        not_fire=("RX-NIT-02",),
        profile="CA-AB",
        warnings=("W-NIT-RENAL",),
    ),
    Row(
        "RX-NIT-03 G6PD deficiency CA-ON",
        {"history__g6pd_deficiency": True},
        T,
        Agent.TMP,
        fire=("RX-NIT-03", "RX-SXT-03", "RX-SEL-TMP"),
    ),
    Row(
        "RX-SXT-01 sulfa allergy does not exclude TMP",
        {"history__allergies": ["nitrofurantoin", "sulpha"]},
        T,
        Agent.TMP,
        fire=("RX-SXT-01",),
        not_fire=("RX-TMP-01",),
    ),
    Row(
        "RX-TMP-01 trimethoprim allergy excludes SXT and TMP",
        {"history__allergies": ["nitrofurantoin", "Trimethoprim"]},
        T,
        Agent.FOS,
        fire=("RX-SXT-01", "RX-TMP-01"),
    ),
    Row(
        "RX-SXT-05 trimethoprim 90 days ago",
        {
            "history__allergies": ["nitrofurantoin"],
            "history__recent_antibiotics": [{"drug": "Septra DS", "days_ago": 90}],
        },
        T,
        Agent.FOS,
        fire=("RX-SXT-05", "RX-TMP-04", "W-ABX-RECENT"),
    ),
    Row(
        "RX-SXT-05 trimethoprim 91 days ago",
        {
            "history__allergies": ["nitrofurantoin"],
            "history__recent_antibiotics": [{"drug": "trimethoprim", "days_ago": 91}],
        },
        T,
        Agent.SXT,
        not_fire=("RX-SXT-05",),
        warnings=("W-ABX-RECENT",),
    ),
    Row(
        "RX-SXT-06 off in CA-ON",
        {
            "history__allergies": ["nitrofurantoin"],
            "history__recent_antibiotics": [{"drug": "amoxicillin", "days_ago": 30}],
        },
        T,
        Agent.SXT,
        not_fire=("RX-SXT-06",),
    ),
    Row(
        "RX-SXT-06 CA-AB any antibiotic within 180 days",
        {
            "history__allergies": ["nitrofurantoin", "fosfomycin"],
            "history__recent_antibiotics": [{"drug": "amoxicillin", "days_ago": 180}],
        },
        T,
        Agent.TMP,
        fire=("RX-SXT-06",),
        profile="CA-AB",
    ),
    Row(
        "W-ABX-RECENT boundary 181 days",
        {"history__recent_antibiotics": [{"drug": "amoxicillin", "days_ago": 181}]},
        T,
        Agent.NIT,
        not_fire=("W-ABX-RECENT",),
        warnings=(),
    ),
    Row(
        "RX-FOS-02 age 17 with every other agent excluded",
        {"age": 17, "history__allergies": ["nitrofurantoin", "bactrim"]},
        R,
        fire=("RX-FOS-02", "RX-NONE-001"),
    ),
    Row(
        "RX-NONE-001 every agent excluded",
        {"history__allergies": ["nitrofurantoin", "co-trimoxazole", "fosfomycin"]},
        R,
        fire=("RX-NONE-001",),
    ),
    # --- interactions -------------------------------------------------------------------------
    Row(
        "DDI-002 lisinopril at 65",
        {
            "age": 65,
            "egfr_ml_min": 80,
            "history__allergies": ["nitrofurantoin"],
            "history__medications": ["Lisinopril 10 mg daily"],
        },
        T,
        Agent.FOS,
        fire=("DDI-002",),
        not_fire=("DDI-003",),
    ),
    Row(
        "DDI-002 ARB with kidney function 45 in CA-AB",
        {
            "age": 50,
            "egfr_ml_min": 45,
            "history__allergies": ["nitrofurantoin", "monurol"],
            "history__medications": ["valsartan 80 mg"],
        },
        R,
        fire=("DDI-002", "RX-NONE-001"),
        profile="CA-AB",
    ),
    Row(
        "DDI-003 ARB without risk warns",
        {"history__allergies": ["nitrofurantoin"], "history__medications": ["candesartan 8 mg"]},
        T,
        Agent.SXT,
        fire=("DDI-003",),
        warnings=("DDI-003",),
    ),
    Row(
        "DDI-004 potassium supplement alone",
        {
            "history__allergies": ["nitrofurantoin"],
            "history__medications": ["potassium chloride 20 mEq"],
        },
        T,
        Agent.SXT,
        warnings=("DDI-004",),
    ),
    Row(
        "DDI-001 spironolactone excludes TMP agents",
        {"history__allergies": ["nitrofurantoin"], "history__medications": ["Aldactone 25 mg"]},
        T,
        Agent.FOS,
        fire=("DDI-001",),
        not_fire=("DDI-004",),
    ),
    Row(
        "DDI-013 dofetilide",
        {"history__allergies": ["nitrofurantoin"], "history__medications": ["Tikosyn 500 mcg BID"]},
        T,
        Agent.FOS,
        fire=("DDI-013",),
    ),
    Row(
        "DDI-015 probenecid excludes NIT",
        {"history__medications": ["probenecid 500 mg BID"]},
        T,
        Agent.SXT,
        fire=("DDI-015",),
    ),
    Row(
        "DDI-016 not evaluated after NIT is selected",
        {"history__medications": ["metoclopramide 10 mg"]},
        T,
        Agent.NIT,
        not_fire=("DDI-016",),
    ),
    Row(
        "DDI-007 + DDI-014 monitor with NIT",
        {"history__medications": ["warfarin", "magnesium trisilicate"]},
        T,
        Agent.NIT,
        warnings=("DDI-007", "DDI-014"),
    ),
    Row(
        "DDI-017 digoxin monitor with SXT",
        {"history__allergies": ["nitrofurantoin"], "history__medications": ["Lanoxin 0.125 mg"]},
        T,
        Agent.SXT,
        warnings=("DDI-017",),
    ),
    # --- warnings -------------------------------------------------------------------------------
    Row(
        "W-AGE65 + W-RENAL-UNKNOWN",
        {"age": 80},
        T,
        Agent.NIT,
        warnings=("W-AGE65", "W-RENAL-UNKNOWN"),
    ),
    Row("W-ADOLESCENT at 16", {"age": 16}, T, Agent.NIT, warnings=("W-ADOLESCENT",)),
    Row("W-DM controlled diabetes", {"history__diabetes": True}, T, Agent.NIT, warnings=("W-DM",)),
    Row(
        "W-HOSP and W-LACT",
        {"history__hospitalized_last_90d": True, "lactating": True},
        T,
        Agent.NIT,
        warnings=("W-HOSP", "W-LACT"),
    ),
    Row(
        "W-SULFA-NONABX only when SXT is selected",
        {"history__allergies": ["furosemide"]},
        T,
        Agent.NIT,
        warnings=(),
    ),
    Row(
        "W-SULFA-NONABX with SXT",
        {"history__allergies": ["furosemide", "nitrofurantoin"]},
        T,
        Agent.SXT,
        warnings=("W-SULFA-NONABX",),
    ),
    Row(
        "warnings only with treatment",
        {"age": 80, "red_flags__fever": True},
        R,
        not_fire=("W-AGE65",),
        warnings=(),
    ),
]


def _run(engine: TriageEngine, row: Row) -> Any:
    return engine.assess(parse_intake(patient(**row.overrides)), row.profile)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_rule(engine: TriageEngine, row: Row) -> None:
    a = _run(engine, row)
    fired = set(a.rule_ids)
    why = f"rules fired: {', '.join(a.rule_ids)}"
    assert a.decision is row.decision, why
    assert (a.regimen.agent if a.regimen else None) is row.agent, why
    assert not [r for r in row.fire if r not in fired], (
        f"must fire {[r for r in row.fire if r not in fired]}; {why}"
    )
    assert not [r for r in row.not_fire if r in fired], (
        f"must not fire {[r for r in row.not_fire if r in fired]}; {why}"
    )
    if row.warnings is not None:
        assert set(a.warning_ids) == set(row.warnings)
    if a.decision is not Decision.RECOMMEND_TREATMENT:
        assert a.warnings == () and a.eligible_regimens == () and a.regimen is None


def test_eligible_regimens_follow_the_drug_order_with_reasons(engine: TriageEngine) -> None:
    a = engine.assess(
        parse_intake(
            patient(history__allergies=["Macrobid"], history__medications=["metoclopramide"])
        ),
        "CA-AB",
    )
    assert [r.agent for r in a.eligible_regimens] == [Agent.SXT, Agent.TMP]
    assert a.regimen == a.eligible_regimens[0]
    reasons = {e.agent: [h.rule_id for h in e.exclusions] for e in a.agent_evaluations}
    assert reasons == {
        Agent.NIT: ["RX-NIT-01"],
        Agent.FOS: ["DDI-016"],
        Agent.SXT: [],
        Agent.TMP: [],
    }
    # RULES.md §5: agents after the selected one do not appear in rules_fired.
    assert a.rule_ids == ("SX-001", "RX-NIT-01", "DDI-016", "RX-SEL-SXT", "FU-001", "FU-002")


def test_data_001_names_the_missing_fields(engine: TriageEngine) -> None:
    a = engine.assess(parse_intake(patient(age=None, red_flags__fever=None)), None)
    assert a.rules_fired[0].detail == "not answered: age, red_flags.fever"
    assert [p.path for p in a.problems] == ["age", "red_flags.fever"]


def test_every_reachable_rule_is_exercised(engine: TriageEngine) -> None:
    """Every catalogued rule fires in a case or a row above, except those RULES.md §13 calls
    unreachable by construction (and RX-001, the ordering principle itself)."""
    fired: set[str] = set()
    for row in ROWS:
        fired |= set(_run(engine, row).rule_ids)
    for case in CASES:
        fired |= set(engine.assess(parse_intake(case["patient"]), case["profile"]).rule_ids)
    unreachable = {"RX-001", "RX-SXT-02", "RX-TMP-02", "DDI-008"}
    catalogue = set(engine.knowledge.ruleset().rules)
    assert sorted(catalogue - unreachable - fired) == []
    assert not fired & unreachable
