"""The offline doctor: a deterministic clinical assessment written from the triage result, the
rule catalogue and the patient facts. No LLM is used, and every output says so
(generated_by = "offline-rules"). It never reads patient free text except through triage."""

from __future__ import annotations

from collections.abc import Sequence

from utimesh.agents.models import (
    AgentRun,
    CaseContext,
    Claim,
    ClaimKind,
    ClinicalAssessment,
    Concern,
    ConcernResponse,
    DifferentialItem,
    Likelihood,
    ProposedRegimen,
)
from utimesh.codec.agents import proposed_from_regimen
from utimesh.rules.facts import rule_facts
from utimesh.rules.knowledge import Ruleset
from utimesh.rules.model import (
    RED_FLAGS,
    URINARY_SYMPTOMS,
    Agent,
    Decision,
    Outcome,
    Regimen,
    RuleHit,
)

_DECISIVE = (Outcome.REFER, Outcome.REFER_URGENT, Outcome.NO_ANTIBIOTICS)
_CLAIM_KIND_BY_OUTCOME = {
    Outcome.REFER: ClaimKind.REFERRAL,
    Outcome.REFER_URGENT: ClaimKind.REFERRAL,
    Outcome.NO_ANTIBIOTICS: ClaimKind.DIAGNOSIS,
    Outcome.CONTINUE: ClaimKind.DIAGNOSIS,
    Outcome.ANNOTATION: ClaimKind.DIAGNOSIS,
    Outcome.NOTE: ClaimKind.REFERRAL,
    Outcome.EXCLUDE_AGENT: ClaimKind.SAFETY,
    Outcome.SELECT_AGENT: ClaimKind.TREATMENT,
    Outcome.WARNING: ClaimKind.SAFETY,
    Outcome.PLAN: ClaimKind.FOLLOW_UP,
}


def regimen_text(r: Regimen | ProposedRegimen) -> str:
    """One line, e.g. "nitrofurantoin monohydrate/macrocrystals 100 mg PO BID for 5 days"."""
    if isinstance(r, Regimen):
        dose = " + ".join(f"{d.ingredient} {d.amount:g} {d.unit}" for d in r.dose)
        duration = f"{r.duration.amount} {r.duration.unit}"
    else:
        dose = " + ".join(f"{d.ingredient} {d.amount:g} {d.unit}" for d in r.dose)
        duration = f"{r.duration_amount} {r.duration_unit}"
    return f"{r.drug} ({dose}) {r.route} {r.frequency} for {duration}"


def summary(ctx: CaseContext) -> str:
    i, t = ctx.intake, ctx.triage
    s = i.symptoms
    present = [name.replace("_", " ") for name in URINARY_SYMPTOMS if s and getattr(s, name)]
    flags = [
        name.replace("_", " ") for name in RED_FLAGS if i.red_flags and getattr(i.red_flags, name)
    ]
    who = f"{i.age if i.age is not None else 'unknown-age'}-year-old {i.sex.value if i.sex else 'unknown-sex'} patient"
    visit = (
        "follow-up visit"
        if i.encounter_type and i.encounter_type.value == "follow_up"
        else "initial visit"
    )
    parts = [f"{who}, {visit}."]
    if present:
        days = f" for {s.duration_days} days" if s and s.duration_days is not None else ""
        parts.append(f"Urinary symptoms: {', '.join(present)}{days}.")
    else:
        parts.append("No urinary symptoms recorded.")
    parts.append(f"Red flags: {', '.join(flags)}." if flags else "No red flags.")
    parts.append(
        f"Triage ({t.profile} {t.profile_version}) decided {t.decision.value.replace('_', ' ')}."
    )
    return " ".join(parts)


