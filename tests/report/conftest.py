"""Consultations for the report tests, made once per session through the in-process mesh
(offline agents), with test groundings so that nothing depends on the evidence service."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from services.report.domain.answer import Vocabulary
from tests.conftest import CASES
from tests.consult.mesh import DEAD, running_mesh
from tests.factories import patient
from tests.report.support import with_groundings
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.rules import Knowledge, parse_intake

# The consultations of the question set: (profile, patient).
QA_PATIENTS: Mapping[str, tuple[str, dict[str, Any]]] = {
    "nit": ("CA-ON", patient()),
    "sxt-lisinopril": (
        "CA-ON",
        patient(
            age=45,
            history__allergies=["nitrofurantoin"],
            history__medications=["Lisinopril 10 mg daily"],
        ),
    ),
    "fever": (
        "CA-ON",
        patient(
            red_flags__fever=True, red_flags__rigors_chills=True, red_flags__systemic_illness=True
        ),
    ),
    "pregnant": ("CA-ON", patient(pregnancy_status="pregnant", gestational_weeks=13)),
    "ab-tmp": (
        "CA-AB",
        patient(
            history__allergies=["Nitrofurantoin (rash)", "fosfomycin"],
            history__recent_antibiotics=[{"drug": "trimethoprim", "days_ago": 91}],
        ),
    ),
}


def request(profile: str, p: dict[str, Any]) -> cpb.CreateConsultationRequest:
    return cpb.CreateConsultationRequest(intake=intake_to_proto(parse_intake(p)), profile=profile)


async def _consult(knowledge: Knowledge) -> dict[str, cpb.Consultation]:
    out: dict[str, cpb.Consultation] = {}
    async with running_mesh(knowledge) as mesh:
        for key, (profile, p) in QA_PATIENTS.items():
            reply = await mesh.consult.CreateConsultation(request(profile, p), timeout=30)
            out[f"qa:{key}"] = reply.consultation
        for case in CASES:
            reply = await mesh.consult.CreateConsultation(
                request(case["profile"], case["patient"]), timeout=30
            )
            out[f"case:{case['id']}"] = reply.consultation
    async with running_mesh(knowledge, doctor_target=DEAD) as mesh:
        profile, p = QA_PATIENTS["nit"]
        reply = await mesh.consult.CreateConsultation(request(profile, p), timeout=30)
        out["degraded:nit"] = reply.consultation
    return out


@pytest.fixture(scope="session")
def mesh_consultations(knowledge: Knowledge) -> dict[str, cpb.Consultation]:
    """Every development case and every question-set patient, through the mesh once."""
    return asyncio.run(_consult(knowledge))


@pytest.fixture(scope="session")
def qa(mesh_consultations: dict[str, cpb.Consultation]) -> dict[str, cpb.Consultation]:
    """The question-set consultations (and "degraded:nit", the plain case without a doctor),
    always with the test groundings (deterministic passage ids and spans, whatever the
    evidence service returned)."""
    out = {}
    for key in (*(f"qa:{k}" for k in QA_PATIENTS), "degraded:nit"):
        out[key.removeprefix("qa:")] = with_groundings(mesh_consultations[key], replace=True)
    return out


@pytest.fixture(scope="session")
def vocabulary(knowledge: Knowledge) -> Vocabulary:
    return Vocabulary.from_knowledge(knowledge)
