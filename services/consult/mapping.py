"""Consultation domain <-> utimesh.consult.v1 messages (the servicer's only translation)."""

from __future__ import annotations

from services.consult.domain.deliberation import ConsultationResult, Progress, TranscriptEntry
from utimesh.agents.models import Verdict
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.codec.agents import (
    assessment_to_proto,
    concern_to_proto,
    proposed_to_proto,
    review_to_proto,
    run_to_proto,
)
from utimesh.codec.clinical import decision_to_proto, regimen_to_proto
from utimesh.codec.triage import assessment_to_proto as triage_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.triage.v1 import triage_pb2 as tpb

_VERDICTS = {v: apb.Verdict.Value(f"VERDICT_{v.name}") for v in Verdict}


def progress_to_proto(p: Progress) -> cpb.Progress:
    return cpb.Progress(
        step=p.step, round=p.round, status=p.status, message=p.message, elapsed_ms=p.elapsed_ms
    )


def entry_to_proto(e: TranscriptEntry) -> cpb.TranscriptEntry:
    return cpb.TranscriptEntry(
        round=e.round,
        actor=e.actor,
        action=e.action,
        summary=e.summary,
        elapsed_ms=e.elapsed_ms,
        run=run_to_proto(e.run) if e.run else None,
        regimen=proposed_to_proto(e.regimen) if e.regimen else None,
        violations=[
            tpb.PlanViolation(code=v.code, field=v.field, message=v.message, rule_ids=v.rule_ids)
            for v in e.violations
        ],
        verdict=_VERDICTS[e.verdict] if e.verdict else apb.VERDICT_UNSPECIFIED,
        concerns=[concern_to_proto(c) for c in e.concerns],
    )


def result_to_proto(
    r: ConsultationResult, *, name: str, request_id: str, create_time: str
) -> cpb.Consultation:
    return cpb.Consultation(
        name=name,
        request_id=request_id,
        outcome=cpb.Outcome.Value(f"OUTCOME_{r.outcome.name}"),
        escalation_reason=(
            cpb.EscalationReason.Value(f"ESCALATION_REASON_{r.escalation_reason.name}")
            if r.escalation_reason
            else cpb.ESCALATION_REASON_UNSPECIFIED
        ),
        decision=decision_to_proto(r.decision),
        regimen=regimen_to_proto(r.regimen) if r.regimen else None,
        needs_prescriber_review=r.needs_prescriber_review,
        missing_reviews=r.missing_reviews,
        rounds=r.rounds,
        transcript=[entry_to_proto(e) for e in r.transcript],
        triage=triage_to_proto(r.triage),
        assessment=assessment_to_proto(r.assessment) if r.assessment else None,
        review=review_to_proto(r.review) if r.review else None,
        usage=cpb.Usage(
            input_tokens=r.usage.input_tokens,
            output_tokens=r.usage.output_tokens,
            cost_usd=r.usage.cost_usd,
            model_calls=r.usage.model_calls,
        ),
        notice=r.notice,
        create_time=create_time,
        status=cpb.CONSULTATION_STATUS_DRAFT,
    )
