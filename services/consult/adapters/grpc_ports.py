"""gRPC clients behind the consultation's ports. Channels are created once by the composition
root and shared; every call carries the deadline the consultation has left."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.consult.domain.deliberation import ReviewUnavailable
from services.consult.domain.ports import Grounded
from utimesh.agents.models import (
    CaseContext,
    Claim,
    ClinicalAssessment,
    Concern,
    PharmacistReview,
    ProposedRegimen,
)
from utimesh.codec.agents import (
    assessment_from_proto,
    assessment_to_proto,
    claim_to_proto,
    concern_to_proto,
    context_to_proto,
    proposed_to_proto,
    review_from_proto,
)
from utimesh.codec.clinical import intake_to_proto
from utimesh.codec.triage import assessment_from_proto as triage_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.doctor.v1 import doctor_pb2 as dpb
from utimesh.doctor.v1 import doctor_pb2_grpc
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.evidence.v1 import evidence_pb2_grpc
from utimesh.kit.errors import FieldViolation, InvalidArgument, Unavailable
from utimesh.kit.status import error_details
from utimesh.pharmacist.v1 import pharmacist_pb2 as ppb
from utimesh.pharmacist.v1 import pharmacist_pb2_grpc
from utimesh.report.v1 import report_pb2 as rpb
from utimesh.report.v1 import report_pb2_grpc
from utimesh.rules.allowlist import PlanCheck, PlanViolation
from utimesh.rules.model import Assessment, Intake
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc


def _triage_error(exc: grpc.aio.AioRpcError) -> Exception:
    d = error_details(exc)
    if d.code is grpc.StatusCode.INVALID_ARGUMENT:
        # Relay the caller's mistake as is: same reason, same field paths.
        return InvalidArgument(
            d.message,
            reason=d.reason or "INVALID_ARGUMENT",
            violations=[FieldViolation(f, t) for f, t in d.field_violations],
        )
    return Unavailable(f"triage unavailable ({d.code.name})", reason="TRIAGE_UNAVAILABLE")


def _agent_error(actor: str, exc: grpc.aio.AioRpcError) -> ReviewUnavailable:
    d = error_details(exc)
    return ReviewUnavailable(actor, d.reason or d.code.name)


class GrpcTriage:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = triage_pb2_grpc.TriageServiceStub(channel)

    async def assess(self, intake: Intake, profile: str, deadline_s: float) -> Assessment:
        try:
            response = await self._stub.AssessPatient(
                tpb.AssessPatientRequest(intake=intake_to_proto(intake), profile=profile),
                timeout=deadline_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise _triage_error(exc) from None
        return triage_from_proto(response)

    async def validate(
        self, intake: Intake, profile: str, proposal: ProposedRegimen, deadline_s: float
    ) -> PlanCheck:
        request = tpb.ValidatePlanRequest(
            intake=intake_to_proto(intake),
            profile=profile,
            proposed_regimen=proposed_to_proto(proposal),
        )
        try:
            response = await self._stub.ValidatePlan(request, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            raise _triage_error(exc) from None
        return PlanCheck(
            response.allowed,
            tuple(
                PlanViolation(v.code, v.field, v.message, tuple(v.rule_ids))
                for v in response.violations
            ),
        )


class GrpcDoctor:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = doctor_pb2_grpc.DoctorServiceStub(channel)

    async def propose(self, ctx: CaseContext, deadline_s: float) -> ClinicalAssessment:
        try:
            response = await self._stub.ProposePlan(
                dpb.ProposePlanRequest(context=context_to_proto(ctx)), timeout=deadline_s
            )
        except grpc.aio.AioRpcError as exc:
            raise _agent_error("doctor", exc) from None
        return assessment_from_proto(response.assessment)

    async def revise(
        self,
        ctx: CaseContext,
        previous: ClinicalAssessment,
        concerns: Sequence[Concern],
        round_no: int,
        deadline_s: float,
    ) -> ClinicalAssessment:
        request = dpb.RevisePlanRequest(
            context=context_to_proto(ctx),
            previous=assessment_to_proto(previous),
            concerns=[concern_to_proto(c) for c in concerns],
            round=round_no,
        )
        try:
            response = await self._stub.RevisePlan(request, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            raise _agent_error("doctor", exc) from None
        return assessment_from_proto(response.assessment)


class GrpcPharmacist:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = pharmacist_pb2_grpc.PharmacistServiceStub(channel)

    async def review(
        self, ctx: CaseContext, assessment: ClinicalAssessment, deadline_s: float
    ) -> PharmacistReview:
        request = ppb.ReviewPlanRequest(
            context=context_to_proto(ctx), assessment=assessment_to_proto(assessment)
        )
        try:
            response = await self._stub.ReviewPlan(request, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            raise _agent_error("pharmacist", exc) from None
        return review_from_proto(response.review)


class GrpcEvidence:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = evidence_pb2_grpc.EvidenceServiceStub(channel)

    async def ground(
        self, claims: Sequence[Claim], jurisdiction: str, deadline_s: float
    ) -> Grounded:
        request = epb.GroundClaimsRequest(
            claims=[claim_to_proto(c) for c in claims], jurisdiction=jurisdiction
        )
        try:
            response = await self._stub.GroundClaims(request, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            raise _agent_error("evidence", exc) from None
        return Grounded(tuple(response.groundings), response.corpus_version)


class GrpcReport:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = report_pb2_grpc.ReportServiceStub(channel)

    async def render(
        self, consultation: cpb.Consultation, corpus_version: str, deadline_s: float
    ) -> rpb.RenderReportResponse:
        try:
            response: rpb.RenderReportResponse = await self._stub.RenderReport(
                rpb.RenderReportRequest(consultation=consultation, corpus_version=corpus_version),
                timeout=deadline_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise _agent_error("report", exc) from None
        return response

    async def answer(
        self, consultation: cpb.Consultation, question: str, deadline_s: float
    ) -> rpb.AnswerQuestionResponse:
        try:
            response: rpb.AnswerQuestionResponse = await self._stub.AnswerQuestion(
                rpb.AnswerQuestionRequest(consultation=consultation, question=question),
                timeout=deadline_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise _agent_error("report", exc) from None
        return response
