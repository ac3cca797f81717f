"""The consultation use case: deliberate, ground every claim in evidence, render the report,
keep the result. Each later step can fail on its own; the result then says what is missing."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.consult.domain.deliberation import (
    ConsultationResult,
    Outcome,
    Ports,
    Progress,
    ReviewUnavailable,
    deliberate,
    notice_for,
)
from services.consult.domain.memory import (
    MemoryNote,
    PatientMemory,
    PatientStore,
    merge,
    update_after,
)
from services.consult.domain.ports import ConsultationStore, EvidencePort, ReportPort
from services.consult.mapping import result_to_proto
from utimesh.codec.clinical import decision_from_proto, intake_to_proto, regimen_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit import metrics
from utimesh.kit.errors import FieldViolation, NotFound, Unavailable
from utimesh.report.v1 import report_pb2 as rpb
from utimesh.rules.model import Intake

Emit = Callable[[Progress], Awaitable[None]]
log = logging.getLogger(__name__)
_NOTE_KINDS = {
    "added_from_record": cpb.MEMORY_NOTE_KIND_ADDED_FROM_RECORD,
    "contradiction": cpb.MEMORY_NOTE_KIND_CONTRADICTION,
    "episode_from_record": cpb.MEMORY_NOTE_KIND_EPISODE_FROM_RECORD,
}


def note_to_proto(note: MemoryNote) -> cpb.MemoryNote:
    return cpb.MemoryNote(
        kind=_NOTE_KINDS[note.kind.value],
        field=note.field,
        text=note.text,
        source_consultation=note.source_consultation,
    )


def _visit_date(create_time: str) -> date:
    """The (UTC) date a consultation was created: its visit date when the intake has none."""
    try:
        return datetime.fromisoformat(create_time).date()
    except ValueError:
        return date.today()


async def _ignore(_: Progress) -> None:
    return None


@dataclass(frozen=True)
class Limits:
    default_rounds: int = 3
    budget_s: float = 60.0
    agent_timeout_s: float = 30.0


class ConsultationApp:
    def __init__(
        self,
        ports: Ports,
        evidence: EvidencePort,
        report: ReportPort,
        store: ConsultationStore,
        limits: Limits = Limits(),
        patients: PatientStore | None = None,
    ) -> None:
        self.patients = patients
        self.ports = ports
        self.evidence = evidence
        self.report = report
        self.store = store
        self.limits = limits

    async def run(
        self,
        intake: Intake,
        profile: str,
        *,
        rounds: int,
        request_id: str,
        budget_s: float,
        emit: Emit | None = None,
        patient_id: str = "",
        actor: str = "",
        name: str = "",
        memory_must_update: bool = False,
    ) -> cpb.Consultation:
        """`patient_id` (the caller's identifier, PHI) only selects the patient's memory: it
        never reaches the agents, the logs, the report or the Consultation. `actor` (the
        caller's JWT subject) is who the audit trail records; empty: the store's own actor.
        `name`: the consultation's name (a queued job's is derived from its operation, so that
        every attempt of the job writes the same row); empty: a new one.
        `memory_must_update`: a failed patient-memory update fails the call (a job worker then
        retries, and the retry finds the stored consultation and updates memory only); else
        it is logged and the consultation is returned anyway."""
        emit = emit or _ignore
        # AIP-155: a retried request with the same request_id gets the consultation it created.
        if (
            request_id
            and (earlier := await self.store.get_by_request_id(request_id, actor=actor)) is not None
        ):
            if patient_id and self.patients is not None:  # finish what a crashed attempt began
                patient = await self.patients.resolve(patient_id)
                await self._remember(patient, intake, earlier)
            await emit(
                Progress(
                    "finalize",
                    0,
                    "done",
                    f"request {request_id!r} already answered: {earlier.name}",
                    0.0,
                )
            )
            return earlier
        started = time.monotonic()
        deadline = started + budget_s
        reported = intake
        patient, notes = "", list[MemoryNote]()
        if patient_id:
            if self.patients is None:
                from utimesh.kit.errors import FailedPrecondition

                raise FailedPrecondition(
                    "this service keeps no patient memory", reason="NO_PATIENT_MEMORY"
                )
            patient = await self.patients.resolve(patient_id)
            memory = await self.patients.load(patient)
            if memory is not None:
                intake, notes = merge(intake, memory, date.today())

        def remaining() -> float:
            return max(0.001, min(deadline - time.monotonic(), self.limits.agent_timeout_s))

        def elapsed() -> float:
            return round((time.monotonic() - started) * 1000, 3)

        result = await deliberate(
            intake,
            profile,
            self.ports,
            max_rounds=rounds,
            budget_s=budget_s,
            agent_timeout_s=self.limits.agent_timeout_s,
            emit=emit,
        )
        c = result_to_proto(
            result,
            name=name or f"consultations/{uuid.uuid4()}",
            request_id=request_id,
            create_time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        c.intake.CopyFrom(intake_to_proto(intake))
        if patient:
            c.patient = patient
            c.memory_notes.extend(note_to_proto(n) for n in notes)
        missing = list(result.missing_reviews)

        def lose(actor: str, reason: str) -> None:
            missing.append(actor)
            c.transcript.add(
                round=0,
                actor="consult",
                action="degrade",
                elapsed_ms=elapsed(),
                summary=f"{actor} unavailable ({reason}); continuing without it",
            )
            self._refresh(c, result, missing)

        claims = [
            *(result.assessment.claims if result.assessment else ()),
            *(result.review.claims if result.review else ()),
        ]
        await emit(
            Progress(
                "grounding", 0, "started", f"grounding {len(claims)} claims in evidence", elapsed()
            )
        )
        try:
            grounded = await self.evidence.ground(claims, result.triage.profile, remaining())
        except ReviewUnavailable as exc:
            lose("evidence", exc.reason)
            await emit(
                Progress(
                    "grounding", 0, "failed", f"evidence unavailable ({exc.reason})", elapsed()
                )
            )
        else:
            c.groundings.extend(grounded.groundings)
            c.corpus_version = grounded.corpus_version
            flagged = sum(1 for g in grounded.groundings if g.flagged)
            c.transcript.add(
                round=0,
                actor="evidence",
                action="ground",
                elapsed_ms=elapsed(),
                summary=f"{len(claims)} claims grounded; {flagged} flagged as unsupported or contradicted",
            )
            await emit(
                Progress(
                    "grounding", 0, "done", f"{len(claims)} claims; {flagged} flagged", elapsed()
                )
            )

        await emit(Progress("report", 0, "started", "rendering the report", elapsed()))
        try:
            rendered = await self.report.render(c, c.corpus_version, remaining())
        except ReviewUnavailable as exc:
            lose("report", exc.reason)
            await emit(
                Progress("report", 0, "failed", f"report unavailable ({exc.reason})", elapsed())
            )
        else:
            c.report_markdown, c.report_sha256 = rendered.markdown, rendered.sha256
            await emit(
                Progress("report", 0, "done", f"{len(rendered.markdown)} characters", elapsed())
            )
        await self.store.put(c, actor=actor)
        metrics.record_consultation(c, time.monotonic() - started)
        if patient:
            try:
                await self._remember(patient, reported, c)
            except Exception:  # the consultation is kept; the memory update is lost, loudly
                if memory_must_update:
                    raise
                log.exception("patient memory not updated after %s", c.name)
        return c

    async def _remember(self, patient: str, reported: Intake, c: cpb.Consultation) -> None:
        """Write what consultation `c` adds to the patient's memory (once: a second call for
        the same consultation changes nothing)."""
        if self.patients is None:
            return
        visit = _visit_date(c.create_time)
        update = update_after(
            reported,
            decision_from_proto(c.decision) if c.decision else None,
            regimen_from_proto(c.regimen) if c.HasField("regimen") else None,
            c.name,
            visit,
        )
        await self.patients.record(patient, update)

    async def timeline(self, name: str) -> PatientMemory:
        """The memory of patient `name` ("patients/{id}"); the read is audited (Postgres)."""
        memory = await self.patients.load(name, audit_read=True) if self.patients else None
        if memory is None:
            raise NotFound(
                f"no patient named {name!r}",
                reason="PATIENT_NOT_FOUND",
                violations=[FieldViolation("name", "no such patient", "NOT_FOUND")],
            )
        return memory

    @staticmethod
    def _refresh(c: cpb.Consultation, result: ConsultationResult, missing: list[str]) -> None:
        runs = [e.run for e in result.transcript if e.run is not None]
        del c.missing_reviews[:]
        c.missing_reviews.extend(missing)
        c.needs_prescriber_review = result.outcome not in (
            Outcome.AGREED,
            Outcome.NOT_TREATED,
        ) or bool(missing)
        c.notice = notice_for(result.outcome, result.escalation_reason, missing, runs)

    async def get(self, name: str, *, actor: str = "") -> cpb.Consultation:
        """The consultation named `name` (NOT_FOUND otherwise); the read is audited as `actor`."""
        found = await self.store.get(name, actor=actor)
        if found is None:
            raise NotFound(
                f"no consultation named {name!r}",
                reason="CONSULTATION_NOT_FOUND",
                violations=[FieldViolation("name", "no such consultation", "NOT_FOUND")],
            )
        return found

    async def ask(self, name: str, question: str, *, actor: str = "") -> rpb.AnswerQuestionResponse:
        consultation = await self.get(name, actor=actor)
        try:
            return await self.report.answer(consultation, question, self.limits.agent_timeout_s)
        except ReviewUnavailable as exc:
            raise Unavailable(
                "the report service cannot answer now",
                reason="REPORT_UNAVAILABLE",
                metadata={"cause": exc.reason},
            ) from None
