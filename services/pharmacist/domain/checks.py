"""The pharmacist's deterministic safety review: runs on every call, whatever the model does.

It trusts nothing it is given: the doctor's proposal is compared with triage's allow-list, and
allergies, interactions and pregnancy are re-checked for the proposed agent from the intake and
the shared clinical knowledge (`utimesh.rules`), never from drug lists in this module. Triage's
warnings become concerns, monitoring and counselling. Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from utimesh.agents.models import (
    OFFLINE,
    AgentRun,
    CaseContext,
    Claim,
    ClaimKind,
    ClinicalAssessment,
    Concern,
    PharmacistReview,
    ProposedRegimen,
    Severity,
    Verdict,
)
from utimesh.codec.agents import regimen_from_proposed
from utimesh.rules.knowledge import InteractionDef, Ruleset
from utimesh.rules.matching import TermIndex, near_misses
from utimesh.rules.model import (
    Agent,
    AgentEvaluation,
    Assessment,
    Decision,
    Intake,
    Outcome,
    PregnancyStatus,
    ReferralUrgency,
    Sex,
    Warning,
)

# Dictionary group of medications known not to interact with any of the four agents: listing
# them raises no "unrecognised medication" concern (data/dictionaries.toml).
KNOWN_NON_INTERACTING_GROUP = "known_non_interacting"

# The one monitoring line every treatment gets (FU-002); anything beyond it means monitoring.
STANDARD_MONITORING = "Reassess at 48-72 h for response and adverse effects (FU-002)."
SEEK_CARE = (
    "Seek urgent care for fever, chills, flank or back pain, vomiting, or if symptoms get worse."
)
NO_LEFTOVERS = "Do not take leftover antibiotics or antibiotics prescribed for someone else."
ALLERGY_FACTS = ("history.allergies",)
MEDICATION_FACTS = ("history.medications",)
_ENTRY_SHOWN_CHARS = 120  # how much of a free-text entry a concern quotes

_SEVERITY_RANK = {
    Severity.INFO: 0,
    Severity.LOW: 1,
    Severity.MODERATE: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}


@dataclass(frozen=True, slots=True)
class _WarningPlan:
    """How the pharmacist turns one triage warning into a concern, monitoring and counselling."""

    severity: Severity
    code: str
    action: str = ""
    monitoring: str = ""
    counselling: str = ""


_CULTURE_IF_NO_RESPONSE = "Obtain a urine culture if there is no response at 48-72 h."

# The meaning of each W-* rule id for the pharmacist (RULES.md §8). Texts of the rules come
# from the ruleset; an id missing here still becomes a LOW concern (see _warning_plan).
_WARNING_PLANS: dict[str, _WarningPlan] = {
    "W-NIT-RENAL": _WarningPlan(
        Severity.MODERATE,
        "KIDNEY_FUNCTION",
        action="Counsel the patient; do not extend the course.",
        monitoring="Kidney function below 60 mL/min with nitrofurantoin: watch for numbness or "
        "tingling (neuropathy) and for a poor response.",
        counselling="Report numbness, tingling or no improvement within 48 h.",
    ),
    "W-RENAL-UNKNOWN": _WarningPlan(
        Severity.MODERATE,
        "KIDNEY_FUNCTION_UNKNOWN",
        action="Obtain a creatinine clearance before or early in the course.",
        monitoring="Obtain CrCl (creatinine clearance): nitrofurantoin dosing depends on it.",
    ),
    "W-SULFA-NONABX": _WarningPlan(
        Severity.LOW,
        "ALLERGY_CROSS_REACTIVITY",
        action="Counsel on the low cross-reactivity; stop and seek care if a rash appears.",
        counselling="Your listed allergy is to a non-antibiotic sulfonamide; a reaction to this "
        "antibiotic is unlikely, but stop it and seek care at once if a rash, swelling or "
        "breathing difficulty appears.",
    ),
    "W-LACT": _WarningPlan(
        Severity.LOW,
        "LACTATION",
        action="Ask about the infant (age, prematurity, jaundice, G6PD deficiency).",
        counselling="While breastfeeding, watch the infant for jaundice, diarrhea or rash and "
        "tell us if the infant is premature, jaundiced, unwell or G6PD-deficient.",
    ),
    "W-AGE65": _WarningPlan(
        Severity.LOW,
        "AGE",
        action="Check kidney function and interacting drugs.",
    ),
    "W-ADOLESCENT": _WarningPlan(
        Severity.LOW,
        "AGE",
        action="Confirm that adult dosing is appropriate (weight).",
    ),
    "W-DM": _WarningPlan(
        Severity.LOW,
        "DIABETES",
        action="Monitor blood glucose during the infection.",
        monitoring="Monitor blood glucose during the infection and the course.",
    ),
    "W-ABX-RECENT": _WarningPlan(
        Severity.LOW,
        "RECENT_ANTIBIOTIC",
        action=_CULTURE_IF_NO_RESPONSE,
        monitoring=_CULTURE_IF_NO_RESPONSE,
    ),
    "W-HOSP": _WarningPlan(
        Severity.LOW,
        "RECENT_HOSPITALISATION",
        action=_CULTURE_IF_NO_RESPONSE,
        monitoring=_CULTURE_IF_NO_RESPONSE,
    ),
}


def _warning_plan(rule_id: str) -> _WarningPlan:
    return _WARNING_PLANS.get(rule_id, _WarningPlan(Severity.LOW, "WARNING"))


# --- knowledge look-ups (candidates for utimesh.rules) ---------------------------------------


@dataclass(frozen=True, slots=True)
class AllergyHit:
    """An allergy exclusion rule that fires for an agent, and the dictionary group it matched."""

    rule_id: str
    group_title: str


def allergy_exclusion_rules(agent: Agent, ruleset: Ruleset) -> tuple[str, ...]:
    """Ids of the agent's data-driven exclusions that are allergy predicates."""
    return tuple(ex.id for ex in ruleset.exclusions_by_agent[agent] if ex.allergy_any is not None)


