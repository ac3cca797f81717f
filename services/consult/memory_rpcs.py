"""Patient-memory RPCs of the consult service (GetPatientTimeline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from services.consult.domain.memory import FactKind, PatientMemory
from utimesh.codec.clinical import decision_to_proto, regimen_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb

if TYPE_CHECKING:
    from services.consult.app import ConsultationApp

_OUTCOMES = {
    "ongoing": cpb.EPISODE_OUTCOME_ONGOING,
    "improving": cpb.EPISODE_OUTCOME_IMPROVING,
    "failed": cpb.EPISODE_OUTCOME_FAILED,
    "adverse_effect": cpb.EPISODE_OUTCOME_ADVERSE_EFFECT,
}
_FIELDS = {
    FactKind.ALLERGY: "history.allergies",
    FactKind.MEDICATION: "history.medications",
    FactKind.KIDNEY: "egfr_ml_min",
    FactKind.PREGNANCY: "pregnancy_status",
    FactKind.LACTATION: "lactating",
}


def timeline_to_proto(name: str, memory: PatientMemory) -> cpb.GetPatientTimelineResponse:
    out = cpb.GetPatientTimelineResponse(name=name)
    for ep in sorted(memory.episodes, key=lambda e: (e.onset_date, e.recorded_on)):
        e = out.episodes.add(
            onset_date=ep.onset_date.isoformat(),
            treatment_end_date=ep.treatment_end_date.isoformat() if ep.treatment_end_date else "",
            outcome=_OUTCOMES[ep.outcome.value],
            consultation=ep.source_consultation,
        )
        if ep.regimen is not None:
            e.regimen.CopyFrom(regimen_to_proto(ep.regimen))
        if ep.decision is not None:
            e.decision = decision_to_proto(ep.decision)
    targets = {
        FactKind.ALLERGY: out.allergies,
        FactKind.MEDICATION: out.medications,
        FactKind.KIDNEY: out.kidney_function,
        FactKind.PREGNANCY: out.pregnancy,
        FactKind.LACTATION: out.pregnancy,  # pregnancy and lactation status, told by `field`
    }
    for f in sorted(memory.facts, key=lambda f: f.recorded_on):
        targets[f.kind].add(
            field=_FIELDS[f.kind],
            value=f.value,
            recorded_on=f.recorded_on.isoformat(),
            source_consultation=f.source_consultation,
        )
    return out


class MemoryRpcs:
    """Mixed into ConsultationServicer (which provides `app`)."""

    app: ConsultationApp

    async def GetPatientTimeline(
        self, request: cpb.GetPatientTimelineRequest, context: grpc.aio.ServicerContext
    ) -> cpb.GetPatientTimelineResponse:
        memory = await self.app.timeline(request.name)
        return timeline_to_proto(request.name, memory)
