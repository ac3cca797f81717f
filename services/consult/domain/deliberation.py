"""One consultation: triage, then the doctor and the pharmacist deliberate in bounded rounds,
every proposal checked against triage's allow-list, and the outcome made explicit.

Pure orchestration over ports (Protocols); adapters for gRPC live in `adapters/`. Safety rules
enforced here: the triage decision is final; a regimen is only ever one that triage's
ValidatePlan allowed; a REJECT or no agreement escalates to a human with the deterministic
decision kept; a missing review is listed and never reported as done.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from utimesh.agents.models import (
    OFFLINE,
    AgentRun,
    CaseContext,
    ClinicalAssessment,
    Concern,
    PharmacistReview,
    ProposedRegimen,
    Severity,
    Verdict,
)
from utimesh.codec.agents import proposed_from_regimen, regimen_from_proposed
from utimesh.rules.allowlist import PlanCheck, PlanViolation
from utimesh.rules.model import Assessment, Decision, Intake, Regimen

DEFAULT_MAX_ROUNDS = 3


class ReviewUnavailable(Exception):
    """An agent could not answer (down, timed out, model failing). The consultation degrades."""

    def __init__(self, actor: str, reason: str) -> None:
        super().__init__(f"{actor} unavailable: {reason}")
        self.actor = actor
        self.reason = reason


class TriagePort(Protocol):
    async def assess(self, intake: Intake, profile: str, deadline_s: float) -> Assessment: ...

    async def validate(
        self, intake: Intake, profile: str, proposal: ProposedRegimen, deadline_s: float
    ) -> PlanCheck: ...


class DoctorPort(Protocol):
    async def propose(self, ctx: CaseContext, deadline_s: float) -> ClinicalAssessment: ...

    async def revise(
        self,
        ctx: CaseContext,
        previous: ClinicalAssessment,
        concerns: Sequence[Concern],
        round_no: int,
        deadline_s: float,
    ) -> ClinicalAssessment: ...


class PharmacistPort(Protocol):
    async def review(
        self, ctx: CaseContext, assessment: ClinicalAssessment, deadline_s: float
    ) -> PharmacistReview: ...


@dataclass(frozen=True)
class Ports:
    triage: TriagePort
    doctor: DoctorPort
    pharmacist: PharmacistPort


class Outcome(StrEnum):
    AGREED = "agreed"
    NOT_TREATED = "not_treated"
    ESCALATED = "escalated"
    UNREVIEWED = "unreviewed"


class EscalationReason(StrEnum):
    PHARMACIST_REJECTED = "pharmacist_rejected"
    NO_AGREEMENT = "no_agreement"
    AGENT_CONTRADICTED_TRIAGE = "agent_contradicted_triage"


@dataclass(frozen=True)
class Progress:
    step: str
    round: int
    status: str  # started | done | failed
    message: str
    elapsed_ms: float


@dataclass(frozen=True)
class TranscriptEntry:
    round: int
    actor: str
    action: str
    summary: str
    elapsed_ms: float
    run: AgentRun | None = None
    regimen: ProposedRegimen | None = None
    violations: tuple[PlanViolation, ...] = ()
    verdict: Verdict | None = None
    concerns: tuple[Concern, ...] = ()


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0


@dataclass(frozen=True)
class ConsultationResult:
    outcome: Outcome
    escalation_reason: EscalationReason | None
    decision: Decision
    regimen: Regimen | None
    needs_prescriber_review: bool
    missing_reviews: tuple[str, ...]
    rounds: int
    transcript: tuple[TranscriptEntry, ...]
    triage: Assessment
    assessment: ClinicalAssessment | None
    review: PharmacistReview | None
    usage: Usage
    notice: str


Emit = Callable[[Progress], Awaitable[None]]


async def _ignore(_: Progress) -> None:
    return None


@dataclass
class _Run:
    """Mutable state of one consultation while it runs."""

    intake: Intake
    profile: str
    ports: Ports
    emit: Emit
    deadline: float  # monotonic
    agent_timeout_s: float
    started: float = field(default_factory=time.monotonic)
    transcript: list[TranscriptEntry] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 3)

    def remaining(self, cap: float | None = None) -> float:
        left = max(0.001, self.deadline - time.monotonic())
        return min(left, cap) if cap is not None else left

    def note(self, round_no: int, actor: str, action: str, summary: str, **extra: Any) -> None:
        self.transcript.append(
            TranscriptEntry(round_no, actor, action, summary, self.elapsed_ms(), **extra)
        )

    async def progress(self, step: str, round_no: int, status: str, message: str) -> None:
        await self.emit(Progress(step, round_no, status, message, self.elapsed_ms()))

    def lose(self, actor: str, round_no: int, reason: str) -> None:
        if actor not in self.missing:
            self.missing.append(actor)
        self.note(
            round_no,
            "consult",
            "degrade",
            f"{actor} review unavailable ({reason}); continuing without it",
        )


def _regimen_words(p: ProposedRegimen | None) -> str:
    if p is None:
        return "no regimen"
    dose = " + ".join(f"{d.amount:g} {d.unit}" for d in p.dose)
    return f"{p.drug} {dose} {p.route} {p.frequency} x {p.duration_amount} {p.duration_unit}"


def _violation_concerns(check: PlanCheck) -> tuple[Concern, ...]:
    return tuple(
        Concern(
            severity=Severity.HIGH,
            code=v.code,
            text=v.message,
            suggested_action="Choose one of the eligible regimens exactly.",
            rule_ids=v.rule_ids,
            source="triage",
        )
        for v in check.violations
    )


async def deliberate(
    intake: Intake,
    profile: str,
    ports: Ports,
    *,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    budget_s: float = 60.0,
    agent_timeout_s: float = 30.0,
    emit: Emit | None = None,
) -> ConsultationResult:
    """Run one consultation. Triage errors propagate (nothing can be decided without it);
    agent failures degrade the result and are listed."""
    run = _Run(
        intake, profile, ports, emit or _ignore, time.monotonic() + budget_s, agent_timeout_s
    )

    await run.progress("triage", 0, "started", "assessing with the rules engine")
    triage = await ports.triage.assess(intake, profile, run.remaining())
    run.note(
        0,
        "triage",
        "assess",
        f"{triage.profile} {triage.profile_version}: {triage.decision.value}; rules fired: "
        f"{', '.join(triage.rule_ids)}",
    )
    await run.progress("triage", 0, "done", f"decision {triage.decision.value}")
    ctx = CaseContext(intake=intake, triage=triage)
    state = await _deliberation(run, ctx, max_rounds)
    return await _finalise(run, ctx, *state)


async def _doctor(
    run: _Run,
    ctx: CaseContext,
    round_no: int,
    previous: ClinicalAssessment | None,
    concerns: Sequence[Concern],
) -> ClinicalAssessment | None:
    step = "doctor_propose" if previous is None else "doctor_revise"
    await run.progress(
        step, round_no, "started", "doctor " + ("proposing" if previous is None else "revising")
    )
    try:
        timeout = run.remaining(run.agent_timeout_s)
        if previous is None:
            assessment = await run.ports.doctor.propose(ctx, timeout)
        else:
            assessment = await run.ports.doctor.revise(ctx, previous, concerns, round_no, timeout)
    except ReviewUnavailable as exc:
        await run.progress(step, round_no, "failed", f"doctor unavailable ({exc.reason})")
        run.lose("doctor", round_no, exc.reason)
        return None
    action = "propose" if previous is None else "revise"
    run.note(
        round_no,
        "doctor",
        action,
        f"{action}d {_regimen_words(assessment.proposed_regimen)}; {len(assessment.claims)} claims",
        run=assessment.run,
        regimen=assessment.proposed_regimen,
    )
    await run.progress(step, round_no, "done", _regimen_words(assessment.proposed_regimen))
    return assessment


async def _pharmacist(
    run: _Run, ctx: CaseContext, round_no: int, assessment: ClinicalAssessment
) -> PharmacistReview | None:
    await run.progress("pharmacist_review", round_no, "started", "pharmacist reviewing")
    try:
        review = await run.ports.pharmacist.review(
            ctx, assessment, run.remaining(run.agent_timeout_s)
        )
    except ReviewUnavailable as exc:
        await run.progress(
            "pharmacist_review", round_no, "failed", f"pharmacist unavailable ({exc.reason})"
        )
        run.lose("pharmacist", round_no, exc.reason)
        return None
    if review.model_review_missing_reason and "pharmacist model" not in run.missing:
        run.missing.append("pharmacist model")
    codes = ", ".join(f"{c.severity.value} {c.code}" for c in review.concerns) or "no concerns"
    run.note(
        round_no,
        "pharmacist",
        "review",
        f"{review.verdict.value}: {codes}",
        run=review.run,
        verdict=review.verdict,
        concerns=review.concerns,
    )
    await run.progress("pharmacist_review", round_no, "done", review.verdict.value)
    return review


async def _validate(
    run: _Run, ctx: CaseContext, round_no: int, proposal: ProposedRegimen
) -> PlanCheck:
    await run.progress(
        "validate_plan", round_no, "started", "checking the proposal against the allow-list"
    )
    check = await run.ports.triage.validate(run.intake, run.profile, proposal, run.remaining())
    summary = (
        "allowed: one of triage's eligible regimens"
        if check.allowed
        else "not allowed: " + "; ".join(f"{v.code} {v.message}" for v in check.violations)
    )
    run.note(round_no, "triage", "validate", summary, regimen=proposal, violations=check.violations)
    await run.progress(
        "validate_plan", round_no, "done", "allowed" if check.allowed else "not allowed"
    )
    return check


_State = tuple[
    Outcome,
    EscalationReason | None,
    ClinicalAssessment | None,
    PharmacistReview | None,
    int,
    ProposedRegimen | None,
]


async def _deliberation(run: _Run, ctx: CaseContext, max_rounds: int) -> _State:
    """The bounded loop. Returns the outcome and what the final plan rests on."""
    treat = ctx.triage.decision is Decision.RECOMMEND_TREATMENT
    assessment = await _doctor(run, ctx, 1, None, ())
    if assessment is None:
        # No doctor: the pharmacist still reviews triage's own plan, and the result says so.
        fallback = ClinicalAssessment(
            summary="Doctor review unavailable: triage's plan reviewed as is.",
            proposed_regimen=proposed_from_regimen(ctx.triage.regimen)
            if ctx.triage.regimen
            else None,
            run=AgentRun(generated_by="triage", provider="none", model="none"),
        )
        fallback_review = await _pharmacist(run, ctx, 1, fallback)
        return Outcome.UNREVIEWED, None, None, fallback_review, 1, None
    review: PharmacistReview | None = None
    for round_no in range(1, max_rounds + 1):
        proposal = assessment.proposed_regimen
        if not treat:
            if proposal is not None:
                await _validate(run, ctx, round_no, proposal)  # records DECISION_NOT_TREATMENT
                run.note(
                    round_no,
                    "consult",
                    "escalate",
                    "the doctor proposed a prescription although triage decided "
                    f"{ctx.triage.decision.value}; the proposal is discarded",
                )
                return (
                    Outcome.ESCALATED,
                    EscalationReason.AGENT_CONTRADICTED_TRIAGE,
                    assessment,
                    None,
                    round_no,
                    None,
                )
            review = await _pharmacist(run, ctx, round_no, assessment)
            if review is None:
                return Outcome.UNREVIEWED, None, assessment, None, round_no, None
            if review.verdict is Verdict.REJECT:
                return (
                    Outcome.ESCALATED,
                    EscalationReason.PHARMACIST_REJECTED,
                    assessment,
                    review,
                    round_no,
                    None,
                )
            return Outcome.NOT_TREATED, None, assessment, review, round_no, None

        concerns: tuple[Concern, ...]
        if proposal is None:
            concerns = (
                Concern(
                    severity=Severity.HIGH,
                    code="NO_PLAN",
                    text="Triage recommends treatment but no regimen was proposed.",
                    source="triage",
                ),
            )
            run.note(round_no, "consult", "validate", "no regimen proposed", concerns=concerns)
        else:
            check = await _validate(run, ctx, round_no, proposal)
            if check.allowed:
                review = await _pharmacist(run, ctx, round_no, assessment)
                if review is None:
                    return Outcome.UNREVIEWED, None, assessment, None, round_no, None
                if review.verdict in (Verdict.APPROVE, Verdict.APPROVE_WITH_MONITORING):
                    run.note(round_no, "consult", "agree", f"agreed on {_regimen_words(proposal)}")
                    return Outcome.AGREED, None, assessment, review, round_no, proposal
                if review.verdict is Verdict.REJECT:
                    run.note(round_no, "consult", "escalate", "the pharmacist rejected the plan")
                    return (
                        Outcome.ESCALATED,
                        EscalationReason.PHARMACIST_REJECTED,
                        assessment,
                        review,
                        round_no,
                        None,
                    )
                concerns = review.concerns
            else:
                concerns = _violation_concerns(check)
        if round_no == max_rounds:
            break
        revised = await _doctor(run, ctx, round_no + 1, assessment, concerns)
        if revised is None:
            return (
                Outcome.ESCALATED,
                EscalationReason.NO_AGREEMENT,
                assessment,
                review,
                round_no,
                None,
            )
        assessment = revised
    run.note(max_rounds, "consult", "escalate", f"no agreement within {max_rounds} round(s)")
    return Outcome.ESCALATED, EscalationReason.NO_AGREEMENT, assessment, review, max_rounds, None


async def _finalise(
    run: _Run,
    ctx: CaseContext,
    outcome: Outcome,
    reason: EscalationReason | None,
    assessment: ClinicalAssessment | None,
    review: PharmacistReview | None,
    rounds: int,
    agreed: ProposedRegimen | None,
) -> ConsultationResult:
    triage = ctx.triage
    await run.progress("finalize", 0, "started", "final allow-list check")
    regimen: Regimen | None = triage.regimen  # the deterministic decision, unless a plan was agreed
    if outcome is Outcome.AGREED and agreed is not None:
        final = await run.ports.triage.validate(run.intake, run.profile, agreed, run.remaining())
        if final.allowed:
            regimen = regimen_from_proposed(agreed)
            run.note(
                0, "consult", "finalize", "final plan passed the allow-list check", regimen=agreed
            )
        else:  # cannot happen unless the ruleset changed under us; never ship an unchecked plan
            outcome, reason = Outcome.ESCALATED, EscalationReason.NO_AGREEMENT
            run.note(
                0,
                "consult",
                "escalate",
                "final allow-list check failed",
                violations=final.violations,
            )
    if triage.decision is not Decision.RECOMMEND_TREATMENT:
        regimen = None
    needs_review = outcome not in (Outcome.AGREED, Outcome.NOT_TREATED) or bool(run.missing)
    runs = [e.run for e in run.transcript if e.run is not None]
    usage = Usage(
        input_tokens=sum(r.input_tokens for r in runs),
        output_tokens=sum(r.output_tokens for r in runs),
        cost_usd=round(sum(r.cost_usd for r in runs), 6),
        model_calls=sum(r.attempts for r in runs if r.generated_by != OFFLINE),
    )
    await run.progress("finalize", 0, "done", outcome.value)
    return ConsultationResult(
        outcome=outcome,
        escalation_reason=reason,
        decision=triage.decision,
        regimen=regimen,
        needs_prescriber_review=needs_review,
        missing_reviews=tuple(run.missing),
        rounds=rounds,
        transcript=tuple(run.transcript),
        triage=triage,
        assessment=assessment,
        review=review,
        usage=usage,
        notice=notice_for(outcome, reason, run.missing, runs),
    )


def notice_for(
    outcome: Outcome,
    reason: EscalationReason | None,
    missing: Sequence[str],
    runs: Sequence[AgentRun],
) -> str:
    parts = ["DRAFT for prescriber sign-off."]
    if outcome is Outcome.ESCALATED and reason is not None:
        parts.append(
            f"Escalated to a human ({reason.value.replace('_', ' ')}): the deterministic triage decision is kept."
        )
    if missing:
        parts.append(f"NOT reviewed by: {', '.join(missing)}.")
    if runs and all(r.generated_by == OFFLINE for r in runs):
        parts.append("Agent text generated offline from the rules: no LLM was used.")
    return " ".join(parts)
