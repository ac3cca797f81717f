"""Ports of the consultation beyond the deliberation: evidence, report, and storage.

They exchange contract messages (utimesh.*.v1 protobuf types, not gRPC): the report is
rendered from the very Consultation message the client receives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from utimesh.agents.models import Claim
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.report.v1 import report_pb2 as rpb


@dataclass(frozen=True)
class Grounded:
    groundings: tuple[epb.ClaimGrounding, ...]
    corpus_version: str


class EvidencePort(Protocol):
    async def ground(
        self, claims: Sequence[Claim], jurisdiction: str, deadline_s: float
    ) -> Grounded: ...


class ReportPort(Protocol):
    async def render(
        self, consultation: cpb.Consultation, corpus_version: str, deadline_s: float
    ) -> rpb.RenderReportResponse: ...

    async def answer(
        self, consultation: cpb.Consultation, question: str, deadline_s: float
    ) -> rpb.AnswerQuestionResponse: ...


class ConsultationStore(Protocol):
    """Where finished consultations are kept (in memory now; Postgres is the system of record
    once persistence lands)."""

    async def put(self, consultation: cpb.Consultation) -> None: ...

    async def get(self, name: str) -> cpb.Consultation | None: ...

    async def get_by_request_id(self, request_id: str) -> cpb.Consultation | None: ...
