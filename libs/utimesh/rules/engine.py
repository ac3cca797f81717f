"""The triage rules engine: RULES.md §5 evaluation order over one intake and one profile.

Pure and deterministic: no I/O, no clock (every day count is relative to the intake's
assessment date), no randomness. The same intake and ruleset always give the same assessment.
Parameters, dictionaries, interactions, drug exclusions and regimens are data (`data/`);
this module holds only the order of evaluation and the meaning of each rule id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from utimesh.rules.intake import intake_problems
from utimesh.rules.knowledge import ExclusionDef, InteractionDef, Knowledge, Ruleset
from utimesh.rules.model import (
    URINARY_SYMPTOMS,
    Agent,
    AgentEvaluation,
    Assessment,
    Decision,
    EncounterType,
    FieldProblem,
    FollowUpAnswers,
    FollowUpPlan,
    History,
    Intake,
    Outcome,
    PregnancyStatus,
    PriorEpisode,
    RedFlags,
    ReferralUrgency,
    RuleHit,
    Sex,
    Symptoms,
    Warning,
)

# Rules whose firing decides the outcome of the symptom stage (RULES.md §5 step 4).
_SYMPTOM_REFER_RULES = frozenset({"SX-003", "SX-004", "SX-006", "SX-008", "SX-009"})
_RED_FLAG_RULES = (
    ("RF-001", "fever"),
    ("RF-002", "rigors_chills"),
    ("RF-003", "flank_or_back_pain"),
    ("RF-004", "nausea_vomiting"),
    ("RF-005", "systemic_illness"),
)
_AGENT_SPECIFIC_WARNINGS = {Agent.NIT: "W-NIT-RENAL", Agent.SXT: "W-SULFA-NONABX"}


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the rules read from a complete intake, derived once."""

    intake: Intake
    symptoms: Symptoms
    red_flags: RedFlags
    history: History
    episodes: tuple[PriorEpisode, ...]
    today: date
    age: int
    allergy_groups: frozenset[str]
    medication_groups: frozenset[str]
    # (days_ago, dictionary groups of the drug name) per recent antibiotic
    antibiotics: tuple[tuple[int, frozenset[str]], ...]


class _Trace:
    """Rules fired so far, in evaluation order."""

    def __init__(self, ruleset: Ruleset) -> None:
        self._rules = ruleset.rules
        self.hits: list[RuleHit] = []

    def make(self, rule_id: str, detail: str = "") -> RuleHit:
        rule = self._rules[rule_id]
        return RuleHit(rule_id, rule.title, rule.outcome, rule.sources, detail)

    def fire(self, rule_id: str, detail: str = "") -> RuleHit:
        hit = self.make(rule_id, detail)
        self.hits.append(hit)
        return hit

    def fired(self, rule_ids: Iterable[str]) -> bool:
        wanted = set(rule_ids)
        return any(h.rule_id in wanted for h in self.hits)


