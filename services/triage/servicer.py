"""Thin TriageService servicer: proto <-> domain mapping, input checks, nothing clinical."""

from __future__ import annotations

import grpc

from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.agents import proposed_from_proto, regimen_from_proposed
from utimesh.codec.clinical import intake_from_proto, proto_path
from utimesh.codec.triage import assessment_to_proto, plan_check_to_proto, ruleset_to_proto
from utimesh.kit.errors import FieldViolation, InvalidArgument
from utimesh.rules import TriageEngine, UnknownProfileError, check_plan, intake_problems
from utimesh.rules.knowledge import Ruleset
from utimesh.rules.model import Assessment
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc

SERVICE_NAME = "utimesh.triage.v1.TriageService"
DOMAIN = "triage.utimesh.dev"


class TriageServicer(triage_pb2_grpc.TriageServiceServicer):
    def __init__(self, engine: TriageEngine) -> None:
        self.engine = engine

    def _ruleset(self, profile: str) -> Ruleset:
        try:
            return self.engine.knowledge.ruleset(profile)
        except UnknownProfileError as exc:
            raise InvalidArgument(
                str(exc),
                reason="UNKNOWN_PROFILE",
                violations=[
                    FieldViolation(
                        "profile", f"must be one of {', '.join(exc.available)}", "UNKNOWN_PROFILE"
                    )
                ],
                metadata={"profile": profile[:64]},
            ) from None

    def _assess(self, intake_msg: pb.Intake, has_intake: bool, profile: str) -> Assessment:
        ruleset = self._ruleset(profile)
        if not has_intake:
            raise InvalidArgument(
                "intake is required",
                reason="MISSING_INTAKE",
                violations=[FieldViolation("intake", "is required", "REQUIRED")],
            )
        intake = intake_from_proto(intake_msg)
        # Missing answers are clinical facts (DATA-001 refers); impossible values are client bugs.
        invalid = [p for p in intake_problems(intake) if p.kind == "invalid"]
        if invalid:
            raise InvalidArgument(
                f"the intake has {len(invalid)} invalid field(s)",
                reason="INVALID_INTAKE",
                violations=[
                    FieldViolation(f"intake.{proto_path(p.path)}", p.message, "INVALID_VALUE")
                    for p in invalid
                ],
            )
        return self.engine.assess(intake, ruleset.id)

    async def AssessPatient(
        self, request: tpb.AssessPatientRequest, context: grpc.aio.ServicerContext
    ) -> tpb.AssessPatientResponse:
        assessment = self._assess(request.intake, request.HasField("intake"), request.profile)
        return assessment_to_proto(assessment)

    async def ValidatePlan(
        self, request: tpb.ValidatePlanRequest, context: grpc.aio.ServicerContext
    ) -> tpb.ValidatePlanResponse:
        if not request.HasField("proposed_regimen"):
            raise InvalidArgument(
                "proposed_regimen is required",
                reason="MISSING_REGIMEN",
                violations=[FieldViolation("proposed_regimen", "is required", "REQUIRED")],
            )
        # Lenient on purpose: an unknown agent or word is a violation the caller must see
        # ("not allowed"), not a malformed request.
        proposal = proposed_from_proto(request.proposed_regimen)
        assessment = self._assess(request.intake, request.HasField("intake"), request.profile)
        check = check_plan(assessment, regimen_from_proposed(proposal), proposal.drug)
        return plan_check_to_proto(check, assessment)

    async def GetRuleset(
        self, request: tpb.GetRulesetRequest, context: grpc.aio.ServicerContext
    ) -> tpb.GetRulesetResponse:
        return ruleset_to_proto(self._ruleset(request.profile), self.engine.knowledge)
