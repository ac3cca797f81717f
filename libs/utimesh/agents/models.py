"""Agent outputs as validated domain types (pydantic). Agents are advisory: none of these types
can carry a decision; a proposed regimen is checked against triage's allow-list by the caller."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from utimesh.rules.model import Agent, Assessment, Intake

OFFLINE = "offline-rules"  # generated_by of the deterministic engine: no LLM was used


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClaimKind(StrEnum):
    DIAGNOSIS = "diagnosis"
    TREATMENT = "treatment"
    SAFETY = "safety"
    REFERRAL = "referral"
    FOLLOW_UP = "follow_up"


class Claim(_Model):
    """An atomic statement and what it rests on (rule ids and/or intake field paths)."""

    id: str
    text: str
    kind: ClaimKind
    rule_ids: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()


class Likelihood(StrEnum):
    LIKELY = "likely"
    POSSIBLE = "possible"
    UNLIKELY = "unlikely"


class DifferentialItem(_Model):
    condition: str
    likelihood: Likelihood
    reasons: tuple[str, ...] = ()


class AgentRun(_Model):
    generated_by: str = OFFLINE
    provider: str = "offline"
    model: str = OFFLINE
    prompt_version: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0


class Dose(_Model):
    ingredient: str
    amount: float
    unit: str


class ProposedRegimen(_Model):
    """A regimen as an agent proposed it. It may be wrong on purpose or by accident: an unknown
    agent is None and unknown words are kept, so that the allow-list check can say what is wrong."""

    agent: Agent | None
    drug: str
    dose: tuple[Dose, ...] = ()
    dose_form: str = ""
    route: str = ""
    frequency: str = ""
    duration_amount: int = 0
    duration_unit: str = ""


class ConcernResponse(_Model):
    concern_code: str
    response: str


class ClinicalAssessment(_Model):
    summary: str
    differential: tuple[DifferentialItem, ...] = ()
    proposed_regimen: ProposedRegimen | None = None
    rationale: str = ""
    claims: tuple[Claim, ...] = ()
    referral_rationale: str = ""
    safety_netting: tuple[str, ...] = ()
    concern_responses: tuple[ConcernResponse, ...] = ()
    run: AgentRun = Field(default_factory=AgentRun)


class Verdict(StrEnum):
    APPROVE = "approve"
    APPROVE_WITH_MONITORING = "approve_with_monitoring"
    REQUEST_CHANGE = "request_change"
    REJECT = "reject"


VERDICT_ORDER = {
    Verdict.APPROVE: 0,
    Verdict.APPROVE_WITH_MONITORING: 1,
    Verdict.REQUEST_CHANGE: 2,
    Verdict.REJECT: 3,
}


def stricter(a: Verdict, b: Verdict) -> Verdict:
    """The stricter of two verdicts: a model can only make a review stricter."""
    return a if VERDICT_ORDER[a] >= VERDICT_ORDER[b] else b


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    CRITICAL = "critical"


class Concern(_Model):
    severity: Severity
    code: str
    text: str
    suggested_action: str = ""
    rule_ids: tuple[str, ...] = ()
    source: str = "deterministic"  # or "model", or "triage" for allow-list violations
    suggested_agent: Agent | None = None


class PharmacistReview(_Model):
    verdict: Verdict
    concerns: tuple[Concern, ...] = ()
    monitoring: tuple[str, ...] = ()
    counselling: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()
    deterministic_checks_run: bool = True
    model_review_missing_reason: str = ""
    run: AgentRun = Field(default_factory=AgentRun)


class CaseContext(_Model):
    """What an agent sees: the intake (no identifiers) and the authoritative triage result."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    intake: Intake
    triage: Assessment
