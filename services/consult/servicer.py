"""Thin ConsultationService servicer: request checks, run the deliberation, map the result."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc

from services.consult.domain.deliberation import ConsultationResult, Ports, Progress, deliberate
from services.consult.mapping import progress_to_proto, result_to_proto
from utimesh.codec.clinical import intake_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.errors import FieldViolation, InvalidArgument

SERVICE_NAME = "utimesh.consult.v1.ConsultationService"
DOMAIN = "consult.utimesh.dev"
MAX_ROUNDS_LIMIT = 5


class ConsultationServicer(consult_pb2_grpc.ConsultationServiceServicer):
    def __init__(
        self,
        ports: Ports,
        *,
        default_rounds: int = 3,
        budget_s: float = 60.0,
        agent_timeout_s: float = 30.0,
    ) -> None:
        self.ports = ports
        self.default_rounds = default_rounds
        self.budget_s = budget_s
        self.agent_timeout_s = agent_timeout_s

    def _check(self, request: cpb.CreateConsultationRequest | cpb.StreamConsultationRequest) -> int:
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
        return request.max_rounds or self.default_rounds

    async def _run(
        self,
        request: cpb.CreateConsultationRequest | cpb.StreamConsultationRequest,
        context: grpc.aio.ServicerContext,
        emit: object = None,
    ) -> ConsultationResult:
        rounds = self._check(request)
        remaining = context.time_remaining()
        budget = self.budget_s if remaining is None else min(self.budget_s, remaining)
        return await deliberate(
            intake_from_proto(request.intake),
            request.profile,
            self.ports,
            max_rounds=rounds,
            budget_s=budget,
            agent_timeout_s=self.agent_timeout_s,
            emit=emit,  # type: ignore[arg-type]
        )

    @staticmethod
    def _wrap(result: ConsultationResult, request_id: str) -> cpb.Consultation:
        return result_to_proto(
            result,
            name=f"consultations/{uuid.uuid4()}",
            request_id=request_id,
            create_time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )

    async def CreateConsultation(
        self, request: cpb.CreateConsultationRequest, context: grpc.aio.ServicerContext
    ) -> cpb.CreateConsultationResponse:
        result = await self._run(request, context)
        return cpb.CreateConsultationResponse(consultation=self._wrap(result, request.request_id))

    async def StreamConsultation(
        self, request: cpb.StreamConsultationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cpb.StreamConsultationResponse]:
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()

        async def emit(p: Progress) -> None:
            await queue.put(p)

        task = asyncio.create_task(self._run(request, context, emit))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield cpb.StreamConsultationResponse(progress=progress_to_proto(item))
            result = await task  # re-raises a failure of the consultation itself
        finally:
            if not task.done():  # the client went away: stop the work
                task.cancel()
        yield cpb.StreamConsultationResponse(consultation=self._wrap(result, request.request_id))
