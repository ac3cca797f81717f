"""Record-keeping use cases of a consultation: the prescriber's sign-off, follow-up visits,
clinicians' reviews and the audit listing. Permission checks here are defence in depth beside
the edge's RBAC (gateway/policy.py): a call without the right role is refused either way."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.consult.domain.deliberation import TriagePort
from services.consult.domain.memory import EpisodeOutcome, PatientStore
from services.consult.domain.ports import (
    SIGNABLE,
    AlreadySigned,
    ConsultationStore,
    FollowUpRecord,
    ReviewRecord,
)
from utimesh.clinical.v1 import clinical_pb2
from utimesh.codec.agents import proposed_from_proto
from utimesh.codec.clinical import intake_from_proto
from utimesh.codec.triage import assessment_to_proto as triage_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit import metrics
from utimesh.kit.caller import Caller
from utimesh.kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from utimesh.rules.model import EncounterType, FollowUpAnswers
from utimesh.triage.v1 import triage_pb2 as tpb

MAX_REASON_CHARS = 1000
MAX_COMMENT_CHARS = 4000
MAX_ERROR_CATEGORIES = 20
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
log = logging.getLogger(__name__)

#: A follow-up's EpisodeOutcome as the patient memory records it.
MEMORY_OUTCOME = {
    cpb.EPISODE_OUTCOME_ONGOING: EpisodeOutcome.ONGOING,
    cpb.EPISODE_OUTCOME_IMPROVING: EpisodeOutcome.IMPROVING,
    cpb.EPISODE_OUTCOME_FAILED: EpisodeOutcome.FAILED,
    cpb.EPISODE_OUTCOME_ADVERSE_EFFECT: EpisodeOutcome.ADVERSE_EFFECT,
}

#: Roles that may review, most specific first (the first one the caller has is recorded).
REVIEWER_ROLES = ("prescriber", "pharmacist", "clinician")

_STATUS_OF = {
    cpb.SIGN_OFF_ACTION_APPROVE: cpb.CONSULTATION_STATUS_APPROVED,
    cpb.SIGN_OFF_ACTION_AMEND: cpb.CONSULTATION_STATUS_AMENDED,
    cpb.SIGN_OFF_ACTION_REJECT: cpb.CONSULTATION_STATUS_REJECTED,
}


def _require(caller: Caller, *roles: str) -> None:
    if not caller.has(*roles):
        raise PermissionDenied(
            f"this action needs one of the roles: {', '.join(roles)}",
            reason="ROLE_REQUIRED",
            metadata={"roles": ",".join(roles)},
        )


def _invalid(*violations: FieldViolation) -> InvalidArgument:
    return InvalidArgument(
        "the request is invalid", reason="INVALID_REQUEST", violations=violations
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def effective_regimen(c: cpb.Consultation) -> clinical_pb2.Regimen | None:
    """The regimen the patient is on: the amended one after an amendment, else the draft's."""
    if c.status == cpb.CONSULTATION_STATUS_AMENDED and c.sign_off.HasField("regimen"):
        return c.sign_off.regimen
    return c.regimen if c.HasField("regimen") else None


def episode_outcome(
    rule_ids: tuple[str, ...] | list[str], answers: clinical_pb2.FollowUpAnswers
) -> cpb.EpisodeOutcome.ValueType:
    """What a follow-up says of the episode: FAILED (FU-003 worsened, FU-004 not improved at
    48 h) before ADVERSE_EFFECT (FU-005), IMPROVING (FU-006 and improved), else ONGOING."""
    fired = set(rule_ids)
    if fired & {"FU-003", "FU-004"}:
        return cpb.EPISODE_OUTCOME_FAILED
    if "FU-005" in fired:
        return cpb.EPISODE_OUTCOME_ADVERSE_EFFECT
    if "FU-006" in fired and answers.HasField("improved") and answers.improved:
        return cpb.EPISODE_OUTCOME_IMPROVING
    return cpb.EPISODE_OUTCOME_ONGOING


