"""Patient memory end to end through the in-process mesh (memory patient store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from tests.consult.mesh import Mesh, running_mesh
from tests.factories import patient
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_from_proto, intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.rules import Knowledge, parse_intake

pytestmark = pytest.mark.asyncio(loop_scope="module")
PATIENT_ID = "HCN-9876-543-210-XY"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


def create(patient_id: str = PATIENT_ID, **overrides: Any) -> cpb.CreateConsultationRequest:
    return cpb.CreateConsultationRequest(
        intake=intake_to_proto(parse_intake(patient(**overrides))), patient_id=patient_id
    )


async def test_second_visit_ten_days_later_is_a_relapse(mesh: Mesh) -> None:
    first = (
        await mesh.consult.CreateConsultation(
            create(assessment_date="2026-03-01", history__allergies=["sulfa"]), timeout=20
        )
    ).consultation
    assert first.decision == pb.DECISION_RECOMMEND_TREATMENT
    assert first.regimen.agent == pb.AGENT_NITROFURANTOIN
    assert first.patient.startswith("patients/") and not first.memory_notes

    second = (
        await mesh.consult.CreateConsultation(create(assessment_date="2026-03-11"), timeout=20)
    ).consultation
    assert second.patient == first.patient
    assert second.decision == pb.DECISION_REFER
    assert "REC-001" in [h.rule_id for h in second.triage.rules_fired]
    kinds = {n.kind: n for n in second.memory_notes}
    assert kinds[cpb.MEMORY_NOTE_KIND_EPISODE_FROM_RECORD].source_consultation == first.name
    allergy = kinds[cpb.MEMORY_NOTE_KIND_ADDED_FROM_RECORD]
    assert allergy.field == "history.allergies" and "not reported today" in allergy.text
    merged = intake_from_proto(second.intake)
    assert merged.history is not None and merged.history.allergies == ("sulfa",)
    assert merged.prior_episodes is not None and len(merged.prior_episodes) == 1
    for c in (first, second):
        blob = c.SerializeToString()
        assert PATIENT_ID.encode() not in blob and PATIENT_ID not in c.report_markdown

    timeline = await mesh.consult.GetPatientTimeline(
        cpb.GetPatientTimelineRequest(name=first.patient), timeout=10
    )
    assert [e.consultation for e in timeline.episodes] == [first.name, second.name]
    assert timeline.episodes[0].regimen.agent == pb.AGENT_NITROFURANTOIN
    assert [f.value for f in timeline.allergies] == ["sulfa"]  # only what was reported
    assert PATIENT_ID.encode() not in timeline.SerializeToString()


async def test_unknown_patient_timeline_is_not_found(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.consult.GetPatientTimeline(
            cpb.GetPatientTimelineRequest(name="patients/00000000-0000-0000-0000-000000000000"),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_without_patient_id_no_memory(mesh: Mesh) -> None:
    c = (await mesh.consult.CreateConsultation(create(patient_id=""), timeout=20)).consultation
    assert not c.patient and not c.memory_notes
