"""A recorded follow-up sets the outcome of its episode in the patient's memory: through the
in-process mesh (memory patient store) and on the Postgres patient store (audited)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from services.consult.adapters.pg_memory import PostgresPatientStore
from services.consult.domain.memory import EpisodeOutcome, update_after
from tests.consult.mesh import Mesh, running_mesh
from tests.factories import patient
from tests.memory.conftest import open_pool
from tests.memory.test_pg_memory import ring
from tests.records.support import PHARMACIST
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import audit
from utimesh.rules import Knowledge, TriageEngine, parse_intake

PATIENT_ID = "HCN-1111-222-333-FU"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


async def visit(mesh: Mesh, patient_id: str, **overrides: Any) -> cpb.Consultation:
    request = cpb.CreateConsultationRequest(
        intake=intake_to_proto(parse_intake(patient(**overrides))), patient_id=patient_id
    )
    return (await mesh.consult.CreateConsultation(request, timeout=20)).consultation


async def follow_up(mesh: Mesh, name: str, **answers: Any) -> cpb.RecordFollowUpResponse:
    return await mesh.consult.RecordFollowUp(
        cpb.RecordFollowUpRequest(
            name=name, answers=pb.FollowUpAnswers(**answers), visit_date="2026-03-03"
        ),
        metadata=PHARMACIST,
        timeout=10,
    )


async def timeline(mesh: Mesh, name: str) -> cpb.GetPatientTimelineResponse:
    return await mesh.consult.GetPatientTimeline(
        cpb.GetPatientTimelineRequest(name=name), timeout=10
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_failed_follow_up_marks_the_episode_failed(mesh: Mesh) -> None:
    earlier = await visit(mesh, PATIENT_ID, assessment_date="2026-01-10")
    c = await visit(mesh, PATIENT_ID, assessment_date="2026-03-01")
    assert c.patient and c.patient == earlier.patient
    assert c.decision == pb.DECISION_RECOMMEND_TREATMENT
    before = await timeline(mesh, c.patient)
    assert [e.outcome for e in before.episodes] == [cpb.EPISODE_OUTCOME_ONGOING] * 2

    r = await follow_up(
        mesh,
        c.name,
        hours_since_treatment_start=48,
        improved=False,
        worsened=False,
        serious_adverse_effect=False,
    )
    assert r.outcome == cpb.EPISODE_OUTCOME_FAILED

    after = await timeline(mesh, c.patient)
    outcomes = {e.consultation: e.outcome for e in after.episodes}
    assert outcomes == {
        earlier.name: cpb.EPISODE_OUTCOME_ONGOING,  # only this consultation's episode
        c.name: cpb.EPISODE_OUTCOME_FAILED,
    }


@pytest.mark.asyncio(loop_scope="module")
async def test_follow_up_without_a_patient_touches_no_memory(mesh: Mesh) -> None:
    c = await visit(mesh, "", assessment_date="2026-03-01")
    assert not c.patient
    r = await follow_up(
        mesh,
        c.name,
        hours_since_treatment_start=72,
        improved=True,
        worsened=False,
        serious_adverse_effect=False,
    )
    assert r.outcome == cpb.EPISODE_OUTCOME_IMPROVING


@pytest.mark.asyncio
async def test_postgres_episode_outcome_is_set_and_audited(
    module_database_url: str, engine: TriageEngine
) -> None:
    async with open_pool(module_database_url) as pool:
        store = PostgresPatientStore(pool, ring(), actor="consult")
        name = await store.resolve("MRN-FOLLOW-UP-1")
        for source, day in (("consultations/a", "2026-02-01"), ("consultations/b", "2026-03-01")):
            intake = parse_intake(patient(assessment_date=day))
            a = engine.assess(intake)
            await store.record(name, update_after(intake, a.decision, a.regimen, source))

        assert await store.set_episode_outcome(
            name, "consultations/b", EpisodeOutcome.FAILED, actor="ph-1"
        )
        memory = await store.load(name)
        assert memory is not None
        assert {e.source_consultation: e.outcome for e in memory.episodes} == {
            "consultations/a": EpisodeOutcome.ONGOING,
            "consultations/b": EpisodeOutcome.FAILED,
        }
        assert not await store.set_episode_outcome(
            name, "consultations/none", EpisodeOutcome.IMPROVING
        )
        assert not await store.set_episode_outcome(
            "patients/not-a-uuid", "consultations/b", EpisodeOutcome.IMPROVING
        )
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT actor, action, payload FROM audit_events WHERE resource = $1"
                " ORDER BY seq DESC LIMIT 1",
                name,
            )
            assert row is not None
            assert (row["actor"], row["action"]) == ("ph-1", "patient.memory.update")
            assert "failed" in str(row["payload"]) and "MRN" not in str(row["payload"])
            assert (await audit.verify(conn)).ok
