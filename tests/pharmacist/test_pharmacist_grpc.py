"""The pharmacist service over real gRPC on a loopback port: offline reviews, bad requests, and
the model path against a real OpenAI-compatible HTTP server (the fake speaks the protocol).
Assertions read status codes, ErrorInfo reasons and review fields, never message strings."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from services.pharmacist.main import build_spec
from services.pharmacist.servicer import DOMAIN
from tests.factories import patient
from tests.fakes import FakeOpenAI, error, hang, reply, text
from tests.pharmacist.support import context_for, doctor, proposal, review_request, triage_plan
from utimesh.agents.models import OFFLINE
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.kit.server import RunningServer, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.kit.status import error_details
from utimesh.llm import ModelProfile, OpenAICompatibleLLM
from utimesh.pharmacist.v1 import pharmacist_pb2 as ppb
from utimesh.pharmacist.v1 import pharmacist_pb2_grpc
from utimesh.rules import Agent, Knowledge

pytestmark = pytest.mark.asyncio(loop_scope="module")

Stub = pharmacist_pb2_grpc.PharmacistServiceStub
MODEL = "scripted-pharmacist"
NIT_ALLERGY = {"history__allergies": ["Nitrofurantoin (rash)"]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def offline(knowledge: Knowledge) -> AsyncIterator[Stub]:
    running = await start_server(
        build_spec(knowledge, None, ModelProfile()), ServiceSettings(port=0)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Stub(channel)
    finally:
        await running.server.stop(None)


@contextlib.asynccontextmanager
async def model_service(
    knowledge: Knowledge, **profile: Any
) -> AsyncIterator[tuple[FakeOpenAI, Stub]]:
    """The service with a model profile pointing at a fresh fake OpenAI-compatible server."""
    async with FakeOpenAI(models=(MODEL,)) as fake:
        settings: dict[str, Any] = {
            "provider": "openai-compatible",
            "model": MODEL,
            "base_url": fake.base_url,
            "retries": 0,
            "reasks": 1,
            "timeout_s": 5.0,
            "input_cost_per_1k": 1.0,
        }
        llm = OpenAICompatibleLLM(environ={})
        running: RunningServer | None = None
        try:
            spec = build_spec(knowledge, llm, ModelProfile(**(settings | profile)), max_budget_s=10)
            running = await start_server(spec, ServiceSettings(port=0, max_budget_seconds=10))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                yield fake, Stub(channel)
        finally:
            if running is not None:
                await running.server.stop(None)
            await llm.aclose()


def model_answer(verdict: str, *concerns: dict[str, Any]) -> dict[str, Any]:
    return {"verdict": verdict, "concerns": list(concerns), "monitoring": [], "counselling": []}


def request_for(
    knowledge: Knowledge, agent: Agent | None = None, **overrides: Any
) -> ppb.ReviewPlanRequest:
    """A review of the doctor proposing `agent` (None: triage's own plan) for a patient."""
    ctx, ruleset = context_for(knowledge, patient(**overrides))
    plan = triage_plan(ctx) if agent is None else doctor(proposal(ruleset, agent))
    return review_request(ctx, plan)


async def rejected(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return error_details(info.value)


# --- offline -----------------------------------------------------------------------------------


async def test_offline_round_trip(offline: Stub, knowledge: Knowledge) -> None:
    response = await offline.ReviewPlan(
        request_for(knowledge, history__medications=["warfarin 5 mg daily"]), timeout=5
    )
    review = response.review
    assert review.verdict == apb.VERDICT_APPROVE_WITH_MONITORING
    assert [(c.code, list(c.rule_ids), c.source) for c in review.concerns] == [
        ("INTERACTION", ["DDI-007"], "deterministic")
    ]
    assert review.deterministic_checks_run and review.model_review_missing_reason == ""
    assert review.run.generated_by == OFFLINE and review.run.attempts == 0
    assert all(c.rule_ids or c.facts for c in review.claims)


async def test_offline_rejects_an_excluded_agent(offline: Stub, knowledge: Knowledge) -> None:
    response = await offline.ReviewPlan(request_for(knowledge, Agent.NIT, **NIT_ALLERGY), timeout=5)
    review = response.review
    assert review.verdict == apb.VERDICT_REJECT
    allergy = next(c for c in review.concerns if c.code == "ALLERGY")
    assert allergy.severity == apb.SEVERITY_CRITICAL and list(allergy.rule_ids) == ["RX-NIT-01"]
    assert allergy.suggested_agent == pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE


# --- bad requests --------------------------------------------------------------------------------


def _without_context(req: ppb.ReviewPlanRequest) -> None:
    req.ClearField("context")


def _without_assessment(req: ppb.ReviewPlanRequest) -> None:
    req.ClearField("assessment")


def _without_triage(req: ppb.ReviewPlanRequest) -> None:
    req.context.ClearField("triage")


def _unspecified_decision(req: ppb.ReviewPlanRequest) -> None:
    req.context.triage.decision = pb.DECISION_UNSPECIFIED


def _unknown_profile(req: ppb.ReviewPlanRequest) -> None:
    req.context.triage.profile = "CA-XX"


def _unreadable_regimen(req: ppb.ReviewPlanRequest) -> None:
    req.context.triage.eligible_regimens[0].route = pb.ROUTE_UNSPECIFIED


BAD_REQUESTS = [
    ("no context", _without_context, "MISSING_CONTEXT", ["context"]),
    ("no assessment", _without_assessment, "MISSING_ASSESSMENT", ["assessment"]),
    ("no triage result", _without_triage, "MISSING_CONTEXT", ["context.triage"]),
    ("unspecified decision", _unspecified_decision, "MISSING_CONTEXT", ["context.triage.decision"]),
    ("unknown profile", _unknown_profile, "UNKNOWN_PROFILE", ["context.triage.profile"]),
    ("unreadable triage regimen", _unreadable_regimen, "INVALID_CONTEXT", ["context.triage"]),
]


@pytest.mark.parametrize(
    ("mutate", "reason", "fields"),
    [pytest.param(m, r, f, id=name) for name, m, r, f in BAD_REQUESTS],
)
async def test_bad_request_is_invalid_argument(
    offline: Stub, knowledge: Knowledge, mutate: Any, reason: str, fields: list[str]
) -> None:
    req = request_for(knowledge)
    mutate(req)
    details = await rejected(offline.ReviewPlan(req, timeout=5))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == (reason, DOMAIN)
    assert [f for f, _ in details.field_violations] == fields


async def test_triage_on_other_knowledge_is_refused(offline: Stub, knowledge: Knowledge) -> None:
    req = request_for(knowledge)
    req.context.triage.ruleset_hash = "0" * 64
    details = await rejected(offline.ReviewPlan(req, timeout=5))
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "RULESET_MISMATCH"


# --- with a model --------------------------------------------------------------------------------


async def test_model_approval_cannot_pass_a_contraindicated_plan(knowledge: Knowledge) -> None:
    async with model_service(knowledge) as (fake, stub):
        fake.script(reply(model_answer("approve"), prompt_tokens=900, completion_tokens=120))
        response = await stub.ReviewPlan(
            request_for(knowledge, Agent.NIT, **NIT_ALLERGY), timeout=10
        )
    review = response.review
    assert review.verdict == apb.VERDICT_REJECT
    assert "ALLERGY" in [c.code for c in review.concerns]
    assert review.model_review_missing_reason == ""
    run = review.run
    assert (run.generated_by, run.provider, run.model) == (
        "openai-compatible",
        "openai-compatible",
        MODEL,
    )
    assert (run.prompt_version, run.attempts) == ("pharmacist_review.v1", 1)
    assert (run.input_tokens, run.output_tokens) == (900, 120)
    assert run.cost_usd == pytest.approx(0.9) and run.latency_ms > 0


async def test_model_request_change_with_a_suggested_agent(knowledge: Knowledge) -> None:
    concern = {
        "severity": "high",
        "code": "ADHERENCE",
        "text": "Twice-daily dosing is unlikely to be followed.",
        "suggested_action": "Prefer a single dose.",
        "suggested_agent": "FOS",
    }
    async with model_service(knowledge) as (fake, stub):
        fake.script(model_answer("request_change", concern))
        response = await stub.ReviewPlan(request_for(knowledge), timeout=10)
    review = response.review
    assert review.verdict == apb.VERDICT_REQUEST_CHANGE
    [added] = [c for c in review.concerns if c.source == "model"]
    assert (added.code, added.severity, added.suggested_agent) == (
        "ADHERENCE",
        apb.SEVERITY_HIGH,
        pb.AGENT_FOSFOMYCIN,
    )


@pytest.mark.parametrize(
    ("script", "profile", "reason"),
    [
        pytest.param([error(500), error(503)], {}, "LLM_UNAVAILABLE", id="server errors"),
        pytest.param([hang()], {"timeout_s": 0.3}, "LLM_TIMEOUT", id="model hangs"),
        pytest.param(
            [text("not json"), text("{still not")], {}, "LLM_INVALID_OUTPUT", id="invalid output"
        ),
    ],
)
async def test_model_failure_keeps_the_deterministic_review(
    offline: Stub, knowledge: Knowledge, script: list[Any], profile: dict[str, Any], reason: str
) -> None:
    req = request_for(knowledge, history__medications=["warfarin 5 mg daily"])
    async with model_service(knowledge, **profile) as (fake, stub):
        fake.script(*script)
        response = await stub.ReviewPlan(req, timeout=10)
    deterministic = (await offline.ReviewPlan(req, timeout=5)).review
    review = response.review
    assert review.model_review_missing_reason == reason
    assert review.run.generated_by == OFFLINE
    # Exactly the deterministic review, marked as missing the model's.
    review.model_review_missing_reason = ""
    assert review == deterministic


async def test_caller_deadline_bounds_the_model_call(knowledge: Knowledge) -> None:
    # The profile would wait 20 s; the caller gives 1.5 s: the review still comes back in time.
    async with model_service(knowledge, timeout_s=20.0) as (fake, stub):
        fake.script(hang())
        response = await stub.ReviewPlan(request_for(knowledge), timeout=1.5)
    assert response.review.model_review_missing_reason == "LLM_TIMEOUT"
    assert response.review.verdict == apb.VERDICT_APPROVE


async def test_model_sees_free_text_only_inside_the_data_block(knowledge: Knowledge) -> None:
    markers: dict[str, Any] = {
        "history__allergies": ["zz-allergy-marker"],
        "history__medications": ["zz-medication-marker 10 mg"],
        "history__recent_antibiotics": [{"drug": "zz-antibiotic-marker", "days_ago": 300}],
    }
    async with model_service(knowledge) as (fake, stub):
        fake.script(model_answer("approve"))
        await stub.ReviewPlan(request_for(knowledge, **markers), timeout=10)
    [sent] = fake.requests
    system, user = sent["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    begin, end = (
        user["content"].index("<<<RECORD_DATA_BEGIN>>>"),
        user["content"].index("<<<RECORD_DATA_END>>>"),
    )
    for marker in ("zz-allergy-marker", "zz-medication-marker", "zz-antibiotic-marker"):
        assert marker not in system["content"]
        assert user["content"].count(marker) == 1
        assert begin < user["content"].index(marker) < end
    assert sent["response_format"]["json_schema"]["name"] == "PharmacistModelOutput"
    assert json.loads(user["content"][begin + len("<<<RECORD_DATA_BEGIN>>>") : end])[
        "allergies"
    ] == ["zz-allergy-marker"]


async def test_offline_profile_never_calls_a_model(knowledge: Knowledge) -> None:
    async with FakeOpenAI(models=(MODEL,)) as fake:
        llm = OpenAICompatibleLLM(environ={})
        spec = build_spec(knowledge, llm, ModelProfile())  # provider "offline"
        running = await start_server(spec, ServiceSettings(port=0))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                response = await Stub(channel).ReviewPlan(request_for(knowledge), timeout=5)
        finally:
            await running.server.stop(None)
            await llm.aclose()
    assert fake.requests == []
    assert response.review.run.generated_by == OFFLINE
