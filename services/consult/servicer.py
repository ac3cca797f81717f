"""Thin ConsultationService servicer: request checks, the use case, proto mapping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from google.longrunning import operations_pb2

from services.consult import DOMAIN
from services.consult.app import ConsultationApp, Emit
from services.consult.domain.deliberation import Progress
from services.consult.jobs.rpcs import Jobs, start_consultation
from services.consult.mapping import progress_to_proto
from services.consult.memory_rpcs import MemoryRpcs
from services.consult.record_rpcs import RecordRpcs
from utimesh.cache.ratelimit import RateLimiter
from utimesh.codec.clinical import intake_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.caller import caller_of
from utimesh.kit.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unavailable
from utimesh.report.v1 import report_pb2 as rpb

SERVICE_NAME = "utimesh.consult.v1.ConsultationService"
__all__ = ["DOMAIN", "SERVICE_NAME", "ConsultationServicer"]
MAX_ROUNDS_LIMIT = 5
MAX_QUESTION_CHARS = 1000


class ConsultationServicer(MemoryRpcs, RecordRpcs, consult_pb2_grpc.ConsultationServiceServicer):
    def __init__(
        self, app: ConsultationApp, limiter: RateLimiter | None = None, jobs: Jobs | None = None
    ) -> None:
        self.app = app
        self.limiter = limiter  # None: no rate limits in this service (the edge's still apply)
        self.jobs = jobs  # None: no job queue (StartConsultation says so)

    async def _rate_limit(self, endpoint: str, context: grpc.aio.ServicerContext) -> None:
        """Count the call against the caller's (JWT subject's) limit for `endpoint`."""
        if self.limiter is None:
            return
        decision = await self.limiter.check(endpoint, caller_of(context).sub)
        if not decision.allowed:
            raise ResourceExhausted(
                "too many requests; retry later",
                reason="RATE_LIMITED",
                metadata={"retry_after_s": f"{decision.retry_after_s:.3f}"},
            )

    def _rounds(
        self,
        request: cpb.CreateConsultationRequest
        | cpb.StreamConsultationRequest
        | cpb.StartConsultationRequest,
    ) -> int:
        violations = []
        if not request.HasField("intake"):
            violations.append(FieldViolation("intake", "is required", "REQUIRED"))
        if not 0 <= request.max_rounds <= MAX_ROUNDS_LIMIT:
            violations.append(
                FieldViolation(
                    "max_rounds",
                    f"must be between 0 (default) and {MAX_ROUNDS_LIMIT}",
                    "OUT_OF_RANGE",
                )
            )
        if violations:
            raise InvalidArgument(
                "the request is invalid", reason="INVALID_REQUEST", violations=violations
            )
        return request.max_rounds or self.app.limits.default_rounds

    async def _run(
        self,
        request: cpb.CreateConsultationRequest | cpb.StreamConsultationRequest,
        context: grpc.aio.ServicerContext,
        emit: Emit | None = None,
    ) -> cpb.Consultation:
        rounds = self._rounds(request)
        remaining = context.time_remaining()
        budget = (
            self.app.limits.budget_s
            if remaining is None
            else min(self.app.limits.budget_s, remaining)
        )
        return await self.app.run(
            intake_from_proto(request.intake),
            request.profile,
            rounds=rounds,
            request_id=request.request_id,
            budget_s=budget,
            emit=emit,
            patient_id=request.patient_id,
            actor=self._actor(context),
        )

    async def CreateConsultation(
        self, request: cpb.CreateConsultationRequest, context: grpc.aio.ServicerContext
    ) -> cpb.CreateConsultationResponse:
        await self._rate_limit("CreateConsultation", context)
        return cpb.CreateConsultationResponse(consultation=await self._run(request, context))

    async def StartConsultation(
        self, request: cpb.StartConsultationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        await self._rate_limit("StartConsultation", context)
        self._rounds(request)
        # Bad input is answered now, not found by a worker later: triage checks the intake and
        # the profile (its answer is cached for the worker). Triage down: queue it anyway.
        with contextlib.suppress(Unavailable):
            await self.app.ports.triage.assess(
                intake_from_proto(request.intake), request.profile, self.app.limits.agent_timeout_s
            )
        return await start_consultation(self.jobs, request, self._actor(context))

    async def StreamConsultation(
        self, request: cpb.StreamConsultationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cpb.StreamConsultationResponse]:
        await self._rate_limit("StreamConsultation", context)
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()

        async def emit(p: Progress) -> None:
            await queue.put(p)

        task = asyncio.create_task(self._run(request, context, emit))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield cpb.StreamConsultationResponse(progress=progress_to_proto(item))
            consultation = await task  # re-raises a failure of the consultation itself
        finally:
            if not task.done():  # the client went away: stop the work
                task.cancel()
        yield cpb.StreamConsultationResponse(consultation=consultation)

    async def GetConsultation(
        self, request: cpb.GetConsultationRequest, context: grpc.aio.ServicerContext
    ) -> cpb.GetConsultationResponse:
        return cpb.GetConsultationResponse(
            consultation=await self.app.get(request.name, actor=self._actor(context))
        )

    async def AskConsultation(
        self, request: cpb.AskConsultationRequest, context: grpc.aio.ServicerContext
    ) -> cpb.AskConsultationResponse:
        await self._rate_limit("AskConsultation", context)
        question = request.question.strip()
        if not question or len(question) > MAX_QUESTION_CHARS:
            raise InvalidArgument(
                "the question is invalid",
                reason="INVALID_QUESTION",
                violations=[
                    FieldViolation(
                        "question", f"must be 1 to {MAX_QUESTION_CHARS} characters", "OUT_OF_RANGE"
                    )
                ],
            )
        answer = await self.app.ask(request.name, question, actor=self._actor(context))
        return cpb.AskConsultationResponse(
            kind=rpb.AnswerKind.Name(answer.kind).removeprefix("ANSWER_KIND_"),
            answer=answer.answer,
            section_ids=[s.id for s in answer.sections],
            passage_ids=[p.passage_id for p in answer.passages],
            rule_ids=answer.rule_ids,
            generated_by=answer.generated_by,
        )