def allergy_exclusions(
    agent: Agent, allergies: Iterable[str], ruleset: Ruleset
) -> list[AllergyHit]:
    """The agent's allergy exclusions (exclusions.toml `allergy_any`) matched by the entries."""
    groups = ruleset.term_index.groups_in_any(allergies)
    hits = []
    for ex in ruleset.exclusions_by_agent[agent]:
        if ex.allergy_any is None:
            continue
        matched = [g for g in ex.allergy_any if g in groups]
        if matched:
            hits.append(AllergyHit(ex.id, ruleset.dictionaries.groups[matched[0]].title))
    return hits


def interactions_firing(agent: Agent, intake: Intake, ruleset: Ruleset) -> list[InteractionDef]:
    """Interaction rows (AVOID and MONITOR) of the agent that fire for the intake's medications.

    Same reading as the triage engine (interactions.toml header). An unknown age counts as the
    older-adult risk (conservative; triage would have referred on DATA-001); an unknown kidney
    function is no risk, as RULES.md §4 says."""
    history = intake.history
    meds = ruleset.term_index.groups_in_any(history.medications or ()) if history else frozenset()
    p = ruleset.params
    egfr = intake.egfr_ml_min
    present = {
        "older_adult": intake.age is None or intake.age >= p.OLDER_ADULT_AGE,
        "egfr_below_ras_risk": egfr is not None and egfr < p.RAS_HIGH_RISK_EGFR_BELOW,
        "potassium_supplement": "potassium_supplements" in meds,
    }
    fired = []
    for row in ruleset.interactions_by_agent[agent]:
        if not all(g in meds for g in row.drugs_all) or any(g in meds for g in row.drugs_none):
            continue
        if row.risk is not None:
            any_risk = any(present[f] for f in row.risk_factors)
            if any_risk != (row.risk == "any"):
                continue
        fired.append(row)
    return fired


_PARENTHESES = re.compile(r"\([^)]*\)")


def _info_index(ruleset: Ruleset) -> tuple[TermIndex, dict[str, tuple[int, ...]]]:
    """A term index over the INFO interaction rows' drug names, and the rows each name is in."""
    rows_of: dict[str, list[int]] = {}
    for i, row in enumerate(ruleset.interaction_info):
        for drug in row.drugs:
            name = _PARENTHESES.sub(" ", drug).strip()  # "thiazides (older adults)" -> thiazides
            if name:
                rows_of.setdefault(name, []).append(i)
    index = TermIndex({name: (name,) for name in rows_of})
    return index, {name: tuple(rows) for name, rows in rows_of.items()}


