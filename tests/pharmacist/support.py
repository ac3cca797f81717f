"""Building pharmacist inputs in tests: a case context from a patient, proposals, requests."""

from __future__ import annotations

from typing import Any

from utimesh.agents.models import CaseContext, ClinicalAssessment, ProposedRegimen
from utimesh.codec.agents import assessment_to_proto, context_to_proto, proposed_from_regimen
from utimesh.pharmacist.v1 import pharmacist_pb2 as ppb
from utimesh.rules import Agent, Knowledge, assess, parse_intake
from utimesh.rules.knowledge import Ruleset


def context_for(
    knowledge: Knowledge, patient: dict[str, Any], profile: str = "CA-ON"
) -> tuple[CaseContext, Ruleset]:
    """The intake of `patient` with the real triage result for it."""
    ruleset = knowledge.ruleset(profile)
    intake = parse_intake(patient)
    return CaseContext(intake=intake, triage=assess(intake, ruleset)), ruleset


def forged_context(
    knowledge: Knowledge, patient: dict[str, Any], triage_of: dict[str, Any], profile: str = "CA-ON"
) -> tuple[CaseContext, Ruleset]:
    """The intake of `patient` with the triage result of another patient `triage_of`: a caller
    that lies or a stale triage result, which the pharmacist must not trust."""
    ruleset = knowledge.ruleset(profile)
    triage = assess(parse_intake(triage_of), ruleset)
    return CaseContext(intake=parse_intake(patient), triage=triage), ruleset


def proposal(ruleset: Ruleset, agent: Agent) -> ProposedRegimen:
    """The normative regimen of `agent`, as a doctor would propose it."""
    return proposed_from_regimen(ruleset.regimen_values[agent])


def doctor(proposed: ProposedRegimen | None, **fields: Any) -> ClinicalAssessment:
    return ClinicalAssessment(summary="Acute cystitis.", proposed_regimen=proposed, **fields)


def triage_plan(ctx: CaseContext) -> ClinicalAssessment:
    """The doctor proposing exactly triage's regimen (none when triage does not treat)."""
    regimen = ctx.triage.regimen
    return doctor(proposed_from_regimen(regimen) if regimen else None)


def review_request(ctx: CaseContext, assessment: ClinicalAssessment) -> ppb.ReviewPlanRequest:
    return ppb.ReviewPlanRequest(
        context=context_to_proto(ctx), assessment=assessment_to_proto(assessment)
    )
