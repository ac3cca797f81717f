"""Thin DoctorService servicer: decode, run the offline engine or the model, encode."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc

from services.doctor.domain import offline
from services.doctor.domain.model_io import DoctorModelOutput, to_assessment, user_message
from utimesh.agents.models import AgentRun, CaseContext, ClinicalAssessment, Concern
from utimesh.codec.agents import (
    assessment_from_proto,
    assessment_to_proto,
    concern_from_proto,
    context_from_proto,
)
from utimesh.doctor.v1 import doctor_pb2 as dpb
from utimesh.doctor.v1 import doctor_pb2_grpc
from utimesh.kit.errors import FieldViolation, InvalidArgument
from utimesh.llm import ModelProfile, StructuredLLM, load_prompt
from utimesh.rules import Knowledge, Ruleset, UnknownProfileError

SERVICE_NAME = "utimesh.doctor.v1.DoctorService"
DOMAIN = "doctor.utimesh.dev"


class DoctorServicer(doctor_pb2_grpc.DoctorServiceServicer):
    def __init__(
        self, knowledge: Knowledge, llm: StructuredLLM | None, profile: ModelProfile
    ) -> None:
        self.knowledge = knowledge
        self.llm = llm if profile.provider != "offline" else None
        self.profile = profile
        # Prompt files are read once, at start, not on every call.
        self.prompts = (
            {name: load_prompt(name) for name in ("doctor_propose", "doctor_revise")}
            if self.llm
            else {}
        )

    def _context(
        self, has_context: bool, msg: dpb.ProposePlanRequest | dpb.RevisePlanRequest
    ) -> CaseContext:
        if not has_context or not msg.context.HasField("triage"):
            raise InvalidArgument(
                "context with intake and triage is required",
                reason="MISSING_CONTEXT",
                violations=[
                    FieldViolation("context", "intake and triage are required", "REQUIRED")
                ],
            )
        return context_from_proto(msg.context)

    async def _model(
        self,
        ctx: CaseContext,
        prompt_name: str,
        deadline_s: float | None,
        previous: ClinicalAssessment | None = None,
        concerns: Sequence[Concern] = (),
    ) -> ClinicalAssessment:
        assert self.llm is not None
        prompt = self.prompts[prompt_name]
        started = time.perf_counter()
        gen = await self.llm.generate(
            system=prompt.text,
            user=user_message(ctx, previous, concerns),
            output_type=DoctorModelOutput,
            profile=self.profile,
            deadline_s=deadline_s,
            prompt_version=prompt.id,
        )
        run = AgentRun(
            generated_by=gen.provider,
            provider=gen.provider,
            model=gen.model,
            prompt_version=prompt.id,
            input_tokens=gen.usage.input_tokens,
            output_tokens=gen.usage.output_tokens,
            cost_usd=gen.usage.cost_usd,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            attempts=gen.attempts,
        )
        return to_assessment(gen.output, self._ruleset(ctx), run)

    def _ruleset(self, ctx: CaseContext) -> Ruleset:
        try:
            return self.knowledge.ruleset(ctx.triage.profile)
        except UnknownProfileError as exc:
            raise InvalidArgument(
                str(exc),
                reason="UNKNOWN_PROFILE",
                violations=[
                    FieldViolation("context.triage.profile", "unknown profile", "UNKNOWN_PROFILE")
                ],
            ) from None

    async def ProposePlan(
        self, request: dpb.ProposePlanRequest, context: grpc.aio.ServicerContext
    ) -> dpb.ProposePlanResponse:
        ctx = self._context(request.HasField("context"), request)
        if self.llm is None:
            assessment = offline.propose(ctx, self._ruleset(ctx))
        else:
            assessment = await self._model(ctx, "doctor_propose", context.time_remaining())
        return dpb.ProposePlanResponse(assessment=assessment_to_proto(assessment))

    async def RevisePlan(
        self, request: dpb.RevisePlanRequest, context: grpc.aio.ServicerContext
    ) -> dpb.RevisePlanResponse:
        ctx = self._context(request.HasField("context"), request)
        previous = assessment_from_proto(request.previous)
        concerns = [concern_from_proto(c) for c in request.concerns]
        if self.llm is None:
            assessment = offline.revise(ctx, self._ruleset(ctx), previous, concerns)
        else:
            assessment = await self._model(
                ctx, "doctor_revise", context.time_remaining(), previous, concerns
            )
        return dpb.RevisePlanResponse(assessment=assessment_to_proto(assessment))