def unrecognised_medications(medications: Iterable[str], ruleset: Ruleset) -> list[str]:
    """Entries that name no dictionary group, no INFO interaction drug and no known
    non-interacting drug: nobody has checked them for interactions."""
    info, _ = _info_index(ruleset)
    return [
        entry
        for entry in medications
        if entry.strip()
        and not ruleset.term_index.groups_in(entry)  # includes the known non-interacting group
        and not info.groups_in(entry)
    ]


# --- the review -------------------------------------------------------------------------------


class _Review:
    """Concerns, monitoring, counselling and claims collected in order, without duplicates."""

    def __init__(self) -> None:
        self.concerns: list[Concern] = []
        self.monitoring: list[str] = []
        self.counselling: list[str] = []
        self.claims: list[Claim] = []
        self.request_change = False

    def concern(
        self,
        severity: Severity,
        code: str,
        text: str,
        *,
        action: str = "",
        rule_ids: Sequence[str] = (),
        facts: Sequence[str] = (),
        suggested_agent: Agent | None = None,
        claim_text: str | None = None,
    ) -> None:
        self.concerns.append(
            Concern(
                severity=severity,
                code=code,
                text=text,
                suggested_action=action,
                rule_ids=tuple(rule_ids),
                source="deterministic",
                suggested_agent=suggested_agent,
            )
        )
        self.claim(claim_text or text, ClaimKind.SAFETY, rule_ids=rule_ids, facts=facts)

    def claim(
        self,
        text: str,
        kind: ClaimKind,
        *,
        rule_ids: Sequence[str] = (),
        facts: Sequence[str] = (),
    ) -> None:
        # Every claim rests on something that can be grounded: a rule id or an intake fact.
        # Only a malformed triage result (e.g. a refer decision without any rule) leaves none;
        # the concern itself still stands, it just makes no claim.
        if not rule_ids and not facts:
            return
        self.claims.append(
            Claim(
                id=f"P{len(self.claims) + 1}",
                text=text,
                kind=kind,
                rule_ids=tuple(dict.fromkeys(rule_ids)),
                facts=tuple(dict.fromkeys(facts)),
            )
        )

    @property
    def blocked(self) -> bool:
        """A critical concern was raised: the plan must not go ahead."""
        return any(c.severity is Severity.CRITICAL for c in self.concerns)

    def monitor(self, line: str) -> None:
        if line and line not in self.monitoring:
            self.monitoring.append(line)

    def counsel(self, line: str) -> None:
        if line and line not in self.counselling:
            self.counselling.append(line)

    def finish(self) -> PharmacistReview:
        return PharmacistReview(
            verdict=verdict_for(self.concerns, self.monitoring, request_change=self.request_change),
            concerns=tuple(self.concerns),
            monitoring=tuple(self.monitoring),
            counselling=tuple(self.counselling),
            claims=tuple(self.claims),
            deterministic_checks_run=True,
            run=AgentRun(generated_by=OFFLINE),
        )


def verdict_for(
    concerns: Iterable[Concern], monitoring: Iterable[str], *, request_change: bool = False
) -> Verdict:
    """REJECT on any critical concern; REQUEST_CHANGE when asked for; APPROVE_WITH_MONITORING
    on a moderate or high concern or any monitoring beyond FU-002; else APPROVE."""
    worst = max((_SEVERITY_RANK[c.severity] for c in concerns), default=-1)
    if worst >= _SEVERITY_RANK[Severity.CRITICAL]:
        return Verdict.REJECT
    if request_change:
        return Verdict.REQUEST_CHANGE
    extra_monitoring = any(line != STANDARD_MONITORING for line in monitoring)
    if worst >= _SEVERITY_RANK[Severity.MODERATE] or extra_monitoring:
        return Verdict.APPROVE_WITH_MONITORING
    return Verdict.APPROVE