def encode_page_token(before_seq: int, resource: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{before_seq}:{resource}".encode()).decode()


def decode_page_token(token: str, resource: str) -> int:
    """The seq a page starts below; INVALID_ARGUMENT when the token is not ours or was made
    for another resource filter."""
    try:
        version, seq, made_for = base64.urlsafe_b64decode(token.encode()).decode().split(":", 2)
        before = int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        before, version, made_for = 0, "", ""
    if version != "v1" or before < 1 or made_for != resource:
        raise _invalid(
            FieldViolation("page_token", "not a token of this listing", "INVALID_PAGE_TOKEN")
        )
    return before


@dataclass(frozen=True)
class Records:
    store: ConsultationStore
    triage: TriagePort
    patients: PatientStore | None = None  # where a follow-up's episode outcome is recorded
    timeout_s: float = 30.0

    async def _get(self, name: str, actor: str = "") -> cpb.Consultation:
        found = await self.store.get(name, actor=actor) if name else None
        if found is None:
            raise NotFound(
                f"no consultation named {name!r}",
                reason="CONSULTATION_NOT_FOUND",
                violations=[FieldViolation("name", "no such consultation", "NOT_FOUND")],
            )
        return found

    # --- sign-off -----------------------------------------------------------------------

    async def sign_off(
        self, caller: Caller, request: cpb.SignOffConsultationRequest, *, request_id: str = ""
    ) -> cpb.Consultation:
        _require(caller, "prescriber")
        reason = request.reason.strip()
        violations = []
        if request.action not in _STATUS_OF:
            violations.append(
                FieldViolation("action", "must be APPROVE, AMEND or REJECT", "REQUIRED")
            )
        if request.action in (cpb.SIGN_OFF_ACTION_AMEND, cpb.SIGN_OFF_ACTION_REJECT) and not reason:
            violations.append(
                FieldViolation("reason", "is required to amend or reject", "REQUIRED")
            )
        if len(reason) > MAX_REASON_CHARS:
            violations.append(
                FieldViolation(
                    "reason", f"must be at most {MAX_REASON_CHARS} characters", "OUT_OF_RANGE"
                )
            )
        if request.action == cpb.SIGN_OFF_ACTION_AMEND and not request.HasField("regimen"):
            violations.append(FieldViolation("regimen", "is required to amend", "REQUIRED"))
        if request.action != cpb.SIGN_OFF_ACTION_AMEND and request.HasField("regimen"):
            violations.append(FieldViolation("regimen", "is only for AMEND", "NOT_ALLOWED"))
        if violations:
            raise _invalid(*violations)

        c = await self._get(request.name, caller.sub)
        if c.status not in SIGNABLE:
            raise AlreadySigned(c.name)
        record = cpb.SignOff(action=request.action, by=caller.sub, at=_now(), reason=reason)
        if request.action == cpb.SIGN_OFF_ACTION_AMEND:
            await self._check_amendment(c, request.regimen)
            record.regimen.CopyFrom(request.regimen)
        signed = await self.store.sign_off(
            c.name, _STATUS_OF[request.action], record, actor=caller.sub, request_id=request_id
        )
        metrics.record_sign_off(request.action)
        if signed is None:  # removed (evicted) meanwhile
            return await self._get(c.name, caller.sub)
        return signed

    async def _check_amendment(self, c: cpb.Consultation, regimen: clinical_pb2.Regimen) -> None:
        if c.decision != clinical_pb2.DECISION_RECOMMEND_TREATMENT:
            raise FailedPrecondition(
                "only a recommended treatment can be amended",
                reason="NOT_ELIGIBLE",
                violations=[
                    FieldViolation("action", "the decision is not a treatment", "NOT_A_TREATMENT")
                ],
            )
        check = await self.triage.validate(
            intake_from_proto(c.intake),
            c.triage.profile,
            proposed_from_proto(regimen),
            self.timeout_s,
        )
        if not check.allowed:
            raise FailedPrecondition(
                "the regimen is not one of triage's eligible regimens for this patient",
                reason="NOT_ELIGIBLE",
                violations=[
                    FieldViolation(
                        f"regimen.{v.field}" if v.field else "regimen",
                        f"{v.message} ({', '.join(v.rule_ids)})" if v.rule_ids else v.message,
                        v.code,
                    )
                    for v in check.violations
                ],
            )

    # --- follow-up ----------------------------------------------------------------------

    async def follow_up(
        self, caller: Caller, request: cpb.RecordFollowUpRequest, *, request_id: str = ""
    ) -> cpb.RecordFollowUpResponse:
        violations = []
        if not request.HasField("answers"):
            violations.append(FieldViolation("answers", "is required", "REQUIRED"))
        try:
            visit = date.fromisoformat(request.visit_date)
        except ValueError:
            violations.append(
                FieldViolation("visit_date", "must be an ISO 8601 date (YYYY-MM-DD)", "INVALID")
            )
        if violations:
            raise _invalid(*violations)
        c = await self._get(request.name, caller.sub)
        if c.status == cpb.CONSULTATION_STATUS_REJECTED:
            raise FailedPrecondition(
                "a rejected consultation has no treatment to follow up",
                reason="CONSULTATION_REJECTED",
            )
        if c.decision != clinical_pb2.DECISION_RECOMMEND_TREATMENT or effective_regimen(c) is None:
            raise FailedPrecondition(
                "the consultation did not recommend a treatment to follow up",
                reason="NOT_A_TREATMENT",
            )
        a = request.answers
        intake = dataclasses.replace(
            intake_from_proto(c.intake),
            encounter_type=EncounterType.FOLLOW_UP,
            assessment_date=visit,
            follow_up=FollowUpAnswers(
                hours_since_treatment_start=(
                    a.hours_since_treatment_start
                    if a.HasField("hours_since_treatment_start")
                    else None
                ),
                improved=a.improved if a.HasField("improved") else None,
                worsened=a.worsened if a.HasField("worsened") else None,
                serious_adverse_effect=(
                    a.serious_adverse_effect if a.HasField("serious_adverse_effect") else None
                ),
                current_regimen=a.current_regimen if a.HasField("current_regimen") else None,
            ),
        )
        assessment = await self.triage.assess(intake, c.triage.profile, self.timeout_s)
        triage: tpb.AssessPatientResponse = triage_to_proto(assessment)
        outcome = episode_outcome(assessment.rule_ids, a)
        await self.store.save_follow_up(
            FollowUpRecord(
                name=f"{c.name}/followUps/{uuid.uuid4()}",
                consultation=c.name,
                visit_date=visit.isoformat(),
                answers=a,
                decision=triage.decision,
                rule_ids=assessment.rule_ids,
                outcome=outcome,
                recorded_by=caller.sub,
                request_id=request_id,
            )
        )
        await self._update_episode(c, outcome, caller.sub)
        return cpb.RecordFollowUpResponse(triage=triage, outcome=outcome)

    async def _update_episode(
        self, c: cpb.Consultation, outcome: cpb.EpisodeOutcome.ValueType, actor: str
    ) -> None:
        """Record the follow-up's outcome on the episode this consultation added to its
        patient's memory. The follow-up is kept either way; a failed update is logged."""
        recorded = MEMORY_OUTCOME.get(outcome)
        if not c.patient or self.patients is None or recorded is None:
            return
        try:
            found = await self.patients.set_episode_outcome(
                c.patient, c.name, recorded, actor=actor
            )
        except Exception:  # the follow-up is kept; the memory update is lost, loudly
            log.exception("episode outcome of %s not recorded", c.name)
            return
        if not found:
            log.warning("no episode of %s in the patient's memory to update", c.name)

    # --- review -------------------------------------------------------------------------

    async def review(
        self, caller: Caller, request: cpb.SubmitReviewRequest, *, request_id: str = ""
    ) -> str:
        _require(caller, *REVIEWER_ROLES)
        role = next(r for r in REVIEWER_ROLES if caller.has(r))
        categories = tuple(dict.fromkeys(c.strip() for c in request.error_categories))
        violations = [
            FieldViolation(
                f"error_categories[{i}]", "must be a lower-case snake_case word", "INVALID"
            )
            for i, cat in enumerate(categories)
            if not _CATEGORY.match(cat)
        ]
        if len(categories) > MAX_ERROR_CATEGORIES:
            violations.append(
                FieldViolation(
                    "error_categories", f"at most {MAX_ERROR_CATEGORIES}", "OUT_OF_RANGE"
                )
            )
        if len(request.comment) > MAX_COMMENT_CHARS:
            violations.append(
                FieldViolation(
                    "comment", f"must be at most {MAX_COMMENT_CHARS} characters", "OUT_OF_RANGE"
                )
            )
        if violations:
            raise _invalid(*violations)
        c = await self._get(request.name, caller.sub)
        name = f"{c.name}/reviews/{uuid.uuid4()}"
        await self.store.save_review(
            ReviewRecord(
                name=name,
                consultation=c.name,
                reviewer=caller.sub,
                reviewer_role=role,
                agrees_with_decision=request.agrees_with_decision,
                agrees_with_plan=request.agrees_with_plan,
                error_categories=categories,
                comment=request.comment,
                request_id=request_id,
            )
        )
        metrics.record_review(  # never the comment: free text
            role, request.agrees_with_decision, request.agrees_with_plan, categories
        )
        return name

    # --- audit --------------------------------------------------------------------------

    async def audit_events(
        self, caller: Caller, request: cpb.ListAuditEventsRequest
    ) -> cpb.ListAuditEventsResponse:
        _require(caller, "auditor")
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise _invalid(
                FieldViolation(
                    "page_size", f"must be 1 to {MAX_PAGE_SIZE} (0 = default)", "OUT_OF_RANGE"
                )
            )
        size = request.page_size or DEFAULT_PAGE_SIZE
        before = (
            decode_page_token(request.page_token, request.resource) if request.page_token else None
        )
        events = await self.store.list_audit_events(
            limit=size + 1, before_seq=before, resource=request.resource or None
        )
        page = events[:size]
        more = len(events) > size
        return cpb.ListAuditEventsResponse(
            events=page,
            next_page_token=encode_page_token(page[-1].seq, request.resource) if more else "",
        )