def differential(ctx: CaseContext) -> tuple[DifferentialItem, ...]:
    ids = set(ctx.triage.rule_ids)
    titles = {h.rule_id: h.title for h in ctx.triage.rules_fired}
    rf = sorted(i for i in ids if i.startswith("RF-"))
    items: list[DifferentialItem] = []
    if "DATA-001" in ids:
        return (
            DifferentialItem(
                condition="Not assessable: required answers missing",
                likelihood=Likelihood.POSSIBLE,
                reasons=(titles["DATA-001"],),
            ),
        )
    if rf:
        items.append(
            DifferentialItem(
                condition="Pyelonephritis or systemic infection",
                likelihood=Likelihood.POSSIBLE,
                reasons=tuple(f"{i}: {titles[i]}" for i in rf),
            )
        )
    if "SX-001" in ids:
        items.append(
            DifferentialItem(
                condition="Acute cystitis",
                likelihood=Likelihood.LIKELY,
                reasons=("Symptom criteria met (SX-001)",),
            )
        )
    elif "SX-002" in ids:
        items.append(
            DifferentialItem(
                condition="Acute cystitis",
                likelihood=Likelihood.UNLIKELY,
                reasons=("Symptom criteria not met (SX-002)",),
            )
        )
    if "SX-005" in ids:
        items.append(
            DifferentialItem(
                condition="Asymptomatic bacteriuria",
                likelihood=Likelihood.LIKELY,
                reasons=("Positive urine test without urinary symptoms (SX-005)",),
            )
        )
    if "SX-007" in ids:
        items.append(
            DifferentialItem(
                condition="Vaginitis or sexually transmitted infection",
                likelihood=Likelihood.POSSIBLE,
                reasons=("Vaginal discharge, itch or dyspareunia (SX-007)",),
            )
        )
    elif ctx.triage.decision is Decision.RECOMMEND_TREATMENT:
        items.append(
            DifferentialItem(
                condition="Vaginitis or sexually transmitted infection",
                likelihood=Likelihood.UNLIKELY,
                reasons=("No vaginal discharge, itch or dyspareunia",),
            )
        )
    if "SX-003" in ids or "SX-004" in ids:
        items.append(
            DifferentialItem(
                condition="Another cause needing assessment",
                likelihood=Likelihood.POSSIBLE,
                reasons=tuple(f"{i}: {titles[i]}" for i in sorted(ids & {"SX-003", "SX-004"})),
            )
        )
    if not rf and ctx.triage.decision is Decision.RECOMMEND_TREATMENT:
        items.append(
            DifferentialItem(
                condition="Pyelonephritis",
                likelihood=Likelihood.UNLIKELY,
                reasons=("No fever, rigors, flank pain, vomiting or systemic illness",),
            )
        )
    return tuple(items)


class _Claims:
    def __init__(self) -> None:
        self.items: list[Claim] = []

    def add(
        self, kind: ClaimKind, text: str, rule_ids: Sequence[str], facts: Sequence[str] = ()
    ) -> None:
        self.items.append(
            Claim(
                id=f"D{len(self.items) + 1}",
                text=text,
                kind=kind,
                rule_ids=tuple(rule_ids),
                facts=tuple(facts),
            )
        )


def _hit_text(ruleset: Ruleset, hit: RuleHit) -> str:
    text = ruleset.rules[hit.rule_id].text
    return f"{hit.title}: {hit.detail}. {text}" if hit.detail else f"{hit.title}. {text}"


def claims(ctx: CaseContext, ruleset: Ruleset, chosen: Regimen | None) -> tuple[Claim, ...]:
    """One claim per rule that shaped the decision, each naming its rule id and the facts read."""
    out = _Claims()
    t = ctx.triage
    for hit in t.rules_fired:
        if hit.rule_id.startswith("RX-SEL-") or hit.rule_id in ("FU-001", "FU-002"):
            continue  # said below, about the regimen actually proposed
        out.add(
            _CLAIM_KIND_BY_OUTCOME[hit.outcome],
            _hit_text(ruleset, hit),
            (hit.rule_id,),
            rule_facts(hit.rule_id),
        )
    if t.decision is Decision.RECOMMEND_TREATMENT and not any(
        h.rule_id.startswith("RF-") for h in t.rules_fired
    ):
        out.add(
            ClaimKind.DIAGNOSIS,
            "No red flag for pyelonephritis or systemic infection is present.",
            ("RF-001", "RF-002", "RF-003", "RF-004", "RF-005"),
            tuple(f"red_flags.{f}" for f in RED_FLAGS),
        )
    if chosen is not None:
        select = ruleset.regimens[chosen.agent].rule_id
        out.add(
            ClaimKind.TREATMENT,
            f"The proposed regimen is {regimen_text(chosen)}.",
            (select, "RX-001"),
        )
        for line in ruleset.regimens[chosen.agent].counselling:
            out.add(ClaimKind.TREATMENT, f"Counselling for {chosen.drug}: {line}", (select,))
        out.add(ClaimKind.FOLLOW_UP, ruleset.rules["FU-002"].text, ("FU-002",))
        out.add(ClaimKind.FOLLOW_UP, ruleset.rules["FU-001"].text, ("FU-001",))
    return tuple(out.items)


