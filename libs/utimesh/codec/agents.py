"""utimesh.agents.v1 <-> utimesh.agents.models."""

from __future__ import annotations

from utimesh.agents import models as m
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec import triage as triage_codec
from utimesh.codec.clinical import (
    AGENTS,
    DURATION_UNITS,
    FREQUENCIES,
    ROUTES,
    intake_from_proto,
    intake_to_proto,
)
from utimesh.rules.model import Agent, CourseDuration, DoseComponent, Regimen

_CLAIM_KINDS = {k: apb.ClaimKind.Value(f"CLAIM_KIND_{k.name}") for k in m.ClaimKind}
_LIKELIHOODS = {k: apb.Likelihood.Value(f"LIKELIHOOD_{k.name}") for k in m.Likelihood}
_VERDICTS = {k: apb.Verdict.Value(f"VERDICT_{k.name}") for k in m.Verdict}
_SEVERITIES = {k: apb.Severity.Value(f"SEVERITY_{k.name}") for k in m.Severity}
_CLAIM_KINDS_FROM = {v: k for k, v in _CLAIM_KINDS.items()}
_LIKELIHOODS_FROM = {v: k for k, v in _LIKELIHOODS.items()}
_VERDICTS_FROM = {v: k for k, v in _VERDICTS.items()}
_SEVERITIES_FROM = {v: k for k, v in _SEVERITIES.items()}
_AGENTS_FROM = {v: k for k, v in AGENTS.items()}
_ROUTES_FROM = {v: k for k, v in ROUTES.items()}
_FREQUENCIES_FROM = {v: k for k, v in FREQUENCIES.items()}
_DURATIONS_FROM = {v: k for k, v in DURATION_UNITS.items()}
UNSPECIFIED = "unspecified"  # a word no normative regimen uses


def context_to_proto(ctx: m.CaseContext) -> apb.CaseContext:
    return apb.CaseContext(
        intake=intake_to_proto(ctx.intake), triage=triage_codec.assessment_to_proto(ctx.triage)
    )


def context_from_proto(msg: apb.CaseContext) -> m.CaseContext:
    return m.CaseContext(
        intake=intake_from_proto(msg.intake), triage=triage_codec.assessment_from_proto(msg.triage)
    )


# --- regimens -----------------------------------------------------------------------------------


def proposed_from_regimen(r: Regimen) -> m.ProposedRegimen:
    return m.ProposedRegimen(
        agent=r.agent,
        drug=r.drug,
        dose=tuple(m.Dose(ingredient=d.ingredient, amount=d.amount, unit=d.unit) for d in r.dose),
        dose_form=r.dose_form,
        route=r.route,
        frequency=r.frequency,
        duration_amount=r.duration.amount,
        duration_unit=r.duration.unit,
    )


def regimen_from_proposed(p: m.ProposedRegimen) -> Regimen | None:
    """The structured regimen, or None when the agent is not one the rules know."""
    if p.agent is None:
        return None
    return Regimen(
        agent=p.agent,
        drug=p.drug,
        dose=tuple(DoseComponent(d.ingredient, d.amount, d.unit) for d in p.dose),
        dose_form=p.dose_form,
        route=p.route,
        frequency=p.frequency,
        duration=CourseDuration(p.duration_amount, p.duration_unit),
    )


def proposed_to_proto(p: m.ProposedRegimen) -> pb.Regimen:
    """Unknown words become *_UNSPECIFIED: the allow-list then reports them as violations."""
    return pb.Regimen(
        agent=AGENTS[p.agent] if p.agent else pb.AGENT_UNSPECIFIED,
        drug=p.drug,
        dose=[
            pb.DoseComponent(ingredient=d.ingredient, amount=d.amount, unit=d.unit) for d in p.dose
        ],
        dose_form=p.dose_form,
        route=ROUTES.get(p.route, pb.ROUTE_UNSPECIFIED),
        frequency=FREQUENCIES.get(p.frequency, pb.FREQUENCY_UNSPECIFIED),
        duration=pb.CourseDuration(
            amount=p.duration_amount,
            unit=DURATION_UNITS.get(p.duration_unit, pb.DURATION_UNIT_UNSPECIFIED),
        ),
    )


def proposed_from_proto(msg: pb.Regimen) -> m.ProposedRegimen:
    """Lenient: an unspecified or unknown enum is kept as the word "unspecified"."""
    return m.ProposedRegimen(
        agent=_AGENTS_FROM.get(msg.agent),
        drug=msg.drug,
        dose=tuple(m.Dose(ingredient=d.ingredient, amount=d.amount, unit=d.unit) for d in msg.dose),
        dose_form=msg.dose_form,
        route=_ROUTES_FROM.get(msg.route, UNSPECIFIED),
        frequency=_FREQUENCIES_FROM.get(msg.frequency, UNSPECIFIED),
        duration_amount=msg.duration.amount,
        duration_unit=_DURATIONS_FROM.get(msg.duration.unit, UNSPECIFIED),
    )


# --- pieces ---------------------------------------------------------------------------------


