"""Sign-off, follow-up, reviews and the audit listing through the in-process mesh (memory
store), with the identity headers the edge would forward."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from tests.consult.mesh import Mesh, running_mesh
from tests.records.support import AUDITOR, CLINICIAN, PHARMACIST, PRESCRIBER, as_user, create
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.status import error_details
from utimesh.rules import Knowledge

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


async def consultation(mesh: Mesh, **overrides: Any) -> cpb.Consultation:
    response = await mesh.consult.CreateConsultation(create(**overrides), timeout=20)
    return response.consultation


def regimen_of(c: cpb.Consultation, agent: pb.Agent.ValueType) -> pb.Regimen:
    return next(r for r in c.triage.eligible_regimens if r.agent == agent)


async def sign(
    mesh: Mesh, metadata: Any = PRESCRIBER, **fields: Any
) -> cpb.SignOffConsultationResponse:
    return await mesh.consult.SignOffConsultation(
        cpb.SignOffConsultationRequest(**fields), metadata=metadata, timeout=10
    )


async def refused(call: Any) -> tuple[grpc.StatusCode, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    d = error_details(info.value)
    return d.code, d


# --- sign-off -------------------------------------------------------------------------------


async def test_new_consultations_are_drafts(mesh: Mesh) -> None:
    c = await consultation(mesh)
    assert c.status == cpb.CONSULTATION_STATUS_DRAFT and not c.HasField("sign_off")


async def test_only_a_prescriber_signs_and_only_once(mesh: Mesh) -> None:
    c = await consultation(mesh)
    for who in (CLINICIAN, PHARMACIST, AUDITOR, ()):
        code, d = await refused(sign(mesh, who, name=c.name, action=cpb.SIGN_OFF_ACTION_APPROVE))
        assert code is grpc.StatusCode.PERMISSION_DENIED and d.reason == "ROLE_REQUIRED"
    signed = (await sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_APPROVE)).consultation
    assert signed.status == cpb.CONSULTATION_STATUS_APPROVED
    assert signed.sign_off.action == cpb.SIGN_OFF_ACTION_APPROVE
    assert signed.sign_off.by == "dr-prescriber" and signed.sign_off.at
    assert not signed.sign_off.HasField("regimen")
    stored = (
        await mesh.consult.GetConsultation(cpb.GetConsultationRequest(name=c.name), timeout=5)
    ).consultation
    assert stored.status == cpb.CONSULTATION_STATUS_APPROVED
    assert stored.sign_off == signed.sign_off
    code, d = await refused(
        sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_REJECT, reason="changed my mind")
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and d.reason == "ALREADY_SIGNED"


async def test_unknown_consultation_is_not_found(mesh: Mesh) -> None:
    code, d = await refused(
        sign(mesh, name="consultations/nope", action=cpb.SIGN_OFF_ACTION_APPROVE)
    )
    assert code is grpc.StatusCode.NOT_FOUND and d.reason == "CONSULTATION_NOT_FOUND"


async def test_amend_to_another_eligible_regimen_is_recorded(mesh: Mesh) -> None:
    c = await consultation(mesh)
    assert c.regimen.agent == pb.AGENT_NITROFURANTOIN
    fos = regimen_of(c, pb.AGENT_FOSFOMYCIN)
    signed = (
        await sign(
            mesh,
            name=c.name,
            action=cpb.SIGN_OFF_ACTION_AMEND,
            regimen=fos,
            reason="patient prefers a single dose",
        )
    ).consultation
    assert signed.status == cpb.CONSULTATION_STATUS_AMENDED
    assert signed.sign_off.regimen == fos
    assert signed.sign_off.reason == "patient prefers a single dose"
    assert signed.regimen == c.regimen  # the draft's proposal is kept as it was


async def test_amend_to_an_excluded_agent_is_refused_with_the_violation(mesh: Mesh) -> None:
    sxt = regimen_of(await consultation(mesh), pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE)
    c = await consultation(mesh, history__allergies=["sulfa"])
    assert pb.AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE not in [
        r.agent for r in c.triage.eligible_regimens
    ]
    code, d = await refused(
        sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_AMEND, regimen=sxt, reason="cheaper")
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and d.reason == "NOT_ELIGIBLE"
    assert d.field_violations and all(f.startswith("regimen") for f, _ in d.field_violations)
    stored = (
        await mesh.consult.GetConsultation(cpb.GetConsultationRequest(name=c.name), timeout=5)
    ).consultation
    assert stored.status == cpb.CONSULTATION_STATUS_DRAFT  # still signable


async def test_amend_needs_a_treatment(mesh: Mesh) -> None:
    fos = regimen_of(await consultation(mesh), pb.AGENT_FOSFOMYCIN)
    c = await consultation(mesh, red_flags__fever=True)
    assert c.decision != pb.DECISION_RECOMMEND_TREATMENT
    code, d = await refused(
        sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_AMEND, regimen=fos, reason="x")
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION and d.reason == "NOT_ELIGIBLE"


async def test_reject_and_amend_need_a_reason(mesh: Mesh) -> None:
    c = await consultation(mesh)
    code, d = await refused(sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_REJECT))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in d.field_violations] == ["reason"]
    code, d = await refused(
        sign(
            mesh,
            name=c.name,
            action=cpb.SIGN_OFF_ACTION_AMEND,
            regimen=regimen_of(c, pb.AGENT_FOSFOMYCIN),
            reason="   ",
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in d.field_violations] == ["reason"]
    code, d = await refused(sign(mesh, name=c.name))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "action" in dict(d.field_violations)
    rejected = (
        await sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_REJECT, reason="culture first")
    ).consultation
    assert rejected.status == cpb.CONSULTATION_STATUS_REJECTED
    assert rejected.sign_off.reason == "culture first"


# --- follow-up ------------------------------------------------------------------------------


async def follow_up(
    mesh: Mesh, name: str, visit_date: str = "2026-03-03", **answers: Any
) -> cpb.RecordFollowUpResponse:
    return await mesh.consult.RecordFollowUp(
        cpb.RecordFollowUpRequest(
            name=name, answers=pb.FollowUpAnswers(**answers), visit_date=visit_date
        ),
        metadata=PHARMACIST,
        timeout=10,
    )


def rule_ids(r: cpb.RecordFollowUpResponse) -> list[str]:
    return [h.rule_id for h in r.triage.rules_fired]


async def test_follow_up_not_improved_at_48_h_is_a_failure(mesh: Mesh) -> None:
    c = await consultation(mesh)
    await sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_APPROVE)
    r = await follow_up(
        mesh,
        c.name,
        hours_since_treatment_start=48,
        improved=False,
        worsened=False,
        serious_adverse_effect=False,
    )
    assert "FU-004" in rule_ids(r)
    assert r.triage.decision == pb.DECISION_REFER
    assert r.outcome == cpb.EPISODE_OUTCOME_FAILED


async def test_follow_up_improved_at_72_h_is_improving(mesh: Mesh) -> None:
    c = await consultation(mesh)
    r = await follow_up(
        mesh,
        c.name,
        visit_date="2026-03-04",
        hours_since_treatment_start=72,
        improved=True,
        worsened=False,
        serious_adverse_effect=False,
    )
    assert rule_ids(r) == ["FU-006"]
    assert r.outcome == cpb.EPISODE_OUTCOME_IMPROVING


async def test_follow_up_adverse_effect_and_worsening(mesh: Mesh) -> None:
    c = await consultation(mesh)
    base: dict[str, Any] = {"hours_since_treatment_start": 24, "improved": True, "worsened": False}
    r = await follow_up(mesh, c.name, **base, serious_adverse_effect=True)
    assert "FU-005" in rule_ids(r) and r.outcome == cpb.EPISODE_OUTCOME_ADVERSE_EFFECT
    r = await follow_up(
        mesh, c.name, **{**base, "worsened": True, "improved": False}, serious_adverse_effect=False
    )
    assert "FU-003" in rule_ids(r) and r.outcome == cpb.EPISODE_OUTCOME_FAILED
    r = await follow_up(mesh, c.name, **{**base, "improved": False}, serious_adverse_effect=False)
    assert rule_ids(r) == ["FU-006"] and r.outcome == cpb.EPISODE_OUTCOME_ONGOING


async def test_follow_up_needs_a_treatment_and_a_date(mesh: Mesh) -> None:
    answers: dict[str, Any] = {
        "hours_since_treatment_start": 48,
        "improved": True,
        "worsened": False,
    }
    referred = await consultation(mesh, red_flags__fever=True)
    code, d = await refused(follow_up(mesh, referred.name, **answers, serious_adverse_effect=False))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and d.reason == "NOT_A_TREATMENT"
    c = await consultation(mesh)
    code, d = await refused(
        follow_up(mesh, c.name, visit_date="03/03/2026", **answers, serious_adverse_effect=False)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "visit_date" in dict(d.field_violations)
    await sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_REJECT, reason="culture first")
    code, d = await refused(follow_up(mesh, c.name, **answers, serious_adverse_effect=False))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and d.reason == "CONSULTATION_REJECTED"


# --- reviews and audit ----------------------------------------------------------------------


async def list_events(mesh: Mesh, metadata: Any = AUDITOR, **fields: Any) -> Any:
    return await mesh.consult.ListAuditEvents(
        cpb.ListAuditEventsRequest(**fields), metadata=metadata, timeout=5
    )


async def test_review_is_stored_and_audited_without_free_text(mesh: Mesh) -> None:
    c = await consultation(mesh)
    review = await mesh.consult.SubmitReview(
        cpb.SubmitReviewRequest(
            name=c.name,
            agrees_with_decision=True,
            agrees_with_plan=False,
            error_categories=["wrong_regimen"],
            comment="would have chosen fosfomycin",
        ),
        metadata=CLINICIAN,
        timeout=5,
    )
    assert review.name.startswith(f"{c.name}/reviews/")
    events = (await list_events(mesh, resource=c.name)).events
    assert [e.action for e in events][:1] == ["consultation.review"]
    assert events[0].actor == "nurse-clinician" and events[0].resource == c.name
    assert "fosfomycin" not in str(events)
    code, d = await refused(
        mesh.consult.SubmitReview(cpb.SubmitReviewRequest(name=c.name), metadata=AUDITOR, timeout=5)
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED and d.reason == "ROLE_REQUIRED"
    code, d = await refused(
        mesh.consult.SubmitReview(
            cpb.SubmitReviewRequest(name=c.name, error_categories=["Free text here!"]),
            metadata=PHARMACIST,
            timeout=5,
        )
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_every_record_keeping_step_is_audited(mesh: Mesh) -> None:
    c = await consultation(mesh)
    await sign(mesh, name=c.name, action=cpb.SIGN_OFF_ACTION_APPROVE)
    await follow_up(
        mesh,
        c.name,
        hours_since_treatment_start=72,
        improved=True,
        worsened=False,
        serious_adverse_effect=False,
    )
    await mesh.consult.SubmitReview(
        cpb.SubmitReviewRequest(name=c.name, agrees_with_decision=True, agrees_with_plan=True),
        metadata=as_user("dr-two", "prescriber", "clinician"),
        timeout=5,
    )
    events = (await list_events(mesh, resource=c.name)).events
    assert [(e.action, e.actor) for e in events] == [
        ("consultation.review", "dr-two"),
        ("consultation.follow_up", "ph-pharmacist"),
        ("consultation.sign_off", "dr-prescriber"),
        ("consultation.create", "consult"),
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs, reverse=True)
    assert all(e.at and len(e.hash) == 64 for e in events)


async def test_audit_listing_pages_newest_first_for_auditors_only(mesh: Mesh) -> None:
    for _ in range(3):
        await consultation(mesh)
    everything = (await list_events(mesh, page_size=500)).events
    assert len(everything) >= 3
    assert [e.seq for e in everything] == sorted((e.seq for e in everything), reverse=True)
    for a, b in itertools.pairwise(everything):
        assert a.prev_hash == b.hash  # newest first: each event chains onto the next listed
    pages: list[cpb.AuditEvent] = []
    token = ""
    while True:
        page = await list_events(mesh, page_size=2, page_token=token)
        assert len(page.events) <= 2
        pages.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    # nothing else runs meanwhile: this module's calls are serial
    assert [e.seq for e in pages] == [e.seq for e in everything]
    default = await list_events(mesh)
    assert len(default.events) == min(50, len(everything))
    for who in (CLINICIAN, PRESCRIBER, PHARMACIST, ()):
        code, d = await refused(list_events(mesh, who))
        assert code is grpc.StatusCode.PERMISSION_DENIED and d.reason == "ROLE_REQUIRED"
    code, d = await refused(list_events(mesh, page_size=501))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, d = await refused(list_events(mesh, page_token="garbage"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "page_token" in dict(d.field_violations)
    first = await list_events(mesh, page_size=1)
    code, d = await refused(
        list_events(mesh, page_size=1, page_token=first.next_page_token, resource="x")
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
