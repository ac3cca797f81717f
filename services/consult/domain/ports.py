"""Ports of the consultation beyond the deliberation: evidence, report, and storage.

They exchange contract messages (utimesh.*.v1 protobuf types, not gRPC): the report is
rendered from the very Consultation message the client receives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from utimesh.agents.models import Claim
from utimesh.clinical.v1 import clinical_pb2
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.kit.errors import FailedPrecondition
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


#: Statuses that can still be signed off (UNSPECIFIED: stored before statuses existed, a draft).
SIGNABLE = frozenset({cpb.CONSULTATION_STATUS_UNSPECIFIED, cpb.CONSULTATION_STATUS_DRAFT})


class AlreadySigned(FailedPrecondition):
    """The consultation is no longer a draft: a sign-off is final."""

    def __init__(self, name: str) -> None:
        super().__init__(f"consultation {name!r} is already signed off", reason="ALREADY_SIGNED")


@dataclass(frozen=True)
class FollowUpRecord:
    """One recorded follow-up visit of a consultation's treatment."""

    name: str  # "consultations/{id}/followUps/{id}"
    consultation: str
    visit_date: str  # ISO 8601 date
    answers: clinical_pb2.FollowUpAnswers
    decision: clinical_pb2.Decision.ValueType
    rule_ids: tuple[str, ...]
    outcome: cpb.EpisodeOutcome.ValueType
    recorded_by: str
    request_id: str = ""


@dataclass(frozen=True)
class ReviewRecord:
    """A clinician's review of a consultation, kept for evaluation."""

    name: str  # "consultations/{id}/reviews/{id}"
    consultation: str
    reviewer: str  # JWT subject
    reviewer_role: str
    agrees_with_decision: bool
    agrees_with_plan: bool
    error_categories: tuple[str, ...]
    comment: str  # free text: stored, never audited or logged
    request_id: str = ""


class ConsultationStore(Protocol):
    """Where finished consultations are kept, with their sign-off, follow-ups, reviews and the
    audit trail of the record-keeping operations."""

    async def put(self, consultation: cpb.Consultation, *, actor: str = "") -> None:
        """Keep a consultation and audit `consultation.create` (or `.update`) as `actor` (the
        caller's JWT subject; empty: the store's own actor)."""
        ...

    async def get(self, name: str, *, actor: str = "") -> cpb.Consultation | None:
        """The consultation named `name`, or None; a found one is audited `consultation.read`
        as `actor` where the store audits reads (empty: the store's own actor)."""
        ...

    async def get_by_request_id(
        self, request_id: str, *, actor: str = ""
    ) -> cpb.Consultation | None: ...

    async def sign_off(
        self,
        name: str,
        status: cpb.ConsultationStatus.ValueType,
        sign_off: cpb.SignOff,
        *,
        actor: str,
        request_id: str = "",
    ) -> cpb.Consultation | None:
        """Set the status and sign-off of a draft atomically and audit `consultation.sign_off`;
        the updated consultation, None when unknown. AlreadySigned when it is not a draft."""
        ...

    async def save_follow_up(self, record: FollowUpRecord) -> None:
        """Keep a follow-up and audit `consultation.follow_up` (actor = record.recorded_by)."""
        ...

    async def save_review(self, record: ReviewRecord) -> None:
        """Keep a review and audit `consultation.review` (actor = record.reviewer)."""
        ...

    async def list_audit_events(
        self, *, limit: int, before_seq: int | None = None, resource: str | None = None
    ) -> list[cpb.AuditEvent]:
        """Up to `limit` audit events, newest first, with seq < before_seq when given, only
        those about `resource` when given."""
        ...
