"""Consultations through the real in-process mesh with the offline engine: every development
case, streaming progress, bad input and degradation when an agent is down."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from tests.conftest import case_params
from tests.consult.mesh import DEAD, Mesh, running_mesh
from tests.factories import patient
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto, regimen_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.kit.status import error_details
from utimesh.rules import Knowledge, parse_intake, regimen_to_json

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


def create(**overrides: Any) -> cpb.CreateConsultationRequest:
    return cpb.CreateConsultationRequest(intake=intake_to_proto(parse_intake(patient(**overrides))))


@pytest.mark.parametrize("case", case_params())
async def test_every_case_keeps_triage_decision_and_regimen(
    mesh: Mesh, case: dict[str, Any]
) -> None:
    request = cpb.CreateConsultationRequest(
        intake=intake_to_proto(parse_intake(case["patient"])), profile=case["profile"]
    )
    c = (await mesh.consult.CreateConsultation(request, timeout=20)).consultation
    expected = case["expected"]
    assert pb.Decision.Name(c.decision) == "DECISION_" + expected["decision"].upper()
    got = regimen_to_json(regimen_from_proto(c.regimen)) if c.HasField("regimen") else None
    assert got == expected["regimen"]
    treat = expected["decision"] == "recommend_treatment"
    assert c.outcome == (cpb.OUTCOME_AGREED if treat else cpb.OUTCOME_NOT_TREATED)
    assert not c.needs_prescriber_review and not c.missing_reviews
    assert [e.actor for e in c.transcript][:2] == ["triage", "doctor"]
    assert [(e.actor, e.action) for e in c.transcript][-1] == ("evidence", "ground")
    assert c.transcript[-2].action in ("finalize", "review")
    claims = [*c.assessment.claims, *c.review.claims]
    assert claims and all(cl.rule_ids or cl.facts for cl in claims)
    assert "DRAFT for prescriber sign-off" in c.notice and "no LLM was used" in c.notice
    assert all(e.run.generated_by == "offline-rules" for e in c.transcript if e.HasField("run"))
    # every claim grounded; a SUPPORTS citation quotes its passage verbatim
    assert [g.claim.id for g in c.groundings] == [cl.id for cl in claims]
    assert all(g.support != 0 for g in c.groundings) and c.corpus_version
    for g in c.groundings:
        for cit in g.citations:
            if cit.support == epb.SUPPORT_LABEL_SUPPORTS:
                assert cit.quoted_span and cit.quoted_span in cit.passage.text
    # the report: rendered, hashed, and naming the decision and every rule fired
    assert c.report_sha256 == hashlib.sha256(c.report_markdown.encode()).hexdigest()
    assert "DRAFT for prescriber sign-off" in c.report_markdown
    assert all(h.rule_id in c.report_markdown for h in c.triage.rules_fired)


async def test_agreed_plan_is_revalidated_before_it_is_returned(mesh: Mesh) -> None:
    c = (await mesh.consult.CreateConsultation(create(), timeout=20)).consultation
    actions = [(e.actor, e.action) for e in c.transcript]
    assert actions == [
        ("triage", "assess"),
        ("doctor", "propose"),
        ("triage", "validate"),
        ("pharmacist", "review"),
        ("consult", "agree"),
        ("consult", "finalize"),
        ("evidence", "ground"),
    ]
    assert c.name.startswith("consultations/") and c.create_time


async def test_stream_reports_each_step_before_the_result(mesh: Mesh) -> None:
    request = cpb.StreamConsultationRequest(intake=create().intake, request_id="req-1")
    messages = [m async for m in mesh.consult.StreamConsultation(request, timeout=20)]
    progress = [m.progress for m in messages if m.HasField("progress")]
    assert messages[-1].HasField("consultation") and messages[-1].consultation.request_id == "req-1"
    steps = [(p.step, p.status) for p in progress]
    assert steps[:2] == [("triage", "started"), ("triage", "done")]
    assert ("pharmacist_review", "done") in steps and ("finalize", "done") in steps
    assert steps[-4:] == [
        ("grounding", "started"),
        ("grounding", "done"),
        ("report", "started"),
        ("report", "done"),
    ]
    times = [p.elapsed_ms for p in progress]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (cpb.CreateConsultationRequest(), "intake", "INVALID_REQUEST"),
        (
            cpb.CreateConsultationRequest(intake=create().intake, max_rounds=9),
            "max_rounds",
            "INVALID_REQUEST",
        ),
        (
            cpb.CreateConsultationRequest(intake=create(age=130).intake),
            "intake.age",
            "INVALID_INTAKE",
        ),
        (
            cpb.CreateConsultationRequest(intake=create().intake, profile="CA-QC"),
            "profile",
            "UNKNOWN_PROFILE",
        ),
    ],
    ids=["no intake", "too many rounds", "impossible age", "unknown profile"],
)
async def test_bad_requests_are_invalid_argument(
    mesh: Mesh, request_: cpb.CreateConsultationRequest, field: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.consult.CreateConsultation(request_, timeout=20)
    d = error_details(info.value)
    assert (d.code, d.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert field in [f for f, _ in d.field_violations]


async def test_doctor_down_degrades_loudly(knowledge: Knowledge) -> None:
    async with running_mesh(knowledge, doctor_target=DEAD) as m:
        c = (await m.consult.CreateConsultation(create(), timeout=20)).consultation
    assert c.outcome == cpb.OUTCOME_UNREVIEWED
    assert list(c.missing_reviews) == ["doctor"] and c.needs_prescriber_review
    assert (
        c.decision == pb.DECISION_RECOMMEND_TREATMENT and c.regimen.agent == pb.AGENT_NITROFURANTOIN
    )
    assert "NOT reviewed by: doctor" in c.notice
    assert ("consult", "degrade") in [(e.actor, e.action) for e in c.transcript]
    assert c.review.verdict != 0, "the pharmacist still reviewed triage's plan"


async def test_pharmacist_down_degrades_loudly(knowledge: Knowledge) -> None:
    async with running_mesh(knowledge, pharmacist_target=DEAD) as m:
        c = (
            await m.consult.CreateConsultation(create(red_flags__fever=True), timeout=20)
        ).consultation
    assert c.outcome == cpb.OUTCOME_UNREVIEWED and list(c.missing_reviews) == ["pharmacist"]
    assert c.decision == pb.DECISION_REFER and not c.HasField("regimen")
    assert c.needs_prescriber_review


async def test_consultation_can_be_read_back_and_asked_about(mesh: Mesh) -> None:
    c = (await mesh.consult.CreateConsultation(create(), timeout=20)).consultation
    again = (
        await mesh.consult.GetConsultation(cpb.GetConsultationRequest(name=c.name), timeout=5)
    ).consultation
    assert again == c
    ask = cpb.AskConsultationRequest(name=c.name, question="Why this antibiotic?")
    answer = await mesh.consult.AskConsultation(ask, timeout=10)
    assert answer.kind == "ANSWERED" and "nitrofurantoin" in answer.answer.lower()
    assert "RX-SEL-NIT" in answer.rule_ids
    cited = {cit.passage.id for g in c.groundings for cit in g.citations}
    assert set(answer.passage_ids) <= cited, "never a citation the consultation does not hold"
    what_if = cpb.AskConsultationRequest(name=c.name, question="What if she is pregnant?")
    assert (
        await mesh.consult.AskConsultation(what_if, timeout=10)
    ).kind == "NEEDS_NEW_CONSULTATION"


async def test_unknown_consultation_is_not_found(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.consult.GetConsultation(
            cpb.GetConsultationRequest(name="consultations/nope"), timeout=5
        )
    d = error_details(info.value)
    assert (d.code, d.reason) == (grpc.StatusCode.NOT_FOUND, "CONSULTATION_NOT_FOUND")


async def test_empty_question_is_invalid(mesh: Mesh) -> None:
    c = (await mesh.consult.CreateConsultation(create(), timeout=20)).consultation
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.consult.AskConsultation(
            cpb.AskConsultationRequest(name=c.name, question="  "), timeout=5
        )
    assert error_details(info.value).reason == "INVALID_QUESTION"


@pytest.mark.parametrize("part", ["evidence", "report"])
async def test_evidence_or_report_down_is_said(knowledge: Knowledge, part: str) -> None:
    async with running_mesh(knowledge, **{f"{part}_target": DEAD}) as m:  # type: ignore[arg-type]
        c = (await m.consult.CreateConsultation(create(), timeout=20)).consultation
    assert list(c.missing_reviews) == [part] and c.needs_prescriber_review
    assert f"NOT reviewed by: {part}" in c.notice
    assert c.outcome == cpb.OUTCOME_AGREED and c.regimen.agent == pb.AGENT_NITROFURANTOIN
    if part == "evidence":
        assert not c.groundings and c.report_markdown, (
            "the report still renders, saying evidence is missing"
        )
    else:
        assert c.groundings and not c.report_markdown


async def test_a_retried_request_returns_the_same_consultation(mesh: Mesh) -> None:
    request = create()
    request.request_id = "retry-7f3a"
    first = (await mesh.consult.CreateConsultation(request, timeout=20)).consultation
    second = (await mesh.consult.CreateConsultation(request, timeout=20)).consultation
    assert second == first