class TriageEngine:
    """Assesses intakes against any loaded profile."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge

    def assess(self, intake: Intake, profile: str | None = None) -> Assessment:
        """Decision, regimen and the rules behind them. Raises UnknownProfileError."""
        return assess(intake, self.knowledge.ruleset(profile))


def assess(intake: Intake, ruleset: Ruleset) -> Assessment:
    """Run RULES.md §5 on one intake."""
    trace = _Trace(ruleset)
    problems = intake_problems(intake)
    # Step 1: DATA-001.
    if problems:
        trace.fire("DATA-001", _describe_problems(problems))
        return _finish(ruleset, trace, Decision.REFER, problems=tuple(problems))
    facts = _derive(intake, ruleset)
    p = ruleset.params
    criteria_met = _symptom_criteria_met(
        facts.symptoms, p.URGENCY_FREQUENCY_ONE_ITEM, p.SX_MIN_ITEMS
    )

    # Step 2: red flags, before symptom criteria and at follow-up visits too.
    for rule_id, flag in _RED_FLAG_RULES:
        if getattr(facts.red_flags, flag):
            trace.fire(rule_id)
    if criteria_met and (facts.symptoms.confusion or facts.symptoms.delirium):
        trace.fire("RF-006")
    if trace.hits:
        return _finish(ruleset, trace, Decision.REFER)

    # Step 3: follow-up visits.
    if intake.encounter_type is EncounterType.FOLLOW_UP:
        return _follow_up_visit(ruleset, trace, intake.follow_up)

    # Step 4: symptom criteria.
    if not criteria_met:
        _symptoms_not_met(trace, facts, p.SYMPTOM_MAX_DAYS)
        decision = Decision.REFER if trace.fired(_SYMPTOM_REFER_RULES) else Decision.NO_ANTIBIOTICS
        return _finish(ruleset, trace, decision)
    trace.fire("SX-001")

    # Step 5: exclusion stage (all collected).
    if _complicating_factors(trace, facts, ruleset):
        return _finish(ruleset, trace, Decision.REFER)

    # Step 6: relapse and recurrence.
    if _recurrence(trace, facts, ruleset):
        return _finish(ruleset, trace, Decision.REFER)

    # Step 7: drug selection.
    evaluations = tuple(
        _evaluate_agent(trace, facts, ruleset, agent, rank)
        for rank, agent in enumerate(p.DRUG_ORDER, start=1)
    )
    selected = next((e for e in evaluations if e.eligible), None)
    for evaluation in evaluations:
        # RULES.md §5: agents after the selected one are not evaluated for rules_fired.
        trace.hits.extend(evaluation.exclusions)
        if evaluation is selected:
            trace.fire(ruleset.regimens[evaluation.agent].rule_id)
            break
    if selected is None:
        trace.fire("RX-NONE-001")
        return _finish(ruleset, trace, Decision.REFER, evaluations=evaluations)

    # Step 8: warnings and follow-up for the selected agent.
    # MONITOR interactions first (table order), then W-* in RULES.md §8 order.
    monitors = [w for w in selected.agent_warnings if w.rule_id.startswith("DDI-")]
    w_rules = [w for w in selected.agent_warnings if not w.rule_id.startswith("DDI-")]
    w_rules += _general_warnings(facts, ruleset)
    ordered = monitors + sorted(w_rules, key=lambda w: _W_ORDER.index(w.rule_id))
    for warning in ordered:
        trace.fire(warning.rule_id)
    trace.fire("FU-001")
    trace.fire("FU-002")
    return _finish(
        ruleset,
        trace,
        Decision.RECOMMEND_TREATMENT,
        evaluations=evaluations,
        selected=selected.agent,
        warnings=tuple(ordered),
    )


_W_ORDER = (
    "W-AGE65",
    "W-RENAL-UNKNOWN",
    "W-NIT-RENAL",
    "W-ADOLESCENT",
    "W-DM",
    "W-ABX-RECENT",
    "W-HOSP",
    "W-LACT",
    "W-SULFA-NONABX",
)


def _describe_problems(problems: list[FieldProblem]) -> str:
    missing = [p.path for p in problems if p.kind == "missing"]
    invalid = [p.path for p in problems if p.kind == "invalid"]
    parts = []
    if missing:
        parts.append("not answered: " + ", ".join(missing))
    if invalid:
        parts.append("invalid: " + ", ".join(invalid))
    return "; ".join(parts)


def _derive(intake: Intake, ruleset: Ruleset) -> _Facts:
    # intake_problems() has passed, so every required field is present.
    assert intake.symptoms and intake.red_flags and intake.history and intake.assessment_date
    assert intake.age is not None and intake.prior_episodes is not None
    history = intake.history
    index = ruleset.term_index
    antibiotics = tuple(
        (course.days_ago or 0, index.groups_in(course.drug or ""))
        for course in history.recent_antibiotics or ()
    )
    return _Facts(
        intake=intake,
        symptoms=intake.symptoms,
        red_flags=intake.red_flags,
        history=history,
        episodes=intake.prior_episodes,
        today=intake.assessment_date,
        age=intake.age,
        allergy_groups=index.groups_in_any(history.allergies or ()),
        medication_groups=index.groups_in_any(history.medications or ()),
        antibiotics=antibiotics,
    )


def _symptom_criteria_met(s: Symptoms, urgency_frequency_one_item: bool, min_items: int) -> bool:
    """SX-001: dysuria, or at least `min_items` of the other criteria."""
    if s.dysuria:
        return True
    if urgency_frequency_one_item:
        items = int(bool(s.urgency or s.frequency))
    else:
        items = int(bool(s.urgency)) + int(bool(s.frequency))
    items += int(bool(s.suprapubic_pain)) + int(bool(s.hematuria))
    return items >= min_items


def _follow_up_visit(ruleset: Ruleset, trace: _Trace, fu: FollowUpAnswers | None) -> Assessment:
    assert fu is not None and fu.hours_since_treatment_start is not None
    if fu.worsened:
        trace.fire("FU-003")
    if not fu.improved and fu.hours_since_treatment_start >= ruleset.params.FU_FAILURE_HOURS:
        trace.fire("FU-004", f"not improved at {fu.hours_since_treatment_start:g} h")
    if fu.serious_adverse_effect:
        trace.fire("FU-005")
    if trace.hits:
        return _finish(ruleset, trace, Decision.REFER)
    trace.fire("FU-006")
    return _finish(ruleset, trace, Decision.NO_ANTIBIOTICS)


def _asymptomatic_bacteriuria(facts: _Facts) -> bool:
    return bool(facts.intake.urine_test_positive) and not any(
        getattr(facts.symptoms, name) for name in URINARY_SYMPTOMS
    )


def _prolonged_symptoms(facts: _Facts, max_days: int) -> bool:
    s = facts.symptoms
    return (
        s.duration_days is not None
        and s.duration_days > max_days
        and any(getattr(s, name) for name in URINARY_SYMPTOMS)
    )


def _symptoms_not_met(trace: _Trace, facts: _Facts, max_days: int) -> None:
    s = facts.symptoms
    trace.fire("SX-002")
    if s.confusion or s.delirium or s.falls_or_functional_decline:
        trace.fire("SX-003")
    if s.hematuria:
        trace.fire("SX-004")
    asb = _asymptomatic_bacteriuria(facts)
    if asb:
        trace.fire("SX-005")
        if facts.intake.pregnancy_status is PregnancyStatus.PREGNANT:
            trace.fire("SX-006")
            trace.fire("PREG-005")
    if _prolonged_symptoms(facts, max_days):
        trace.fire("SX-008", f"symptoms for {s.duration_days} days (> {max_days})")
    if asb and (facts.history.immunocompromised or "immunosuppressants" in facts.medication_groups):
        trace.fire("SX-009")


def _complicating_factors(trace: _Trace, facts: _Facts, ruleset: Ruleset) -> bool:
    """Exclusion stage: SX-007, SX-008, CX-001..015 (+PREG-001..004). True if any fired."""
    p = ruleset.params
    s, h, intake = facts.symptoms, facts.history, facts.intake
    before = len(trace.hits)
    if s.vaginal_discharge_or_itch or s.dyspareunia:
        trace.fire("SX-007")
    if _prolonged_symptoms(facts, p.SYMPTOM_MAX_DAYS):
        trace.fire("SX-008", f"symptoms for {s.duration_days} days (> {p.SYMPTOM_MAX_DAYS})")
    female = intake.sex is Sex.FEMALE
    if not female:
        trace.fire("CX-001", f"sex recorded as {intake.sex}")
    if female and intake.pregnancy_status is PregnancyStatus.PREGNANT:
        trace.fire("CX-002")
        _pregnancy_notes(trace, intake.gestational_weeks)
    if female and intake.pregnancy_status is PregnancyStatus.UNKNOWN:
        trace.fire("CX-003")
    if facts.age < p.MIN_AGE:
        trace.fire("CX-004", f"age {facts.age} < {p.MIN_AGE}")
    checks: tuple[tuple[str, bool | None], ...] = (
        ("CX-005", h.immunocompromised),
        ("CX-006", h.diabetes_poorly_controlled),
        ("CX-007", h.catheter),
        ("CX-008", h.neurogenic_bladder),
        ("CX-009", h.stones),
        ("CX-010", h.abnormal_urinary_tract),
    )
    for rule_id, present in checks:
        if present:
            trace.fire(rule_id)
    egfr = intake.egfr_ml_min
    if h.renal_dysfunction or (egfr is not None and egfr < p.RENAL_REFER_BELOW):
        detail = "documented renal dysfunction" if h.renal_dysfunction else ""
        if egfr is not None and egfr < p.RENAL_REFER_BELOW:
            detail = "; ".join(
                filter(None, [detail, f"kidney function {egfr:g} < {p.RENAL_REFER_BELOW:g} mL/min"])
            )
        trace.fire("CX-011", detail)
    if h.urologic_instrumentation_last_30d:
        trace.fire("CX-012")
    if "immunosuppressants" in facts.medication_groups:
        trace.fire("CX-013", "medication list names an immunosuppressant")
    if h.breastfeeding_infant_under_1_month:
        trace.fire("CX-014")
    if "cystitis_causing_drugs" in facts.medication_groups:
        trace.fire("CX-015", "medication list names a drug that can cause cystitis")
    return len(trace.hits) > before


def _pregnancy_notes(trace: _Trace, weeks: int | None) -> None:
    trace.fire("PREG-001")
    if weeks is None:
        return
    if weeks < 14:
        trace.fire("PREG-002", f"{weeks} weeks")
    if weeks >= 28:
        trace.fire("PREG-003", f"{weeks} weeks")
    if weeks >= 38:
        trace.fire("PREG-004", f"{weeks} weeks")


def _recurrence(trace: _Trace, facts: _Facts, ruleset: Ruleset) -> bool:
    p = ruleset.params
    before = len(trace.hits)
    relapse = []
    onset_days = []
    for episode in facts.episodes:
        assert episode.onset_date is not None
        anchor = episode.treatment_end_date or episode.onset_date
        if (facts.today - anchor).days <= p.RELAPSE_DAYS:
            relapse.append((facts.today - anchor).days)
        onset_days.append((facts.today - episode.onset_date).days)
    if relapse:
        trace.fire("REC-001", f"previous episode {min(relapse)} days ago (<= {p.RELAPSE_DAYS})")
    short = sum(1 for d in onset_days if d <= p.RECUR_SHORT_DAYS)
    if short >= p.RECUR_SHORT_COUNT:
        trace.fire("REC-002", f"{short} previous episodes within {p.RECUR_SHORT_DAYS} days")
    long = sum(1 for d in onset_days if d <= p.RECUR_LONG_DAYS)
    if long >= p.RECUR_LONG_COUNT:
        trace.fire("REC-003", f"{long} previous episodes within {p.RECUR_LONG_DAYS} days")
    return len(trace.hits) > before


# --- drug selection ---------------------------------------------------------------------------


def _exclusion_fires(ex: ExclusionDef, facts: _Facts, ruleset: Ruleset) -> str | None:
    """The detail text if the data-driven exclusion fires for this patient, else None."""
    p = ruleset.params
    egfr = facts.intake.egfr_ml_min
    if ex.allergy_any is not None:
        hit = [g for g in ex.allergy_any if g in facts.allergy_groups]
        return f"allergy: {ruleset.dictionaries.groups[hit[0]].title}" if hit else None
    if ex.egfr_below is not None:
        limit = p.number(ex.egfr_below)
        return (
            f"kidney function {egfr:g} < {limit:g} mL/min"
            if egfr is not None and egfr < limit
            else None
        )
    if ex.flag is not None:
        return ex.flag.replace("_", " ") if getattr(facts.history, ex.flag) else None
    if ex.age_below is not None:
        limit = p.number(ex.age_below)
        return f"age {facts.age} < {limit:g}" if facts.age < limit else None
    if ex.antibiotic_within is not None:
        days = p.number(ex.antibiotic_within.days)
        recent = [
            d
            for d, groups in facts.antibiotics
            if ex.antibiotic_within.group in groups and d <= days
        ]
        return (
            f"trimethoprim-class antibiotic {min(recent)} days ago (<= {days:g})"
            if recent
            else None
        )
    if ex.any_antibiotic_within is not None:
        raw = getattr(p, ex.any_antibiotic_within)
        if raw is None:  # parameter switched off in this profile
            return None
        recent = [d for d, _ in facts.antibiotics if d <= raw]
        return f"antibiotic {min(recent)} days ago (<= {raw})" if recent else None
    raise AssertionError(f"exclusion {ex.id} has no predicate")  # prevented at load time


def _interaction_fires(row: InteractionDef, facts: _Facts, ruleset: Ruleset) -> bool:
    meds = facts.medication_groups
    if not all(g in meds for g in row.drugs_all) or any(g in meds for g in row.drugs_none):
        return False
    if row.risk is None:
        return True
    p = ruleset.params
    egfr = facts.intake.egfr_ml_min
    present = {
        "older_adult": facts.age >= p.OLDER_ADULT_AGE,
        "egfr_below_ras_risk": egfr is not None and egfr < p.RAS_HIGH_RISK_EGFR_BELOW,
        "potassium_supplement": "potassium_supplements" in meds,
    }
    any_risk = any(present[f] for f in row.risk_factors)
    return any_risk if row.risk == "any" else not any_risk


def _evaluate_agent(
    trace: _Trace, facts: _Facts, ruleset: Ruleset, agent: Agent, rank: int
) -> AgentEvaluation:
    exclusions: list[RuleHit] = []
    for ex in ruleset.exclusions_by_agent[agent]:
        if (detail := _exclusion_fires(ex, facts, ruleset)) is not None:
            exclusions.append(trace.make(ex.id, detail))
    warnings: list[Warning] = []
    for row in ruleset.interactions_by_agent[agent]:
        if _interaction_fires(row, facts, ruleset):
            if row.action == "AVOID":
                exclusions.append(trace.make(row.id, row.title))
            else:
                warnings.append(Warning(row.id, row.text))
    specific = _AGENT_SPECIFIC_WARNINGS.get(agent)
    if specific and _agent_warning_fires(specific, facts, ruleset):
        warnings.append(_warning(ruleset, specific))
    regimen = ruleset.regimens[agent]
    return AgentEvaluation(
        agent=agent,
        rank=rank,
        regimen=ruleset.regimen_values[agent],
        exclusions=tuple(exclusions),
        agent_warnings=tuple(warnings),
        counselling=regimen.counselling,
    )


def _agent_warning_fires(rule_id: str, facts: _Facts, ruleset: Ruleset) -> bool:
    p = ruleset.params
    egfr = facts.intake.egfr_ml_min
    if rule_id == "W-NIT-RENAL":
        return egfr is not None and p.NIT_EXCLUDE_BELOW <= egfr < p.NIT_WARN_BELOW
    if rule_id == "W-SULFA-NONABX":
        return "nonantibiotic_sulfonamides" in facts.allergy_groups
    raise AssertionError(rule_id)


def _warning(ruleset: Ruleset, rule_id: str) -> Warning:
    return Warning(rule_id, ruleset.rules[rule_id].text)


def _general_warnings(facts: _Facts, ruleset: Ruleset) -> list[Warning]:
    p = ruleset.params
    h, intake = facts.history, facts.intake
    conditions: tuple[tuple[str, Callable[[], bool]], ...] = (
        ("W-AGE65", lambda: facts.age >= p.OLDER_ADULT_AGE),
        ("W-RENAL-UNKNOWN", lambda: facts.age >= p.OLDER_ADULT_AGE and intake.egfr_ml_min is None),
        ("W-ADOLESCENT", lambda: p.MIN_AGE <= facts.age <= p.ADOLESCENT_MAX_AGE),
        ("W-DM", lambda: bool(h.diabetes) and not h.diabetes_poorly_controlled),
        ("W-ABX-RECENT", lambda: any(d <= p.ABX_WARN_DAYS for d, _ in facts.antibiotics)),
        ("W-HOSP", lambda: bool(h.hospitalized_last_90d)),
        ("W-LACT", lambda: bool(intake.lactating)),
    )
    return [_warning(ruleset, rule_id) for rule_id, holds in conditions if holds()]


# --- result -----------------------------------------------------------------------------------


def _finish(
    ruleset: Ruleset,
    trace: _Trace,
    decision: Decision,
    *,
    evaluations: tuple[AgentEvaluation, ...] = (),
    selected: Agent | None = None,
    warnings: tuple[Warning, ...] = (),
    problems: tuple[FieldProblem, ...] = (),
) -> Assessment:
    treat = decision is Decision.RECOMMEND_TREATMENT
    eligible = tuple(e.regimen for e in evaluations if e.eligible) if treat else ()
    regimen = next((e.regimen for e in evaluations if e.agent is selected), None) if treat else None
    return Assessment(
        profile=ruleset.id,
        profile_version=ruleset.version,
        ruleset_hash=ruleset.content_hash,
        decision=decision,
        regimen=regimen,
        rules_fired=tuple(trace.hits),
        warnings=warnings if treat else (),
        follow_up=_follow_up_plan(ruleset, trace, decision),
        eligible_regimens=eligible,
        agent_evaluations=evaluations,
        problems=problems,
    )


def _follow_up_plan(ruleset: Ruleset, trace: _Trace, decision: Decision) -> FollowUpPlan:
    rules = ruleset.rules
    if decision is Decision.RECOMMEND_TREATMENT:
        return FollowUpPlan(
            notify_primary_care=True,
            reassess_from_hours=48,
            reassess_by_hours=72,
            instructions=(rules["FU-001"].text, rules["FU-002"].text),
        )
    if decision is Decision.NO_ANTIBIOTICS:
        if trace.fired(["FU-006"]):
            return FollowUpPlan(reassess_by_hours=48, instructions=(rules["FU-006"].text,))
        return FollowUpPlan(
            instructions=(
                "No antibiotic is indicated: the symptom criteria for cystitis are not met; consider other diagnoses.",
                "Return or seek care if urinary symptoms, fever, flank pain or vomiting develop.",
            )
        )
    urgent = any(h.outcome is Outcome.REFER_URGENT for h in trace.hits)
    reasons = [h for h in trace.hits if h.outcome in (Outcome.REFER, Outcome.REFER_URGENT)]
    instructions = [
        f"Refer {'urgently (same day) ' if urgent else ''}to a physician or nurse practitioner."
    ]
    instructions += [f"{h.rule_id}: {rules[h.rule_id].text}" for h in reasons]
    instructions += [
        f"{h.rule_id}: {rules[h.rule_id].text}" for h in trace.hits if h.outcome is Outcome.NOTE
    ]
    return FollowUpPlan(
        referral_urgency=ReferralUrgency.URGENT if urgent else ReferralUrgency.ROUTINE,
        instructions=tuple(instructions),
    )