def deterministic_review(
    ctx: CaseContext, assessment: ClinicalAssessment, ruleset: Ruleset
) -> PharmacistReview:
    """Review the doctor's plan for the case. `ruleset` is the profile triage used."""
    review = _Review()
    triage = ctx.triage
    proposal = assessment.proposed_regimen
    if triage.decision is not Decision.RECOMMEND_TREATMENT:
        if proposal is None:
            _approve_no_prescription(review, triage)
        else:
            review.concern(
                Severity.CRITICAL,
                "TREATMENT_AGAINST_TRIAGE",
                f"Triage decided {triage.decision.value}: no antibiotic may be prescribed, "
                "but a regimen was proposed.",
                action="Do not prescribe; follow the triage decision.",
                rule_ids=_decisive_rules(triage),
            )
            _check_proposal(review, ctx, proposal, ruleset)
            _approve_no_prescription(review, triage)  # what stands instead of the proposal
        return review.finish()

    if proposal is None:
        first = _first_eligible(triage)
        review.request_change = True
        review.concern(
            Severity.HIGH,
            "NO_PLAN",
            "Triage recommends treatment but no regimen was proposed.",
            action="Propose one of the eligible regimens"
            + (f", e.g. {ruleset.regimens[first].drug}." if first else "."),
            rule_ids=_selection_rules(triage, ruleset),
            suggested_agent=first,
        )
        return review.finish()

    _check_allow_list(review, triage, proposal, ruleset)
    _check_proposal(review, ctx, proposal, ruleset)
    return review.finish()


def _approve_no_prescription(review: _Review, triage: Assessment) -> None:
    decisive = _decisive_rules(triage)
    if triage.decision is Decision.REFER:
        urgent = triage.follow_up.referral_urgency is ReferralUrgency.URGENT
        review.claim(
            "No antibiotic is to be dispensed: triage refers the patient"
            + (" urgently" if urgent else "")
            + " to a physician or nurse practitioner.",
            ClaimKind.REFERRAL,
            rule_ids=decisive,
            facts=() if decisive else ("encounter_type",),
        )
        review.counsel(
            "See a physician or nurse practitioner today."
            if urgent
            else "See a physician or nurse practitioner as advised."
        )
    else:
        review.claim(
            "No new antibiotic is indicated: triage decided no antibiotics.",
            ClaimKind.REFERRAL,
            rule_ids=decisive,
            facts=() if decisive else ("symptoms",),
        )
    review.counsel(NO_LEFTOVERS)
    review.counsel(SEEK_CARE)


def _check_allow_list(
    review: _Review, triage: Assessment, proposal: ProposedRegimen, ruleset: Ruleset
) -> None:
    regimen = regimen_from_proposed(proposal)
    if regimen is not None and regimen in triage.eligible_regimens:
        return
    evaluation = _evaluation(triage, proposal.agent)
    excluded_by = tuple(h.rule_id for h in evaluation.exclusions) if evaluation else ()
    alternative = _first_eligible(triage, besides=proposal.agent)
    if proposal.agent is None:
        text = "The proposed drug is not one of the agents the rules know; it is not eligible."
    elif excluded_by:
        text = f"{proposal.agent.value} is excluded for this patient by {', '.join(excluded_by)}."
    else:
        text = (
            f"The proposed {proposal.agent.value} regimen is not one of triage's eligible regimens."
        )
    review.concern(
        Severity.CRITICAL,
        "NOT_ELIGIBLE",
        text,
        action="Prescribe only one of the eligible regimens, exactly as listed.",
        rule_ids=excluded_by or _selection_rules(triage, ruleset),
        suggested_agent=alternative,
    )


