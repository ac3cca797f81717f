"""PostgresConsultationStore against a real PostgreSQL: a Consultation comes back equal, survives
a new pool and a server restart, and every write and read leaves an audit event."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from services.consult.adapters.pg_store import (
    PostgresConsultationStore,
    RequestIdInUse,
    consultation_id,
)
from tests.data.conftest import PgServer, open_pool
from tests.factories import BASELINE
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.codec.clinical import intake_to_proto
from utimesh.codec.triage import assessment_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import audit
from utimesh.db.audit import AuditSchemaMissing
from utimesh.db.pool import Pool
from utimesh.rules import TriageEngine, parse_intake


def make_consultation(engine: TriageEngine, *, request_id: str = "") -> cpb.Consultation:
    """A consultation shaped like the consult service's, with the engine's real triage."""
    intake = parse_intake(BASELINE)
    assessment = engine.assess(intake)
    triage = assessment_to_proto(assessment)
    c = cpb.Consultation(
        name=f"consultations/{uuid.uuid4()}",
        request_id=request_id,
        outcome=cpb.OUTCOME_AGREED,
        decision=triage.decision,
        regimen=triage.regimen,
        needs_prescriber_review=False,
        rounds=1,
        notice="Draft for prescriber sign-off.",
        create_time="2026-03-01T10:15:30.123+00:00",
        corpus_version="corpus-2026.03",
        report_markdown="# Report\n\nDraft.",
        report_sha256=hashlib.sha256(b"# Report\n\nDraft.").hexdigest(),
        usage=cpb.Usage(input_tokens=120, output_tokens=80, cost_usd=0.0125, model_calls=2),
    )
    c.triage.CopyFrom(triage)
    c.intake.CopyFrom(intake_to_proto(intake))
    c.transcript.add(
        round=1,
        actor="doctor",
        action="propose",
        summary="proposed the first eligible regimen",
        elapsed_ms=12.5,
        run=apb.AgentRun(generated_by="offline-rules", attempts=1),
        regimen=triage.regimen,
    )
    c.missing_reviews.append("evidence")
    return c


async def _events(pool: Pool, resource: str) -> list[audit.AuditEvent]:
    async with pool.acquire() as conn:
        return list(reversed(await audit.list_events(conn, limit=100, resource=resource)))


async def test_round_trip(pool: Pool, engine: TriageEngine) -> None:
    store = PostgresConsultationStore(pool)
    c = make_consultation(engine, request_id=str(uuid.uuid4()))
    await store.put(c)
    got = await store.get(c.name)
    assert got == c
    assert got is not c

    row = await pool.fetchrow("SELECT * FROM consultations WHERE name = $1", c.name)
    assert row is not None
    assert row["id"] == uuid.UUID(c.name.removeprefix("consultations/"))
    assert row["request_id"] == c.request_id
    assert row["created_at"].isoformat() == "2026-03-01T10:15:30.123000+00:00"
    assert row["profile"] == c.triage.profile != ""
    assert row["decision"] == "DECISION_RECOMMEND_TREATMENT"
    assert row["outcome"] == "OUTCOME_AGREED"
    assert row["needs_prescriber_review"] is False
    assert row["status"] == "draft"
    assert row["report_markdown"] == c.report_markdown
    assert row["ruleset_hash"] == c.triage.ruleset_hash != ""
    assert row["corpus_version"] == "corpus-2026.03"
    assert cpb.Consultation.FromString(row["record"]) == c


async def test_unknown_name_is_none_and_not_audited(pool: Pool) -> None:
    store = PostgresConsultationStore(pool)
    name = f"consultations/{uuid.uuid4()}"
    assert await store.get(name) is None
    assert await _events(pool, name) == []


async def test_every_write_and_read_is_audited_without_patient_data(
    pool: Pool, engine: TriageEngine
) -> None:
    store = PostgresConsultationStore(pool, actor="consult")
    c = make_consultation(engine, request_id="req-audit-1")
    await store.put(c)
    await store.get(c.name)
    await store.get(c.name)
    events = await _events(pool, c.name)
    assert [e.action for e in events] == [
        "consultation.create",
        "consultation.read",
        "consultation.read",
    ]
    create = events[0]
    assert create.actor == "consult"
    assert create.request_id == "req-audit-1"
    cid = str(consultation_id(c.name))
    record = c.SerializeToString(deterministic=True)
    assert dict(create.payload) == {
        "consultation_id": cid,
        "record_sha256": hashlib.sha256(record).hexdigest(),
    }
    assert all(dict(e.payload) == {"consultation_id": cid} for e in events[1:])
    async with pool.acquire() as conn:
        assert (await audit.verify(conn)).ok


async def test_put_again_replaces_and_is_audited_as_update(
    pool: Pool, engine: TriageEngine
) -> None:
    store = PostgresConsultationStore(pool)
    c = make_consultation(engine)
    await store.put(c)
    c.needs_prescriber_review = True
    c.outcome = cpb.OUTCOME_ESCALATED
    await store.put(c)
    assert await store.get(c.name) == c
    outcome = await pool.fetchval("SELECT outcome FROM consultations WHERE name = $1", c.name)
    assert outcome == "OUTCOME_ESCALATED"
    actions = [e.action for e in await _events(pool, c.name)]
    assert actions == ["consultation.create", "consultation.update", "consultation.read"]


async def test_request_id_is_unique_when_given(pool: Pool, engine: TriageEngine) -> None:
    store = PostgresConsultationStore(pool)
    first = make_consultation(engine, request_id="req-dup")
    await store.put(first)
    second = make_consultation(engine, request_id="req-dup")
    with pytest.raises(RequestIdInUse):
        await store.put(second)
    assert await store.get(second.name) is None
    assert await _events(pool, second.name) == []  # the failed write left no audit event
    found = await store.get_by_request_id("req-dup")
    assert found == first
    assert await store.get_by_request_id("") is None
    # Without a request id, any number of consultations may be stored.
    for _ in range(2):
        await store.put(make_consultation(engine, request_id=""))


async def test_survives_a_new_pool_and_a_server_restart(
    module_database_url: str, pg_server: PgServer, engine: TriageEngine
) -> None:
    c = make_consultation(engine)
    async with open_pool(module_database_url) as first:
        await PostgresConsultationStore(first).put(c)
    async with open_pool(module_database_url) as second:  # a consult restart
        assert await PostgresConsultationStore(second).get(c.name) == c
    await pg_server.restart()  # the database server itself restarts
    async with open_pool(module_database_url) as third:
        assert await PostgresConsultationStore(third).get(c.name) == c
        async with third.acquire() as conn:
            assert (await audit.verify(conn)).ok


async def test_write_and_audit_commit_together(
    fresh_migrated_url: str, engine: TriageEngine
) -> None:
    async with open_pool(fresh_migrated_url) as pool:
        # Without the chain head the audit append fails: the consultation must not stay.
        await pool.execute("DELETE FROM audit_chain_head")
        store = PostgresConsultationStore(pool)
        c = make_consultation(engine)
        with pytest.raises(AuditSchemaMissing):
            await store.put(c)
        assert await pool.fetchval("SELECT count(*) FROM consultations") == 0


async def test_names_that_are_not_uuids_get_a_stable_id() -> None:
    a, b = consultation_id("consultations/not-a-uuid"), consultation_id("consultations/not-a-uuid")
    assert a == b
    assert consultation_id("other") != a
    u = uuid.uuid4()
    assert consultation_id(f"consultations/{u}") == u


async def test_a_consultation_without_a_name_is_refused(pool: Pool) -> None:
    with pytest.raises(ValueError, match="name"):
        await PostgresConsultationStore(pool).put(cpb.Consultation())