def _rationale(ctx: CaseContext, chosen: Regimen) -> str:
    t = ctx.triage
    order = [e.agent.value for e in t.agent_evaluations]
    excluded = [
        f"{e.agent.value} ({', '.join(h.rule_id for h in e.exclusions)})"
        for e in t.agent_evaluations
        if not e.eligible
    ]
    first = t.eligible_regimens[0] if t.eligible_regimens else None
    why = (
        f"it is the first agent in the profile's order ({' > '.join(order)}) with no exclusion"
        if chosen == first
        else "the first choice drew a concern and this is the next eligible regimen"
    )
    text = (
        f"Symptom criteria are met with no red flag, complicating factor or relapse, so triage "
        f"({t.profile} {t.profile_version}) recommends treatment. Proposed: {regimen_text(chosen)}, because {why}."
    )
    if excluded:
        text += f" Excluded: {'; '.join(excluded)}."
    if t.warnings:
        text += f" Warnings to act on: {', '.join(w.rule_id for w in t.warnings)}."
    return text


def _referral(ctx: CaseContext) -> str:
    t = ctx.triage
    decisive = [h for h in t.rules_fired if h.outcome in _DECISIVE]
    verb = {Decision.REFER: "Refer", Decision.NO_ANTIBIOTICS: "No antibiotic"}[t.decision]
    if t.follow_up.referral_urgency and t.follow_up.referral_urgency.value == "urgent":
        verb = "Refer urgently (same day)"
    reasons = "; ".join(
        f"{h.rule_id} {h.title}" + (f" ({h.detail})" if h.detail else "") for h in decisive
    )
    return f"{verb}: {reasons}. No pharmacist prescription is made; the triage decision stands."


def _safety_netting(ctx: CaseContext) -> tuple[str, ...]:
    lines = list(ctx.triage.follow_up.instructions)
    lines.append(
        "Seek urgent care for fever, chills, flank or back pain, vomiting, or if you feel much worse."
    )
    return tuple(dict.fromkeys(lines))


def _assessment(
    ctx: CaseContext,
    ruleset: Ruleset,
    chosen: Regimen | None,
    responses: tuple[ConcernResponse, ...] = (),
) -> ClinicalAssessment:
    treat = ctx.triage.decision is Decision.RECOMMEND_TREATMENT
    return ClinicalAssessment(
        summary=summary(ctx),
        differential=differential(ctx),
        proposed_regimen=proposed_from_regimen(chosen) if chosen else None,
        rationale=_rationale(ctx, chosen) if chosen else _referral(ctx),
        claims=claims(ctx, ruleset, chosen),
        referral_rationale="" if treat else _referral(ctx),
        safety_netting=_safety_netting(ctx),
        concern_responses=responses,
        run=AgentRun(),
    )


def propose(ctx: CaseContext, ruleset: Ruleset) -> ClinicalAssessment:
    """First assessment: triage's regimen when it recommends treatment, else the referral."""
    t = ctx.triage
    chosen = t.regimen if t.decision is Decision.RECOMMEND_TREATMENT else None
    return _assessment(ctx, ruleset, chosen)


def revise(
    ctx: CaseContext, ruleset: Ruleset, previous: ClinicalAssessment, concerns: Sequence[Concern]
) -> ClinicalAssessment:
    """Answer concerns: take a suggested eligible agent, else the next eligible regimen, else keep."""
    t = ctx.triage
    if t.decision is not Decision.RECOMMEND_TREATMENT:
        responses = tuple(
            ConcernResponse(
                concern_code=c.code, response="No prescription: the triage decision stands."
            )
            for c in concerns
        )
        return _assessment(ctx, ruleset, None, responses)
    eligible = list(t.eligible_regimens)
    by_agent: dict[Agent, Regimen] = {r.agent: r for r in eligible}
    current = previous.proposed_regimen.agent if previous.proposed_regimen else None
    suggested = next(
        (
            c.suggested_agent
            for c in concerns
            if c.suggested_agent in by_agent and c.suggested_agent != current
        ),
        None,
    )
    if suggested is not None:
        chosen, how = by_agent[suggested], "switched to the suggested eligible regimen"
    elif current in by_agent:
        later = eligible[eligible.index(by_agent[current]) + 1 :]
        if later:
            chosen, how = later[0], "switched to the next eligible regimen"
        else:
            chosen, how = (
                by_agent[current],
                "kept: no other eligible regimen; left for the prescriber",
            )
    else:
        chosen, how = eligible[0], "replaced by triage's first eligible regimen"
    responses = tuple(
        ConcernResponse(concern_code=c.code, response=f"{how} ({chosen.drug}).") for c in concerns
    )
    return _assessment(ctx, ruleset, chosen, responses)
