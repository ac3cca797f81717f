"""The triage service over real gRPC on a loopback port: cases, bad input, allow-list, ruleset,
health, deadlines. Assertions read status codes and ErrorInfo reasons, never message strings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.triage.main import build_spec
from services.triage.servicer import DOMAIN, SERVICE_NAME, TriageServicer
from tests.conftest import case_params
from tests.expectations import mismatches
from tests.factories import patient
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto, regimen_to_proto
from utimesh.codec.triage import assessment_from_proto
from utimesh.kit.server import RunningServer, ServiceSpec, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.kit.status import error_details
from utimesh.rules import TriageEngine, parse_intake
from utimesh.rules.knowledge import Knowledge
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(knowledge: Knowledge) -> AsyncIterator[RunningServer]:
    running = await start_server(build_spec(TriageEngine(knowledge)), ServiceSettings(port=0))
    yield running
    await running.server.stop(None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(server: RunningServer) -> AsyncIterator[triage_pb2_grpc.TriageServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield triage_pb2_grpc.TriageServiceStub(channel)


def request(profile: str = "", **overrides: Any) -> tpb.AssessPatientRequest:
    return tpb.AssessPatientRequest(
        intake=intake_to_proto(parse_intake(patient(**overrides))), profile=profile
    )


async def rejected(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return error_details(info.value)


# --- clinical behaviour over the wire ---------------------------------------------------------


@pytest.mark.parametrize("case", case_params())
async def test_development_case_over_grpc(
    stub: triage_pb2_grpc.TriageServiceStub, case: dict[str, Any]
) -> None:
    req = tpb.AssessPatientRequest(
        intake=intake_to_proto(parse_intake(case["patient"])), profile=case["profile"]
    )
    response = await stub.AssessPatient(req, timeout=5)
    problems = mismatches(assessment_from_proto(response), case["expected"])
    assert not problems, f"{case['id']}: " + "; ".join(problems)


async def test_response_carries_versions_and_the_allow_list(
    stub: triage_pb2_grpc.TriageServiceStub, knowledge: Knowledge
) -> None:
    response = await stub.AssessPatient(request(history__allergies=["Macrobid"]), timeout=5)
    assert response.profile == "CA-ON" and response.profile_version == "1.0.0"
    assert response.ruleset_hash == knowledge.ruleset("CA-ON").content_hash
    assert response.decision == pb.DECISION_RECOMMEND_TREATMENT
    assert [r.agent for r in response.eligible_regimens] == [
        pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE,
        pb.AGENT_TRIMETHOPRIM,
        pb.AGENT_FOSFOMYCIN,
    ]
    nit = response.agent_evaluations[0]
    assert not nit.eligible and [h.rule_id for h in nit.exclusions] == ["RX-NIT-01"]
    assert response.follow_up.notify_primary_care and response.follow_up.reassess_by_hours == 72


async def test_missing_answer_is_a_referral_not_an_error(
    stub: triage_pb2_grpc.TriageServiceStub,
) -> None:
    response = await stub.AssessPatient(request(age=None, history__allergies=None), timeout=5)
    assert response.decision == pb.DECISION_REFER
    assert [h.rule_id for h in response.rules_fired] == ["DATA-001"]
    assert list(response.missing_fields) == ["age", "history.allergies"]


async def test_red_flag_referral_is_urgent(stub: triage_pb2_grpc.TriageServiceStub) -> None:
    response = await stub.AssessPatient(request(red_flags__fever=True), timeout=5)
    assert response.follow_up.referral_urgency == pb.REFERRAL_URGENCY_URGENT
    assert response.rules_fired[0].outcome == pb.RULE_OUTCOME_REFER_URGENT


# --- bad input ----------------------------------------------------------------------------------


def _with(mutate: Any) -> tpb.AssessPatientRequest:
    req = request()
    mutate(req.intake)
    return req


BAD_INTAKES = [
    ("age over 120", lambda i: setattr(i, "age", 121), "intake.age"),
    ("negative age", lambda i: setattr(i, "age", -1), "intake.age"),
    ("negative kidney function", lambda i: setattr(i, "egfr_ml_min", -5.0), "intake.egfr_ml_min"),
    ("absurd kidney function", lambda i: setattr(i, "egfr_ml_min", 9000.0), "intake.egfr_ml_min"),
    ("unspecified sex", lambda i: setattr(i, "sex", pb.SEX_UNSPECIFIED), "intake.sex"),
    (
        "unspecified encounter type",
        lambda i: setattr(i, "encounter_type", pb.ENCOUNTER_TYPE_UNSPECIFIED),
        "intake.encounter_type",
    ),
    (
        "unknown pregnancy enum number",
        lambda i: setattr(i, "pregnancy_status", 42),
        "intake.pregnancy_status",
    ),
    (
        "gestational weeks 50",
        lambda i: setattr(i, "gestational_weeks", 50),
        "intake.gestational_weeks",
    ),
    (
        "malformed assessment date",
        lambda i: setattr(i, "assessment_date", "2026-13-01"),
        "intake.assessment_date",
    ),
    (
        "episode after the assessment date",
        lambda i: i.recurrence.prior_episodes.add(onset_date="2026-03-02"),
        "intake.recurrence.prior_episodes[0].onset_date",
    ),
    (
        "episode ends before it starts",
        lambda i: i.recurrence.prior_episodes.add(
            onset_date="2026-01-10", treatment_end_date="2026-01-01"
        ),
        "intake.recurrence.prior_episodes[0].treatment_end_date",
    ),
    (
        "negative days since an antibiotic",
        lambda i: i.history.recent_antibiotics.entries.add(drug="amoxicillin", days_ago=-1),
        "intake.history.recent_antibiotics.entries[0].days_ago",
    ),
    (
        "negative symptom duration",
        lambda i: setattr(i.symptoms, "duration_days", -2),
        "intake.symptoms.duration_days",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [b[1:] for b in BAD_INTAKES], ids=[b[0] for b in BAD_INTAKES]
)
async def test_impossible_values_are_invalid_argument(
    stub: triage_pb2_grpc.TriageServiceStub, mutate: Any, field: str
) -> None:
    d = await rejected(stub.AssessPatient(_with(mutate), timeout=5))
    assert d.code is grpc.StatusCode.INVALID_ARGUMENT
    assert d.reason == "INVALID_INTAKE" and d.domain == DOMAIN
    assert [f for f, _ in d.field_violations] == [field]


async def test_several_bad_fields_are_all_reported(stub: triage_pb2_grpc.TriageServiceStub) -> None:
    def mutate(i: pb.Intake) -> None:
        i.age = 130
        i.egfr_ml_min = -1

    d = await rejected(stub.AssessPatient(_with(mutate), timeout=5))
    assert [f for f, _ in d.field_violations] == ["intake.age", "intake.egfr_ml_min"]


async def test_missing_intake(stub: triage_pb2_grpc.TriageServiceStub) -> None:
    d = await rejected(stub.AssessPatient(tpb.AssessPatientRequest(profile="CA-ON"), timeout=5))
    assert (d.code, d.reason, d.field_violations[0][0]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_INTAKE",
        "intake",
    )


async def test_unknown_profile(stub: triage_pb2_grpc.TriageServiceStub) -> None:
    d = await rejected(stub.AssessPatient(request(profile="CA-QC"), timeout=5))
    assert (d.code, d.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PROFILE")
    assert d.field_violations[0][0] == "profile" and "CA-AB, CA-ON" in d.field_violations[0][1]


# --- ValidatePlan -----------------------------------------------------------------------------


async def test_validate_plan_allows_an_eligible_alternative(
    stub: triage_pb2_grpc.TriageServiceStub, knowledge: Knowledge
) -> None:
    fos = regimen_to_proto(knowledge.ruleset().regimens["FOS"].to_regimen())  # type: ignore[index]
    req = tpb.ValidatePlanRequest(intake=request().intake, profile="CA-ON", proposed_regimen=fos)
    response = await stub.ValidatePlan(req, timeout=5)
    assert response.allowed and not response.violations
    assert len(response.eligible_regimens) == 4


async def test_validate_plan_rejects_a_longer_course(
    stub: triage_pb2_grpc.TriageServiceStub, knowledge: Knowledge
) -> None:
    nit = regimen_to_proto(knowledge.ruleset().regimens["NIT"].to_regimen())  # type: ignore[index]
    nit.duration.amount = 7
    response = await stub.ValidatePlan(
        tpb.ValidatePlanRequest(intake=request().intake, proposed_regimen=nit), timeout=5
    )
    assert not response.allowed
    assert [(v.code, v.field) for v in response.violations] == [("DURATION_MISMATCH", "duration")]


async def test_validate_plan_rejects_an_excluded_agent(
    stub: triage_pb2_grpc.TriageServiceStub, knowledge: Knowledge
) -> None:
    nit = regimen_to_proto(knowledge.ruleset().regimens["NIT"].to_regimen())  # type: ignore[index]
    intake = request(history__allergies=["nitrofurantoin"]).intake
    response = await stub.ValidatePlan(
        tpb.ValidatePlanRequest(intake=intake, proposed_regimen=nit), timeout=5
    )
    assert not response.allowed
    assert [(v.code, list(v.rule_ids)) for v in response.violations] == [
        ("AGENT_EXCLUDED", ["RX-NIT-01"])
    ]


async def test_validate_plan_never_allows_treating_a_referral(
    stub: triage_pb2_grpc.TriageServiceStub, knowledge: Knowledge
) -> None:
    nit = regimen_to_proto(knowledge.ruleset().regimens["NIT"].to_regimen())  # type: ignore[index]
    intake = request(red_flags__flank_or_back_pain=True).intake
    response = await stub.ValidatePlan(
        tpb.ValidatePlanRequest(intake=intake, proposed_regimen=nit), timeout=5
    )
    assert not response.allowed and response.decision == pb.DECISION_REFER
    assert [(v.code, list(v.rule_ids)) for v in response.violations] == [
        ("DECISION_NOT_TREATMENT", ["RF-003"])
    ]
    assert not response.eligible_regimens


async def test_validate_plan_rejects_a_drug_outside_the_rules(
    stub: triage_pb2_grpc.TriageServiceStub,
) -> None:
    proposed = pb.Regimen(agent=pb.AGENT_UNSPECIFIED, drug="ciprofloxacin", route=pb.ROUTE_ORAL)
    req = tpb.ValidatePlanRequest(intake=request().intake, proposed_regimen=proposed)
    response = await stub.ValidatePlan(req, timeout=5)
    assert not response.allowed
    assert [(v.code, v.field) for v in response.violations] == [("AGENT_NOT_ELIGIBLE", "agent")]
    assert "ciprofloxacin" in response.violations[0].message


async def test_validate_plan_without_a_regimen(stub: triage_pb2_grpc.TriageServiceStub) -> None:
    d = await rejected(
        stub.ValidatePlan(tpb.ValidatePlanRequest(intake=request().intake), timeout=5)
    )
    assert (d.code, d.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_REGIMEN")
    assert d.field_violations[0][0] == "proposed_regimen"


# --- GetRuleset -------------------------------------------------------------------------------


async def test_get_ruleset(stub: triage_pb2_grpc.TriageServiceStub, knowledge: Knowledge) -> None:
    response = await stub.GetRuleset(tpb.GetRulesetRequest(profile="CA-AB"), timeout=5)
    assert (response.profile, response.ruleset_hash) == (
        "CA-AB",
        knowledge.ruleset("CA-AB").content_hash,
    )
    params = {p.name: p.value for p in response.parameters}
    assert params["RENAL_REFER_BELOW"] == "30" and params["DRUG_ORDER"] == "NIT,FOS,SXT,TMP"
    assert params["SXT_ANY_ABX_EXCLUDE_DAYS"] == "180"
    rules = {r.rule_id: r for r in response.rules}
    assert rules["RF-001"].outcome == pb.RULE_OUTCOME_REFER_URGENT
    assert rules["DDI-002"].stage == "interaction"
    keys = {s.key for s in response.sources}
    assert all(k in keys for r in response.rules for k in r.source_keys)
    assert list(response.available_profiles) == ["CA-AB", "CA-ON"]


# --- health, drain, deadlines ------------------------------------------------------------------


async def test_health_reports_serving_then_not_serving_on_drain(knowledge: Knowledge) -> None:
    running = await start_server(build_spec(TriageEngine(knowledge)), ServiceSettings(port=0))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        drain = asyncio.create_task(running.drain(grace=1.0))
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await drain


class _SlowServicer(TriageServicer):
    """A first-party fake: a triage service whose assessment takes longer than its budget."""

    async def AssessPatient(
        self, request: tpb.AssessPatientRequest, context: grpc.aio.ServicerContext
    ) -> tpb.AssessPatientResponse:
        await asyncio.sleep(5)  # the behaviour under test: the server's budget ends this call
        return await super().AssessPatient(request, context)


async def test_server_budget_ends_slow_calls_with_deadline_exceeded(knowledge: Knowledge) -> None:
    servicer = _SlowServicer(TriageEngine(knowledge))
    spec = ServiceSpec(
        "slow-triage",
        (SERVICE_NAME,),
        lambda s: triage_pb2_grpc.add_TriageServiceServicer_to_server(servicer, s),
        DOMAIN,
    )
    running = await start_server(spec, ServiceSettings(port=0, max_budget_seconds=0.2))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            d = await rejected(
                triage_pb2_grpc.TriageServiceStub(channel).AssessPatient(request(), timeout=10)
            )
        assert (d.code, d.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED")
    finally:
        await running.server.stop(None)


async def test_unexpected_errors_become_internal_without_details(knowledge: Knowledge) -> None:
    class Broken(TriageServicer):
        async def GetRuleset(self, request: Any, context: Any) -> Any:
            raise RuntimeError("patient Jane Doe broke it")  # must not leak to the caller

    servicer = Broken(TriageEngine(knowledge))
    spec = ServiceSpec(
        "broken",
        (SERVICE_NAME,),
        lambda s: triage_pb2_grpc.add_TriageServiceServicer_to_server(servicer, s),
        DOMAIN,
    )
    running = await start_server(spec, ServiceSettings(port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            d = await rejected(
                triage_pb2_grpc.TriageServiceStub(channel).GetRuleset(
                    tpb.GetRulesetRequest(), timeout=5
                )
            )
        assert (d.code, d.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
        assert "Jane" not in d.message
    finally:
        await running.server.stop(None)
