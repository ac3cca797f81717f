"""The record-keeping methods of PostgresConsultationStore against a real PostgreSQL: sign-off
(atomic, once), follow-ups, reviews and the audit listing, with the audit chain verified."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from services.consult.adapters.pg_store import PostgresConsultationStore, consultation_id
from services.consult.domain.ports import AlreadySigned, FollowUpRecord, ReviewRecord
from tests.data.test_pg_store import make_consultation
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import audit
from utimesh.db.pool import Pool
from utimesh.rules import TriageEngine


async def stored(pool: Pool, engine: TriageEngine) -> tuple[PostgresConsultationStore, str]:
    store = PostgresConsultationStore(pool)
    c = make_consultation(engine)
    c.status = cpb.CONSULTATION_STATUS_DRAFT
    await store.put(c)
    return store, c.name


def approval(by: str = "dr-p") -> cpb.SignOff:
    return cpb.SignOff(
        action=cpb.SIGN_OFF_ACTION_APPROVE, by=by, at="2026-03-01T11:00:00.000+00:00"
    )


async def test_sign_off_updates_the_record_and_columns_once(
    pool: Pool, engine: TriageEngine
) -> None:
    store, name = await stored(pool, engine)
    fos = next(
        r
        for r in (await store.get(name) or cpb.Consultation()).triage.eligible_regimens
        if r.agent == pb.AGENT_FOSFOMYCIN
    )
    record = cpb.SignOff(
        action=cpb.SIGN_OFF_ACTION_AMEND,
        by="dr-p",
        at="2026-03-01T11:00:00.000+00:00",
        reason="single dose preferred",
        regimen=fos,
    )
    signed = await store.sign_off(name, cpb.CONSULTATION_STATUS_AMENDED, record, actor="dr-p")
    assert signed is not None and signed.status == cpb.CONSULTATION_STATUS_AMENDED
    assert signed.sign_off == record
    again = await store.get(name)
    assert again == signed
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, signed_by, signed_at FROM consultations WHERE name = $1", name
        )
    assert row is not None and (row["status"], row["signed_by"]) == ("amended", "dr-p")
    assert row["signed_at"].isoformat().startswith("2026-03-01T11:00:00")
    with pytest.raises(AlreadySigned):
        await store.sign_off(name, cpb.CONSULTATION_STATUS_APPROVED, approval(), actor="dr-p")
    assert (
        await store.sign_off(
            "consultations/unknown", cpb.CONSULTATION_STATUS_APPROVED, approval(), actor="dr-p"
        )
        is None
    )
    async with pool.acquire() as conn:
        events = await audit.list_events(conn, limit=10, resource=name)
    sign = [e for e in events if e.action == "consultation.sign_off"]
    assert len(sign) == 1 and sign[0].actor == "dr-p"
    assert sign[0].payload["action"] == "SIGN_OFF_ACTION_AMEND"
    assert sign[0].payload["agent"] == "AGENT_FOSFOMYCIN"
    assert "single dose" not in str(sign[0].payload)


async def test_concurrent_sign_offs_let_exactly_one_through(
    pool: Pool, engine: TriageEngine
) -> None:
    store, name = await stored(pool, engine)
    results = await asyncio.gather(
        *(
            store.sign_off(name, cpb.CONSULTATION_STATUS_APPROVED, approval(f"dr-{i}"), actor="x")
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, cpb.Consultation) for r in results) == 1
    assert sum(isinstance(r, AlreadySigned) for r in results) == 3


async def test_follow_ups_and_reviews_are_kept_and_audited(
    pool: Pool, engine: TriageEngine
) -> None:
    store, name = await stored(pool, engine)
    answers = pb.FollowUpAnswers(
        hours_since_treatment_start=48, improved=False, worsened=False, serious_adverse_effect=False
    )
    follow_up = FollowUpRecord(
        name=f"{name}/followUps/{uuid.uuid4()}",
        consultation=name,
        visit_date="2026-03-03",
        answers=answers,
        decision=pb.DECISION_REFER,
        rule_ids=("FU-004",),
        outcome=cpb.EPISODE_OUTCOME_FAILED,
        recorded_by="ph-1",
    )
    await store.save_follow_up(follow_up)
    review = ReviewRecord(
        name=f"{name}/reviews/{uuid.uuid4()}",
        consultation=name,
        reviewer="nurse-1",
        reviewer_role="clinician",
        agrees_with_decision=True,
        agrees_with_plan=False,
        error_categories=("wrong_regimen",),
        comment="secret free text",
    )
    await store.save_review(review)
    async with pool.acquire() as conn:
        fu = await conn.fetchrow(
            "SELECT consultation_id, visit_date, answers, decision, rule_ids, outcome, recorded_by"
            " FROM consultation_follow_ups WHERE name = $1",
            follow_up.name,
        )
        rv = await conn.fetchrow(
            "SELECT consultation_id, reviewer, reviewer_role, agrees_with_decision,"
            " agrees_with_plan, error_categories, comment FROM consultation_reviews"
            " WHERE name = $1",
            review.name,
        )
        events = await audit.list_events(conn, limit=10, resource=name)
    assert fu is not None and fu["consultation_id"] == consultation_id(name)
    assert pb.FollowUpAnswers.FromString(fu["answers"]) == answers
    assert (fu["decision"], fu["rule_ids"], fu["outcome"], fu["recorded_by"]) == (
        "DECISION_REFER",
        ["FU-004"],
        "EPISODE_OUTCOME_FAILED",
        "ph-1",
    )
    assert fu["visit_date"].isoformat() == "2026-03-03"
    assert rv is not None and dict(rv) == {
        "consultation_id": consultation_id(name),
        "reviewer": "nurse-1",
        "reviewer_role": "clinician",
        "agrees_with_decision": True,
        "agrees_with_plan": False,
        "error_categories": ["wrong_regimen"],
        "comment": "secret free text",
    }
    assert [(e.action, e.actor) for e in events[:2]] == [
        ("consultation.review", "nurse-1"),
        ("consultation.follow_up", "ph-1"),
    ]
    assert events[1].payload["outcome"] == "EPISODE_OUTCOME_FAILED"
    assert all("secret" not in str(e.payload) for e in events)


async def test_audit_listing_pages_and_filters_and_the_chain_verifies(
    pool: Pool, engine: TriageEngine
) -> None:
    store, name = await stored(pool, engine)
    await store.sign_off(name, cpb.CONSULTATION_STATUS_APPROVED, approval(), actor="dr-p")
    await store.get(name)
    newest = await store.list_audit_events(limit=1000)
    assert [e.seq for e in newest] == sorted((e.seq for e in newest), reverse=True)
    assert newest[0].action == "consultation.read" and newest[0].resource == name
    for a, b in itertools.pairwise(newest):
        assert a.prev_hash == b.hash
    paged: list[cpb.AuditEvent] = []
    before: int | None = None
    while page := await store.list_audit_events(limit=3, before_seq=before):
        paged.extend(page)
        before = page[-1].seq
    assert paged == newest
    mine = await store.list_audit_events(limit=10, resource=name)
    assert [e.action for e in mine] == [
        "consultation.read",
        "consultation.sign_off",
        "consultation.create",
    ]
    assert {e.resource for e in mine} == {name}
    assert await store.list_audit_events(limit=10, resource="consultations/none") == []
    async with pool.acquire() as conn:
        result = await audit.verify(conn)
    assert result.ok, result.reason
    assert result.checked == newest[0].seq