def claim_to_proto(c: m.Claim) -> apb.Claim:
    return apb.Claim(
        id=c.id, text=c.text, kind=_CLAIM_KINDS[c.kind], rule_ids=c.rule_ids, facts=c.facts
    )


def claim_from_proto(msg: apb.Claim) -> m.Claim:
    return m.Claim(
        id=msg.id,
        text=msg.text,
        kind=_CLAIM_KINDS_FROM.get(msg.kind, m.ClaimKind.DIAGNOSIS),
        rule_ids=tuple(msg.rule_ids),
        facts=tuple(msg.facts),
    )


def run_to_proto(r: m.AgentRun) -> apb.AgentRun:
    return apb.AgentRun(**r.model_dump())


def run_from_proto(msg: apb.AgentRun) -> m.AgentRun:
    return m.AgentRun(
        generated_by=msg.generated_by,
        provider=msg.provider,
        model=msg.model,
        prompt_version=msg.prompt_version,
        input_tokens=msg.input_tokens,
        output_tokens=msg.output_tokens,
        cost_usd=msg.cost_usd,
        latency_ms=msg.latency_ms,
        attempts=msg.attempts,
    )


def concern_to_proto(c: m.Concern) -> apb.Concern:
    return apb.Concern(
        severity=_SEVERITIES[c.severity],
        code=c.code,
        text=c.text,
        suggested_action=c.suggested_action,
        rule_ids=c.rule_ids,
        source=c.source,
        suggested_agent=AGENTS[c.suggested_agent] if c.suggested_agent else pb.AGENT_UNSPECIFIED,
    )


def concern_from_proto(msg: apb.Concern) -> m.Concern:
    return m.Concern(
        severity=_SEVERITIES_FROM.get(msg.severity, m.Severity.INFO),
        code=msg.code,
        text=msg.text,
        suggested_action=msg.suggested_action,
        rule_ids=tuple(msg.rule_ids),
        source=msg.source,
        suggested_agent=_AGENTS_FROM.get(msg.suggested_agent),
    )


# --- assessments and reviews ----------------------------------------------------------------


def assessment_to_proto(a: m.ClinicalAssessment) -> apb.ClinicalAssessment:
    return apb.ClinicalAssessment(
        summary=a.summary,
        differential=[
            apb.DifferentialItem(
                condition=d.condition, likelihood=_LIKELIHOODS[d.likelihood], reasons=d.reasons
            )
            for d in a.differential
        ],
        proposed_regimen=proposed_to_proto(a.proposed_regimen) if a.proposed_regimen else None,
        rationale=a.rationale,
        claims=[claim_to_proto(c) for c in a.claims],
        referral_rationale=a.referral_rationale,
        safety_netting=a.safety_netting,
        concern_responses=[
            apb.ConcernResponse(concern_code=r.concern_code, response=r.response)
            for r in a.concern_responses
        ],
        run=run_to_proto(a.run),
    )


def assessment_from_proto(msg: apb.ClinicalAssessment) -> m.ClinicalAssessment:
    return m.ClinicalAssessment(
        summary=msg.summary,
        differential=tuple(
            m.DifferentialItem(
                condition=d.condition,
                likelihood=_LIKELIHOODS_FROM.get(d.likelihood, m.Likelihood.POSSIBLE),
                reasons=tuple(d.reasons),
            )
            for d in msg.differential
        ),
        proposed_regimen=proposed_from_proto(msg.proposed_regimen)
        if msg.HasField("proposed_regimen")
        else None,
        rationale=msg.rationale,
        claims=tuple(claim_from_proto(c) for c in msg.claims),
        referral_rationale=msg.referral_rationale,
        safety_netting=tuple(msg.safety_netting),
        concern_responses=tuple(
            m.ConcernResponse(concern_code=r.concern_code, response=r.response)
            for r in msg.concern_responses
        ),
        run=run_from_proto(msg.run),
    )


def review_to_proto(r: m.PharmacistReview) -> apb.PharmacistReview:
    return apb.PharmacistReview(
        verdict=_VERDICTS[r.verdict],
        concerns=[concern_to_proto(c) for c in r.concerns],
        monitoring=r.monitoring,
        counselling=r.counselling,
        claims=[claim_to_proto(c) for c in r.claims],
        deterministic_checks_run=r.deterministic_checks_run,
        model_review_missing_reason=r.model_review_missing_reason,
        run=run_to_proto(r.run),
    )


def review_from_proto(msg: apb.PharmacistReview) -> m.PharmacistReview:
    return m.PharmacistReview(
        verdict=_VERDICTS_FROM.get(
            msg.verdict, m.Verdict.REJECT
        ),  # unreadable verdict: the strictest
        concerns=tuple(concern_from_proto(c) for c in msg.concerns),
        monitoring=tuple(msg.monitoring),
        counselling=tuple(msg.counselling),
        claims=tuple(claim_from_proto(c) for c in msg.claims),
        deterministic_checks_run=msg.deterministic_checks_run,
        model_review_missing_reason=msg.model_review_missing_reason,
        run=run_from_proto(msg.run),
    )


def agent_from_code(code: str) -> Agent | None:
    try:
        return Agent(code)
    except ValueError:
        return None
