"""The pharmacist's deterministic review: every development case with triage's own plan, then
table tests of each check, one readable id per row."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from services.pharmacist.domain.checks import (
    KNOWN_NON_INTERACTING_GROUP,
    STANDARD_MONITORING,
    allergy_exclusions,
    deterministic_review,
    interactions_firing,
    unrecognised_medications,
    verdict_for,
)
from tests.conftest import case_params
from tests.factories import patient
from tests.pharmacist.support import context_for, doctor, forged_context, proposal, triage_plan
from utimesh.agents.models import (
    OFFLINE,
    ClaimKind,
    Concern,
    PharmacistReview,
    ProposedRegimen,
    Severity,
    Verdict,
)
from utimesh.rules import Agent, Decision, Knowledge, parse_intake


def codes(review: PharmacistReview) -> list[str]:
    return [c.code for c in review.concerns]


def concern(review: PharmacistReview, code: str) -> Concern:
    found = [c for c in review.concerns if c.code == code]
    assert found, f"no {code} concern in {codes(review)}"
    return found[0]


def assert_claims_grounded(review: PharmacistReview) -> None:
    assert [c.id for c in review.claims] == [f"P{i}" for i in range(1, len(review.claims) + 1)]
    for claim in review.claims:
        assert claim.rule_ids or claim.facts, f"{claim.id} rests on nothing"


# --- every development case ------------------------------------------------------------------


@pytest.mark.parametrize("case", case_params())
def test_triage_plan_of_every_case_is_approved(knowledge: Knowledge, case: dict[str, Any]) -> None:
    ctx, ruleset = context_for(knowledge, case["patient"], case["profile"])
    review = deterministic_review(ctx, triage_plan(ctx), ruleset)

    assert review.verdict in (Verdict.APPROVE, Verdict.APPROVE_WITH_MONITORING), (
        f"{case['id']}: {review.verdict} with {[(c.code, c.rule_ids) for c in review.concerns]}"
    )
    assert not [c for c in review.concerns if c.severity is Severity.CRITICAL]
    assert review.claims, "a review states what it rests on"
    assert_claims_grounded(review)
    assert review.deterministic_checks_run and review.run.generated_by == OFFLINE
    if ctx.triage.decision is Decision.RECOMMEND_TREATMENT:
        assert STANDARD_MONITORING in review.monitoring
        assert ctx.triage.regimen is not None
        for line in ruleset.regimens[ctx.triage.regimen.agent].counselling:
            assert line in review.counselling
        # Every triage warning reappears in the review under its own rule id.
        concern_rules = {r for c in review.concerns for r in c.rule_ids}
        assert set(ctx.triage.warning_ids) <= concern_rules
    else:
        assert review.verdict is Verdict.APPROVE and review.counselling
        assert review.claims[0].kind is ClaimKind.REFERRAL


# --- table of checks ---------------------------------------------------------------------------

CIPROFLOXACIN = ProposedRegimen(
    agent=None,
    drug="ciprofloxacin",
    frequency="BID",
    route="PO",
    duration_amount=3,
    duration_unit="days",
)


@dataclass(frozen=True)
class Row:
    id: str
    overrides: dict[str, Any]
    agent: Agent | str | None  # proposed agent; "triage" = triage's regimen; None = no plan
    verdict: Verdict
    concerns: tuple[tuple[str, str, Severity], ...] = ()  # (code, rule id or "", severity)
    absent: tuple[str, ...] = ()  # concern codes that must not appear
    monitoring: tuple[str, ...] = ()  # words some monitoring line must contain
    counselling: tuple[str, ...] = ()  # words some counselling line must contain
    suggested_agent: Agent | None = None
    profile: str = "CA-ON"
    triage_of: dict[str, Any] | None = field(default=None)  # forged triage from this patient


M, C, H, L = Severity.MODERATE, Severity.CRITICAL, Severity.HIGH, Severity.LOW
NIT_ALLERGY = {"history__allergies": ["Nitrofurantoin (rash)"]}

ROWS = [
    Row("plain NIT approved", {}, "triage", Verdict.APPROVE, absent=("INTERACTION",)),
    Row(
        "warfarin with NIT: DDI-007 and INR monitoring",
        {"history__medications": ["warfarin 5 mg daily"]},
        Agent.NIT,
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("INTERACTION", "DDI-007", M),),
        monitoring=("INR",),
    ),
    Row(
        "warfarin with TMP: DDI-006",
        {"history__medications": ["Coumadin 5 mg daily"], **NIT_ALLERGY},
        Agent.TMP,
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("INTERACTION", "DDI-006", M),),
        monitoring=("INR",),
    ),
    Row(
        "warfarin with SXT: AVOID rejects",
        {"history__medications": ["warfarin 5 mg daily"], **NIT_ALLERGY},
        Agent.SXT,
        Verdict.REJECT,
        concerns=(("INTERACTION", "DDI-005", C), ("NOT_ELIGIBLE", "DDI-005", C)),
        suggested_agent=Agent.TMP,
    ),
    Row(
        "unrecognised medication",
        {"history__medications": ["zopiclone 7.5 mg qhs"]},
        Agent.NIT,
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("UNRECOGNISED_MEDICATION", "", M),),
    ),
    Row(
        "known non-interacting medication is no concern",
        {"history__medications": ["Acetaminophen 500 mg PRN", "folic acid 1 mg daily"]},
        Agent.NIT,
        Verdict.APPROVE,
        absent=("UNRECOGNISED_MEDICATION",),
    ),
    Row(
        "information-only interaction with TMP",
        {"history__medications": ["metformin 500 mg BID"], **NIT_ALLERGY},
        Agent.TMP,
        Verdict.APPROVE,
        concerns=(("INTERACTION_INFO", "", Severity.INFO),),
        absent=("UNRECOGNISED_MEDICATION",),
    ),
    Row(
        "information-only drug is known but not shown for NIT",
        {"history__medications": ["metformin 500 mg BID"]},
        Agent.NIT,
        Verdict.APPROVE,
        absent=("UNRECOGNISED_MEDICATION", "INTERACTION_INFO"),
    ),
    Row(
        "unrecognised allergy is a low concern",
        {"history__allergies": ["penicillin"]},
        Agent.NIT,
        Verdict.APPROVE,
        concerns=(("UNRECOGNISED_ALLERGY", "", L),),
    ),
    Row(
        "misspelt allergy to the proposed drug stops the plan",
        {"history__allergies": ["nitrofurantion"]},
        Agent.NIT,
        Verdict.REJECT,
        concerns=(("POSSIBLE_ALLERGY_TO_PROPOSED_DRUG", "", C),),
        absent=("UNRECOGNISED_ALLERGY",),
    ),
    Row(
        "misspelt brand of the proposed drug stops the plan",
        {"history__allergies": ["Nitrofurantoin (rash)", "Bactrum (rash)"]},
        Agent.SXT,
        Verdict.REJECT,
        concerns=(("POSSIBLE_ALLERGY_TO_PROPOSED_DRUG", "", C),),
    ),
    Row(
        "misspelt allergy to another drug is only flagged",
        {"history__allergies": ["nitrofurantion"]},
        Agent.FOS,
        Verdict.APPROVE,
        concerns=(("UNRECOGNISED_ALLERGY", "", L),),
        absent=("POSSIBLE_ALLERGY_TO_PROPOSED_DRUG",),
    ),
    Row(
        "gestational weeks with 'not pregnant' stop the plan",
        {"gestational_weeks": 20},
        "triage",
        Verdict.REJECT,
        concerns=(("PREGNANCY_CONTRADICTED", "", C),),
    ),
    Row(
        "ciprofloxacin is not eligible",
        {},
        "cipro",
        Verdict.REJECT,
        concerns=(("NOT_ELIGIBLE", "RX-001", C),),
        suggested_agent=Agent.NIT,
    ),
    Row(
        "NIT with a nitrofurantoin allergy",
        NIT_ALLERGY,
        Agent.NIT,
        Verdict.REJECT,
        concerns=(("ALLERGY", "RX-NIT-01", C), ("NOT_ELIGIBLE", "RX-NIT-01", C)),
        suggested_agent=Agent.SXT,
    ),
    Row(
        "allergy caught even when the triage result says NIT is fine",
        {"history__allergies": ["Macrobid"]},
        Agent.NIT,
        Verdict.REJECT,
        concerns=(("ALLERGY", "RX-NIT-01", C),),
        absent=("NOT_ELIGIBLE",),
        triage_of={},
    ),
    Row(
        "AVOID interaction caught even when the triage result says SXT is fine",
        {"history__medications": ["Dilantin 300 mg qhs"]},
        Agent.SXT,
        Verdict.REJECT,
        concerns=(("INTERACTION", "DDI-009", C),),
        triage_of={"history__allergies": ["Macrobid"]},
    ),
    Row(
        "pregnancy not excluded, with a stale triage result",
        {"pregnancy_status": "unknown"},
        Agent.NIT,
        Verdict.REJECT,
        concerns=(("PREGNANCY", "CX-003", C),),
        triage_of={},
    ),
    Row(
        "treatment proposed for a referral",
        {"red_flags__fever": True},
        Agent.NIT,
        Verdict.REJECT,
        concerns=(("TREATMENT_AGAINST_TRIAGE", "RF-001", C),),
    ),
    Row(
        "treatment proposed when no antibiotic is indicated",
        {"symptoms__dysuria": False},
        Agent.FOS,
        Verdict.REJECT,
        concerns=(("TREATMENT_AGAINST_TRIAGE", "SX-002", C),),
    ),
    Row(
        "referral without a prescription is approved with counselling",
        {"red_flags__fever": True},
        None,
        Verdict.APPROVE,
        counselling=("today", "leftover"),
    ),
    Row(
        "no plan for a treatment",
        {},
        None,
        Verdict.REQUEST_CHANGE,
        concerns=(("NO_PLAN", "RX-SEL-NIT", H),),
        suggested_agent=Agent.NIT,
    ),
    Row(
        "another eligible agent is fine",
        {},
        Agent.FOS,
        Verdict.APPROVE,
    ),
    Row(
        "NIT kidney warning does not follow a switch to FOS",
        {"egfr_ml_min": 50},
        Agent.FOS,
        Verdict.APPROVE,
        concerns=(("AGE", "W-AGE65", L),),
        absent=("KIDNEY_FUNCTION",),
        profile="CA-AB",
    ),
    Row(
        "NIT with reduced kidney function (CA-AB)",
        {"egfr_ml_min": 50},
        Agent.NIT,
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("KIDNEY_FUNCTION", "W-NIT-RENAL", M),),
        monitoring=("neuropathy",),
        profile="CA-AB",
    ),
    Row(
        "older adult with unknown kidney function",
        {"age": 70},
        "triage",
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("AGE", "W-AGE65", L), ("KIDNEY_FUNCTION_UNKNOWN", "W-RENAL-UNKNOWN", M)),
        monitoring=("CrCl",),
    ),
    Row(
        "non-antibiotic sulfonamide allergy with SXT",
        {"history__allergies": ["Macrobid", "furosemide"]},
        "triage",
        Verdict.APPROVE,
        concerns=(("ALLERGY_CROSS_REACTIVITY", "W-SULFA-NONABX", L),),
        counselling=("rash",),
    ),
    Row(
        "controlled diabetes: glucose monitoring",
        {"history__diabetes": True},
        "triage",
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("DIABETES", "W-DM", L),),
        monitoring=("glucose",),
    ),
    Row(
        "recent antibiotic: culture if no response",
        {"history__recent_antibiotics": [{"drug": "Amoxicillin", "days_ago": 40}]},
        "triage",
        Verdict.APPROVE_WITH_MONITORING,
        concerns=(("RECENT_ANTIBIOTIC", "W-ABX-RECENT", L),),
        monitoring=("culture",),
    ),
    Row(
        "lactation counselling",
        {"lactating": True},
        "triage",
        Verdict.APPROVE,
        concerns=(("LACTATION", "W-LACT", L),),
        counselling=("infant",),
    ),
    Row(
        "adolescent dosing",
        {"age": 16},
        "triage",
        Verdict.APPROVE,
        concerns=(("AGE", "W-ADOLESCENT", L),),
    ),
    Row(
        "dose other than the normative one is not eligible",
        {},
        "double dose",
        Verdict.REJECT,
        concerns=(("NOT_ELIGIBLE", "RX-001", C),),
    ),
]


def _proposed(row: Row, ctx: Any, ruleset: Any) -> ProposedRegimen | None:
    if row.agent is None:
        return None
    if row.agent == "triage":
        assert ctx.triage.regimen is not None
        return proposal(ruleset, ctx.triage.regimen.agent)
    if row.agent == "cipro":
        return CIPROFLOXACIN
    if row.agent == "double dose":
        nit = proposal(ruleset, Agent.NIT)
        return nit.model_copy(update={"dose": (nit.dose[0].model_copy(update={"amount": 200}),)})
    assert isinstance(row.agent, Agent)
    return proposal(ruleset, row.agent)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_check(knowledge: Knowledge, row: Row) -> None:
    subject = patient(**({"age": 70} if row.profile == "CA-AB" else {}), **row.overrides)
    if row.triage_of is None:
        ctx, ruleset = context_for(knowledge, subject, row.profile)
    else:
        ctx, ruleset = forged_context(knowledge, subject, patient(**row.triage_of), row.profile)
    review = deterministic_review(ctx, doctor(_proposed(row, ctx, ruleset)), ruleset)

    assert review.verdict is row.verdict, [(c.code, c.rule_ids) for c in review.concerns]
    for code, rule_id, severity in row.concerns:
        matching = [c for c in review.concerns if c.code == code and c.severity is severity]
        assert matching, (
            f"no {severity} {code} in {[(c.code, c.severity) for c in review.concerns]}"
        )
        if rule_id:
            assert any(rule_id in c.rule_ids for c in matching), f"{code} without {rule_id}"
    for code in row.absent:
        assert code not in codes(review)
    for word in row.monitoring:
        assert any(word in line for line in review.monitoring), review.monitoring
    for word in row.counselling:
        assert any(word in line for line in review.counselling), review.counselling
    if row.suggested_agent is not None:
        assert row.suggested_agent in {c.suggested_agent for c in review.concerns}
    assert all(c.source == "deterministic" for c in review.concerns)
    assert_claims_grounded(review)


def test_unrecognised_entry_is_quoted_for_the_clinician_but_never_in_claims(
    knowledge: Knowledge,
) -> None:
    entry = "zopiclone 7.5 mg qhs"
    ctx, ruleset = context_for(knowledge, patient(history__medications=[entry]))
    review = deterministic_review(ctx, triage_plan(ctx), ruleset)

    assert entry in concern(review, "UNRECOGNISED_MEDICATION").text
    assert not any("zopiclone" in claim.text for claim in review.claims)
    flagged = [c for c in review.claims if "history.medications" in c.facts]
    assert flagged, "the concern's claim rests on the medication list"


def test_allergy_clears_claim_names_the_exclusion_rules_checked(knowledge: Knowledge) -> None:
    ctx, ruleset = context_for(knowledge, patient())
    review = deterministic_review(ctx, triage_plan(ctx), ruleset)

    clear = review.claims[0]
    assert clear.text.startswith("No recorded allergy or interaction excludes")
    assert "RX-NIT-01" in clear.rule_ids and "DDI-015" in clear.rule_ids
    assert clear.facts == ("history.allergies", "history.medications")


def test_no_plan_suggests_the_first_eligible_agent_when_the_first_is_excluded(
    knowledge: Knowledge,
) -> None:
    ctx, ruleset = context_for(knowledge, patient(history__allergies=["Macrobid"]))
    review = deterministic_review(ctx, doctor(None), ruleset)

    assert review.verdict is Verdict.REQUEST_CHANGE
    assert concern(review, "NO_PLAN").suggested_agent is Agent.SXT


# --- the knowledge look-ups -------------------------------------------------------------------


def test_allergy_exclusions_use_the_dictionaries(knowledge: Knowledge) -> None:
    ruleset = knowledge.ruleset()
    assert [h.rule_id for h in allergy_exclusions(Agent.SXT, ["Sulfa drugs (hives)"], ruleset)] == [
        "RX-SXT-01"
    ]
    # A sulfonamide-only allergy does not exclude trimethoprim; "morphine sulfate" is not sulfa.
    assert allergy_exclusions(Agent.TMP, ["Sulfa"], ruleset) == []
    assert allergy_exclusions(Agent.SXT, ["morphine sulfate"], ruleset) == []


@pytest.mark.parametrize(
    ("overrides", "agent", "expected"),
    [
        ({"history__medications": ["Lisinopril 10 mg daily"]}, Agent.TMP, ["DDI-003"]),
        ({"history__medications": ["Lisinopril 10 mg daily"], "age": 70}, Agent.TMP, ["DDI-002"]),
        (
            {"history__medications": ["Lisinopril 10 mg daily"], "egfr_ml_min": 55},
            Agent.SXT,
            ["DDI-002"],
        ),
        ({"history__medications": ["K-Dur 20 mEq daily"]}, Agent.SXT, ["DDI-004"]),
        (
            {"history__medications": ["K-Dur 20 mEq daily", "Zestril 10 mg daily"]},
            Agent.SXT,
            ["DDI-002"],
        ),
        ({"history__medications": ["Lisinopril 10 mg daily"]}, Agent.NIT, []),
    ],
    ids=["RAS no risk", "RAS older", "RAS kidney", "potassium", "potassium and RAS", "NIT none"],
)
def test_interactions_firing(
    knowledge: Knowledge, overrides: dict[str, Any], agent: Agent, expected: list[str]
) -> None:
    intake = parse_intake(patient(**overrides))
    assert [r.id for r in interactions_firing(agent, intake, knowledge.ruleset())] == expected


def test_known_non_interacting_terms_are_in_no_interacting_group(knowledge: Knowledge) -> None:
    # A term that also names an interacting drug would silence a real interaction.
    ruleset = knowledge.ruleset()
    terms = ruleset.dictionaries.groups[KNOWN_NON_INTERACTING_GROUP].terms
    assert terms
    assert {
        t: sorted(ruleset.term_index.groups_in(t) - {KNOWN_NON_INTERACTING_GROUP}) for t in terms
    } == {t: [] for t in terms}


def test_unrecognised_medications_skip_blank_entries(knowledge: Knowledge) -> None:
    found = unrecognised_medications(["", "  ", "zz unknown pill", "warfarin"], knowledge.ruleset())
    assert found == ["zz unknown pill"]


@pytest.mark.parametrize(
    ("severities", "monitoring", "request_change", "expected"),
    [
        ((), (), False, Verdict.APPROVE),
        ((Severity.LOW, Severity.INFO), (STANDARD_MONITORING,), False, Verdict.APPROVE),
        ((Severity.LOW,), ("check INR",), False, Verdict.APPROVE_WITH_MONITORING),
        ((Severity.MODERATE,), (), False, Verdict.APPROVE_WITH_MONITORING),
        ((Severity.HIGH,), (), True, Verdict.REQUEST_CHANGE),
        ((Severity.HIGH, Severity.CRITICAL), (), True, Verdict.REJECT),
    ],
    ids=["nothing", "low only", "extra monitoring", "moderate", "request change", "critical"],
)
def test_verdict_for(
    severities: tuple[Severity, ...],
    monitoring: tuple[str, ...],
    request_change: bool,
    expected: Verdict,
) -> None:
    concerns = [Concern(severity=s, code="X", text="x") for s in severities]
    assert verdict_for(concerns, monitoring, request_change=request_change) is expected


def test_a_rejected_plan_gets_no_advice_on_taking_it(knowledge: Knowledge) -> None:
    ctx, ruleset = context_for(knowledge, patient(red_flags__fever=True))
    review = deterministic_review(ctx, doctor(proposal(ruleset, Agent.NIT)), ruleset)

    assert review.verdict is Verdict.REJECT
    assert STANDARD_MONITORING not in review.monitoring
    assert not set(ruleset.regimens[Agent.NIT].counselling) & set(review.counselling)
    assert any("leftover" in line for line in review.counselling)


def test_malformed_triage_result_still_rejects(knowledge: Knowledge) -> None:
    ctx, ruleset = context_for(knowledge, patient(red_flags__fever=True))
    bare = ctx.model_copy(update={"triage": replace(ctx.triage, rules_fired=())})
    review = deterministic_review(bare, doctor(proposal(ruleset, Agent.NIT)), ruleset)

    assert review.verdict is Verdict.REJECT
    assert "TREATMENT_AGAINST_TRIAGE" in codes(review)
    assert_claims_grounded(review)