def _check_proposal(
    review: _Review, ctx: CaseContext, proposal: ProposedRegimen, ruleset: Ruleset
) -> None:
    """Re-check the proposed agent from the intake, independently of triage."""
    intake = ctx.intake
    _check_pregnancy(review, intake)
    agent = proposal.agent
    if agent is None:
        return  # NOT_ELIGIBLE already rejects it; there is no knowledge to check it against
    drug = ruleset.regimens[agent].drug
    history = intake.history
    allergies = history.allergies or () if history else ()
    medications = history.medications or () if history else ()
    alternative = _first_eligible(ctx.triage, besides=agent)

    allergy_hits = allergy_exclusions(agent, allergies, ruleset)
    for hit in allergy_hits:
        review.concern(
            Severity.CRITICAL,
            "ALLERGY",
            f"Recorded allergy excludes {drug}: {hit.group_title}.",
            action=f"Do not prescribe {drug}.",
            rule_ids=(hit.rule_id,),
            facts=ALLERGY_FACTS,
            suggested_agent=alternative,
        )
    interactions = interactions_firing(agent, intake, ruleset)
    avoid = [row for row in interactions if row.action == "AVOID"]
    for row in avoid:
        review.concern(
            Severity.CRITICAL,
            "INTERACTION",
            f"{row.title}: {row.text}",
            action=f"Do not prescribe {drug} with this medication.",
            rule_ids=(row.id,),
            facts=MEDICATION_FACTS,
            suggested_agent=alternative,
        )
    if not allergy_hits and not avoid:
        checked = allergy_exclusion_rules(agent, ruleset) + tuple(
            row.id for row in ruleset.interactions_by_agent[agent] if row.action == "AVOID"
        )
        review.claim(
            f"No recorded allergy or interaction excludes {drug}.",
            ClaimKind.SAFETY,
            rule_ids=checked,
            facts=(*ALLERGY_FACTS, *MEDICATION_FACTS),
        )

    # MONITOR-level interactions: recomputed here, plus any triage reported for the agent.
    monitor = {row.id: row.text for row in interactions if row.action == "MONITOR"}
    for warning in _agent_warnings(ctx.triage, agent):
        if warning.rule_id.startswith("DDI-") and warning.rule_id not in monitor:
            monitor[warning.rule_id] = _interaction_text(ruleset, warning)
    for rule_id, text in monitor.items():
        review.concern(
            Severity.MODERATE,
            "INTERACTION",
            text,
            action="Monitor as described while on the course.",
            rule_ids=(rule_id,),
            facts=MEDICATION_FACTS,
        )
        review.monitor(f"{text} ({rule_id})")

    _check_warnings(review, ctx.triage, agent, ruleset)
    _check_unrecognised(review, agent, medications, allergies, ruleset)

    if review.blocked:
        return  # the plan must not go ahead: no advice on taking it
    for line in ruleset.regimens[agent].counselling:
        review.counsel(line)
    review.counsel(SEEK_CARE)
    review.monitor(STANDARD_MONITORING)
    review.claim(
        "Reassess at 48-72 h for response and adverse effects.",
        ClaimKind.FOLLOW_UP,
        rule_ids=("FU-002",),
    )


def _check_pregnancy(review: _Review, intake: Intake) -> None:
    status = intake.pregnancy_status
    if status is not PregnancyStatus.PREGNANT and intake.gestational_weeks is not None:
        # RULES.md reads pregnancy_status alone; a recorded gestation contradicts "not
        # pregnant" and triage cannot see it. Stop: a person must resolve it.
        review.concern(
            Severity.CRITICAL,
            "PREGNANCY_CONTRADICTED",
            f"Pregnancy status is {status.value if status else 'not recorded'}, yet "
            f"{intake.gestational_weeks} gestational weeks are recorded: pregnancy is not "
            "reliably excluded.",
            action="Confirm pregnancy status with the patient before any prescription.",
            facts=("pregnancy_status", "gestational_weeks"),
        )
        return
    if status is PregnancyStatus.PREGNANT:
        rule_id, text = "CX-002", "The patient is pregnant: pharmacist prescribing does not apply."
    elif status is PregnancyStatus.UNKNOWN:
        rule_id, text = "CX-003", "Pregnancy has not been excluded."
    elif status is None and intake.sex is Sex.FEMALE:
        rule_id, text = "DATA-001", "Pregnancy status is not recorded."
    else:
        return
    review.concern(
        Severity.CRITICAL,
        "PREGNANCY",
        text,
        action="Do not prescribe; refer to a physician or nurse practitioner.",
        rule_ids=(rule_id,),
        facts=("pregnancy_status",),
    )


def _check_warnings(review: _Review, triage: Assessment, agent: Agent, ruleset: Ruleset) -> None:
    """Triage's W-* warnings that apply to the proposed agent."""
    other_agents_only = {
        w.rule_id
        for e in triage.agent_evaluations
        if e.agent is not agent
        for w in e.agent_warnings
    }
    own = [w for w in _agent_warnings(triage, agent) if w.rule_id.startswith("W-")]
    general = [
        w
        for w in triage.warnings
        if w.rule_id.startswith("W-") and w.rule_id not in other_agents_only
    ]
    seen: set[str] = set()
    for warning in [*own, *general]:
        if warning.rule_id in seen:
            continue
        seen.add(warning.rule_id)
        plan = _warning_plan(warning.rule_id)
        rule = ruleset.rules.get(warning.rule_id)
        review.concern(
            plan.severity,
            plan.code,
            rule.text if rule else warning.text,
            action=plan.action,
            rule_ids=(warning.rule_id,),
        )
        review.monitor(plan.monitoring)
        review.counsel(plan.counselling)


