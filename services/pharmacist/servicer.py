"""Thin PharmacistService servicer: proto <-> domain mapping, input checks, and the call to the
configured model. The clinical checks live in `domain/`."""

from __future__ import annotations

import logging

import grpc

from services.pharmacist.domain.checks import deterministic_review
from services.pharmacist.domain.model_review import (
    PharmacistModelOutput,
    build_user_message,
    merge,
)
from utimesh.agents.models import AgentRun, CaseContext, ClinicalAssessment, PharmacistReview
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.agents import assessment_from_proto, context_from_proto, review_to_proto
from utimesh.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument
from utimesh.llm import ConfigError, LLMError, ModelProfile, Prompt, StructuredLLM
from utimesh.pharmacist.v1 import pharmacist_pb2 as ppb
from utimesh.pharmacist.v1 import pharmacist_pb2_grpc
from utimesh.rules import Knowledge, UnknownProfileError
from utimesh.rules.knowledge import Ruleset

SERVICE_NAME = "utimesh.pharmacist.v1.PharmacistService"
DOMAIN = "pharmacist.utimesh.dev"
OFFLINE_PROVIDER = "offline"
# Time kept back from the call's budget so that, when the model runs out of time, the
# deterministic review still goes back to the caller instead of DEADLINE_EXCEEDED.
RESERVE_S = 0.25

log = logging.getLogger("utimesh.pharmacist")


def uses_model(profile: ModelProfile) -> bool:
    return profile.provider != OFFLINE_PROVIDER


def model_deadline(profile: ModelProfile, time_remaining: float | None, budget_s: float) -> float:
    """Seconds the model call may take: what the profile's attempts could need at most, within
    the server's budget and the caller's deadline, minus the reserve. 0 = no time left."""
    allowance = profile.timeout_s * (profile.retries + 1) * (profile.reasks + 1)
    limits = [allowance, budget_s - RESERVE_S]
    if time_remaining is not None:
        limits.append(time_remaining - RESERVE_S)
    return max(0.0, min(limits))


class PharmacistServicer(pharmacist_pb2_grpc.PharmacistServiceServicer):
    """`llm` and `prompt` are required when the profile's provider is not offline (ConfigError
    at start otherwise); with an offline profile no model is ever called."""

    def __init__(
        self,
        knowledge: Knowledge,
        *,
        llm: StructuredLLM | None,
        profile: ModelProfile,
        prompt: Prompt | None,
        max_budget_s: float,
    ) -> None:
        if uses_model(profile) and (llm is None or prompt is None):
            raise ConfigError(
                f"provider {profile.provider!r} needs an LLM client and a prompt",
                metadata={"provider": profile.provider},
            )
        self.knowledge = knowledge
        self._llm = llm if uses_model(profile) else None
        self._profile = profile
        self._prompt = prompt
        self._system = prompt.render() if prompt is not None else ""
        self._max_budget_s = max_budget_s

    async def ReviewPlan(
        self, request: ppb.ReviewPlanRequest, context: grpc.aio.ServicerContext
    ) -> ppb.ReviewPlanResponse:
        ctx, assessment = _decode(request)
        ruleset = self._ruleset(ctx)
        review = deterministic_review(ctx, assessment, ruleset)
        if self._llm is not None:
            review = await self._with_model(
                self._llm, ctx, assessment, review, context.time_remaining()
            )
        return ppb.ReviewPlanResponse(review=review_to_proto(review))

    async def _with_model(
        self,
        llm: StructuredLLM,
        ctx: CaseContext,
        assessment: ClinicalAssessment,
        review: PharmacistReview,
        time_remaining: float | None,
    ) -> PharmacistReview:
        prompt_id = self._prompt.id if self._prompt is not None else ""
        try:
            generation = await llm.generate(
                system=self._system,
                user=build_user_message(ctx, assessment, review),
                output_type=PharmacistModelOutput,
                profile=self._profile,
                deadline_s=model_deadline(self._profile, time_remaining, self._max_budget_s),
                prompt_version=prompt_id,
            )
        except LLMError as err:
            # Degrade loudly: the deterministic review stands and says what is missing.
            log.warning("model review missing", extra={"fields": {"reason": err.reason}})
            return review.model_copy(update={"model_review_missing_reason": err.reason})
        usage = generation.usage
        run = AgentRun(
            generated_by=generation.provider,
            provider=generation.provider,
            model=generation.model,
            prompt_version=generation.prompt_version or prompt_id,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            latency_ms=usage.latency_ms,
            attempts=generation.attempts,
        )
        eligible = {r.agent for r in ctx.triage.eligible_regimens}
        return merge(review, generation.output, run, eligible_agents=eligible)

    def _ruleset(self, ctx: CaseContext) -> Ruleset:
        try:
            ruleset = self.knowledge.ruleset(ctx.triage.profile)
        except UnknownProfileError as exc:
            raise InvalidArgument(
                str(exc),
                reason="UNKNOWN_PROFILE",
                violations=[
                    FieldViolation(
                        "context.triage.profile",
                        f"must be one of {', '.join(exc.available)}",
                        "UNKNOWN_PROFILE",
                    )
                ],
                metadata={"profile": ctx.triage.profile[:64]},
            ) from None
        if ctx.triage.ruleset_hash and ctx.triage.ruleset_hash != ruleset.content_hash:
            # Triage ran on other clinical knowledge (version skew): a review against this
            # one could contradict it. Refuse, so that the caller marks the review missing.
            raise FailedPrecondition(
                "triage used a different version of the clinical knowledge",
                reason="RULESET_MISMATCH",
                metadata={"profile": ruleset.id, "profile_version": ruleset.version},
            )
        return ruleset


def _decode(request: ppb.ReviewPlanRequest) -> tuple[CaseContext, ClinicalAssessment]:
    violations: list[FieldViolation] = []
    if not request.HasField("context"):
        violations.append(FieldViolation("context", "is required", "REQUIRED"))
    else:
        if not request.context.HasField("intake"):
            violations.append(FieldViolation("context.intake", "is required", "REQUIRED"))
        if not request.context.HasField("triage"):
            violations.append(FieldViolation("context.triage", "is required", "REQUIRED"))
        elif request.context.triage.decision == pb.DECISION_UNSPECIFIED:
            violations.append(FieldViolation("context.triage.decision", "must be set", "REQUIRED"))
    context_missing = bool(violations)
    if not request.HasField("assessment"):
        violations.append(FieldViolation("assessment", "is required", "REQUIRED"))
    if violations:
        raise InvalidArgument(
            f"the request misses {len(violations)} required field(s)",
            reason="MISSING_CONTEXT" if context_missing else "MISSING_ASSESSMENT",
            violations=violations,
        )
    try:
        ctx = context_from_proto(request.context)
    except (KeyError, ValueError):
        # An enum value this version cannot read (e.g. an unspecified regimen field).
        raise InvalidArgument(
            "the triage result in the context cannot be read",
            reason="INVALID_CONTEXT",
            violations=[FieldViolation("context.triage", "holds unreadable values", "INVALID")],
        ) from None
    return ctx, assessment_from_proto(request.assessment)
