"""Helpers of the record-keeping tests: edge identity headers and consultation requests."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.factories import patient
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.caller import ROLES_HEADER, SUB_HEADER
from utimesh.rules import parse_intake


def as_user(sub: str, *roles: str) -> tuple[tuple[str, str], ...]:
    """The metadata the edge forwards for a verified caller."""
    encoded = base64.b64encode(json.dumps(list(roles)).encode()).decode()
    return ((SUB_HEADER, sub), (ROLES_HEADER, encoded))


PRESCRIBER = as_user("dr-prescriber", "prescriber")
CLINICIAN = as_user("nurse-clinician", "clinician")
PHARMACIST = as_user("ph-pharmacist", "pharmacist")
AUDITOR = as_user("aud-auditor", "auditor")


def create(**overrides: Any) -> cpb.CreateConsultationRequest:
    return cpb.CreateConsultationRequest(intake=intake_to_proto(parse_intake(patient(**overrides))))