def _check_unrecognised(
    review: _Review,
    agent: Agent,
    medications: Sequence[str],
    allergies: Sequence[str],
    ruleset: Ruleset,
) -> None:
    """Free text the knowledge does not cover: the clinician has to look at it."""
    drug = ruleset.regimens[agent].drug
    for entry in unrecognised_medications(medications, ruleset):
        review.concern(
            Severity.MODERATE,
            "UNRECOGNISED_MEDICATION",
            f"Medication entry {_quoted(entry)} is not in the interaction knowledge: "
            f"check manually for interactions with {drug}.",
            action="Check this medication for interactions before dispensing.",
            facts=MEDICATION_FACTS,
            # Claims travel on to evidence grounding: they never quote free text.
            claim_text="A medication entry is not in the interaction knowledge and must be "
            "checked manually for interactions.",
        )
    info, rows_of = _info_index(ruleset)
    reported: set[int] = set()
    for entry in medications:
        for name in sorted(info.groups_in(entry)):
            for i in rows_of[name]:
                row = ruleset.interaction_info[i]
                if agent not in row.agents or i in reported:
                    continue
                reported.add(i)
                review.concern(
                    Severity.INFO,
                    "INTERACTION_INFO",
                    f"{row.text} (interaction table, information only: {row.severity})",
                    action="No action required by the rules; consider it in the review.",
                    facts=MEDICATION_FACTS,
                )
    own_terms = [
        term
        for ex in ruleset.exclusions_by_agent[agent]
        for group in ex.allergy_any or ()
        for term in ruleset.dictionaries.groups[group].terms
    ]
    for entry in allergies:
        if entry.strip() and not ruleset.term_index.groups_in(entry):
            if like := near_misses(entry, own_terms):
                review.concern(
                    Severity.CRITICAL,
                    "POSSIBLE_ALLERGY_TO_PROPOSED_DRUG",
                    f"Allergy entry {_quoted(entry)} looks like {like[0]}, an allergy that "
                    f"excludes {drug}: it may be a misspelling.",
                    action=f"Confirm the allergy with the patient before prescribing {drug}.",
                    facts=ALLERGY_FACTS,
                    claim_text="An allergy entry looks like a misspelling of an allergy that "
                    "excludes the proposed drug.",
                )
                continue
            review.concern(
                Severity.LOW,
                "UNRECOGNISED_ALLERGY",
                f"Allergy entry {_quoted(entry)} is not in the allergy dictionaries: confirm it "
                f"is not a brand or relative of {drug}.",
                action="Confirm the allergy with the patient.",
                facts=ALLERGY_FACTS,
                claim_text="An allergy entry is not in the allergy dictionaries and must be "
                "confirmed manually.",
            )


# --- helpers ----------------------------------------------------------------------------------


def _quoted(entry: str) -> str:
    shown = " ".join(entry.split())
    if len(shown) > _ENTRY_SHOWN_CHARS:
        shown = shown[: _ENTRY_SHOWN_CHARS - 1] + "\u2026"
    return f"\u201c{shown}\u201d"


def _evaluation(triage: Assessment, agent: Agent | None) -> AgentEvaluation | None:
    return next((e for e in triage.agent_evaluations if e.agent is agent), None)


def _agent_warnings(triage: Assessment, agent: Agent) -> tuple[Warning, ...]:
    evaluation = _evaluation(triage, agent)
    return evaluation.agent_warnings if evaluation else ()


def _first_eligible(triage: Assessment, besides: Agent | None = None) -> Agent | None:
    return next((r.agent for r in triage.eligible_regimens if r.agent is not besides), None)


def _interaction_text(ruleset: Ruleset, warning: Warning) -> str:
    row = next((r for r in ruleset.interactions if r.id == warning.rule_id), None)
    return row.text if row else warning.text


def _decisive_rules(triage: Assessment) -> tuple[str, ...]:
    """The rules behind a refer or no-antibiotic decision."""
    decisive = (Outcome.REFER, Outcome.REFER_URGENT, Outcome.NO_ANTIBIOTICS)
    return tuple(h.rule_id for h in triage.rules_fired if h.outcome in decisive)


def _selection_rules(triage: Assessment, ruleset: Ruleset) -> tuple[str, ...]:
    """The drug-selection rules: RX-001 and the selection rule of triage's regimen."""
    ids = ["RX-001"] if "RX-001" in ruleset.rules else []
    if triage.regimen is not None:
        ids.append(ruleset.regimens[triage.regimen.agent].rule_id)
    return tuple(ids)
