"""The PostgreSQL ConsultationStore: the system of record of consultations.

A consultation is kept whole as its serialized `Consultation` message (`record`), beside the
columns that queries need (outcome, decision, profile, ...). Every write and every successful
read appends an audit event in the same transaction: a consultation is never stored or shown
without a trace. Audit payloads carry ids and a digest of the record, never patient data."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TypeVar

import asyncpg

from services.consult.domain.ports import SIGNABLE, AlreadySigned, FollowUpRecord, ReviewRecord
from utimesh.clinical.v1 import clinical_pb2
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import audit
from utimesh.db.pool import Conn, Pool
from utimesh.kit.errors import FailedPrecondition

_NAME_PREFIX = "consultations/"
_REQUEST_ID_INDEX = "consultations_request_id_key"
_V = TypeVar("_V")

_UPSERT = """
INSERT INTO consultations (
    id, name, request_id, created_at, profile, decision, outcome, needs_prescriber_review,
    record, report_markdown, ruleset_hash, corpus_version, status
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (name) DO UPDATE SET
    request_id = EXCLUDED.request_id,
    profile = EXCLUDED.profile,
    decision = EXCLUDED.decision,
    outcome = EXCLUDED.outcome,
    needs_prescriber_review = EXCLUDED.needs_prescriber_review,
    record = EXCLUDED.record,
    report_markdown = EXCLUDED.report_markdown,
    ruleset_hash = EXCLUDED.ruleset_hash,
    corpus_version = EXCLUDED.corpus_version,
    status = EXCLUDED.status
RETURNING id, (xmax = 0) AS inserted
"""

_AUDIT_COLUMNS = "seq, at, actor, action, resource, request_id, prev_hash, hash"


def consultation_id(name: str) -> uuid.UUID:
    """The row id of a consultation: the UUID in "consultations/{uuid}", or for any other
    name a UUID derived from it (stable, so the same name always maps to the same row)."""
    if name.startswith(_NAME_PREFIX):
        try:
            return uuid.UUID(name.removeprefix(_NAME_PREFIX))
        except ValueError:
            pass
    return uuid.uuid5(uuid.NAMESPACE_URL, f"utimesh:{name}")


def _created_at(create_time: str) -> datetime:
    """RFC 3339 `create_time` as a datetime; now when empty or unreadable."""
    if create_time:
        try:
            parsed = datetime.fromisoformat(create_time)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def status_text(status: cpb.ConsultationStatus.ValueType) -> str:
    """The `status` column's value: "draft", "approved", "amended" or "rejected"."""
    if status == cpb.CONSULTATION_STATUS_UNSPECIFIED:
        return "draft"  # stored before statuses existed: a draft
    return (
        _enum_name(cpb.ConsultationStatus.Name, status).removeprefix("CONSULTATION_STATUS_").lower()
    )


def child_id(name: str) -> uuid.UUID:
    """The row id of a sub-resource ("consultations/{id}/reviews/{uuid}"): its last segment
    when a UUID, else a UUID derived from the whole name."""
    try:
        return uuid.UUID(name.rsplit("/", 1)[-1])
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"utimesh:{name}")


def _enum_name(name_of: Callable[[_V], str], value: _V) -> str:
    """The enum value's name (e.g. "OUTCOME_AGREED"); the number for one newer than our protos."""
    try:
        return name_of(value)
    except ValueError:
        return str(value)


class RequestIdInUse(FailedPrecondition):
    """Another consultation already holds this request id (idempotency is the caller's job)."""


class PostgresConsultationStore:
    """ConsultationStore on PostgreSQL (tables of migrations 0001 and 0003). `actor` is recorded in the
    audit events it appends."""

    def __init__(
        self, pool: Pool, *, actor: str = "consult", read_pool: Pool | None = None
    ) -> None:
        self.pool = pool
        self.read_pool = read_pool or pool  # reads that write nothing (no audit event)
        self.actor = actor

    async def put(self, consultation: cpb.Consultation, *, actor: str = "") -> None:
        """Insert (or replace, when the name exists) and audit `consultation.create` (or
        `consultation.update`) as `actor` (default: the store's) in one transaction.
        RequestIdInUse when another consultation already has the same non-empty request id."""
        c = consultation
        if not c.name:
            raise ValueError("a consultation needs a name to be stored")
        record = c.SerializeToString(deterministic=True)
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    _UPSERT,
                    consultation_id(c.name),
                    c.name,
                    c.request_id,
                    _created_at(c.create_time),
                    c.triage.profile,
                    _enum_name(clinical_pb2.Decision.Name, c.decision),
                    _enum_name(cpb.Outcome.Name, c.outcome),
                    c.needs_prescriber_review,
                    record,
                    c.report_markdown,
                    c.triage.ruleset_hash,
                    c.corpus_version,
                    status_text(c.status),
                )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != _REQUEST_ID_INDEX:
                    raise
                raise RequestIdInUse(
                    "another consultation was already created with this request_id",
                    reason="REQUEST_ID_IN_USE",
                ) from None
            assert row is not None  # RETURNING always yields the row
            await audit.append(
                conn,
                actor=actor or self.actor,
                action="consultation.create" if row["inserted"] else "consultation.update",
                resource=c.name,
                request_id=c.request_id,
                payload={
                    "consultation_id": str(row["id"]),
                    "record_sha256": hashlib.sha256(record).hexdigest(),
                },
            )

    async def get(self, name: str, *, actor: str = "") -> cpb.Consultation | None:
        """The consultation named `name`, or None. A found one is audited `consultation.read`
        as `actor` (default: the store's)."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._read(conn, "name = $1", name, request_id="", actor=actor)

    async def get_by_request_id(
        self, request_id: str, *, actor: str = ""
    ) -> cpb.Consultation | None:
        """The consultation created with `request_id` (non-empty), or None; audited as a read.
        For AIP-155 idempotency: a retried request finds its earlier result."""
        if not request_id:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._read(
                conn, "request_id = $1", request_id, request_id=request_id, actor=actor
            )

    async def _read(
        self, conn: Conn, where: str, value: str, *, request_id: str, actor: str = ""
    ) -> cpb.Consultation | None:
        row = await conn.fetchrow(
            f"SELECT id, name, record FROM consultations WHERE {where}", value
        )
        if row is None:
            return None
        found = cpb.Consultation.FromString(row["record"])
        await audit.append(
            conn,
            actor=actor or self.actor,
            action="consultation.read",
            resource=row["name"],
            request_id=request_id,
            payload={"consultation_id": str(row["id"])},
        )
        return found

    async def sign_off(
        self,
        name: str,
        status: cpb.ConsultationStatus.ValueType,
        sign_off: cpb.SignOff,
        *,
        actor: str,
        request_id: str = "",
    ) -> cpb.Consultation | None:
        """Sign off a draft (row locked, so two prescribers cannot both sign) and audit
        `consultation.sign_off` in the same transaction. None when unknown; AlreadySigned when
        it is not a draft any more. The audit payload holds ids and enum names only (never
        the reason)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT id, record FROM consultations WHERE name = $1 FOR UPDATE", name
            )
            if row is None:
                return None
            c = cpb.Consultation.FromString(row["record"])
            if c.status not in SIGNABLE:
                raise AlreadySigned(name)
            c.status = status
            c.sign_off.CopyFrom(sign_off)
            record = c.SerializeToString(deterministic=True)
            await conn.execute(
                "UPDATE consultations SET record = $2, status = $3, signed_by = $4, signed_at = $5"
                " WHERE id = $1",
                row["id"],
                record,
                status_text(status),
                sign_off.by,
                _created_at(sign_off.at),
            )
            payload: dict[str, audit.JsonValue] = {
                "consultation_id": str(row["id"]),
                "action": _enum_name(cpb.SignOffAction.Name, sign_off.action),
                "status": _enum_name(cpb.ConsultationStatus.Name, status),
                "record_sha256": hashlib.sha256(record).hexdigest(),
            }
            if sign_off.HasField("regimen"):
                payload["agent"] = _enum_name(clinical_pb2.Agent.Name, sign_off.regimen.agent)
            await audit.append(
                conn,
                actor=actor,
                action="consultation.sign_off",
                resource=name,
                request_id=request_id,
                payload=payload,
            )
            return c

    async def save_follow_up(self, record: FollowUpRecord) -> None:
        """Insert a follow-up visit and audit `consultation.follow_up` in one transaction."""
        r = record
        row_id = child_id(r.name)
        consultation = consultation_id(r.consultation)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO consultation_follow_ups (id, name, consultation_id, visit_date,"
                " answers, decision, rule_ids, outcome, recorded_by)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                row_id,
                r.name,
                consultation,
                date.fromisoformat(r.visit_date),
                r.answers.SerializeToString(deterministic=True),
                _enum_name(clinical_pb2.Decision.Name, r.decision),
                list(r.rule_ids),
                _enum_name(cpb.EpisodeOutcome.Name, r.outcome),
                r.recorded_by,
            )
            await audit.append(
                conn,
                actor=r.recorded_by,
                action="consultation.follow_up",
                resource=r.consultation,
                request_id=r.request_id,
                payload={
                    "consultation_id": str(consultation),
                    "follow_up_id": str(row_id),
                    "decision": _enum_name(clinical_pb2.Decision.Name, r.decision),
                    "outcome": _enum_name(cpb.EpisodeOutcome.Name, r.outcome),
                    "rule_ids": list(r.rule_ids),
                },
            )

    async def save_review(self, record: ReviewRecord) -> None:
        """Insert a review and audit `consultation.review` in one transaction (the comment is
        stored but never audited)."""
        r = record
        row_id = child_id(r.name)
        consultation = consultation_id(r.consultation)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO consultation_reviews (id, name, consultation_id, reviewer,"
                " reviewer_role, agrees_with_decision, agrees_with_plan, error_categories,"
                " comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                row_id,
                r.name,
                consultation,
                r.reviewer,
                r.reviewer_role,
                r.agrees_with_decision,
                r.agrees_with_plan,
                list(r.error_categories),
                r.comment,
            )
            await audit.append(
                conn,
                actor=r.reviewer,
                action="consultation.review",
                resource=r.consultation,
                request_id=r.request_id,
                payload={
                    "consultation_id": str(consultation),
                    "review_id": str(row_id),
                    "reviewer_role": r.reviewer_role,
                    "agrees_with_decision": r.agrees_with_decision,
                    "agrees_with_plan": r.agrees_with_plan,
                    "error_category_count": len(r.error_categories),
                },
            )

    async def list_audit_events(
        self, *, limit: int, before_seq: int | None = None, resource: str | None = None
    ) -> list[cpb.AuditEvent]:
        """Up to `limit` audit events, newest first (seq < before_seq; about `resource`)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with self.read_pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_events"
                " WHERE ($1::bigint IS NULL OR seq < $1) AND ($2::text IS NULL OR resource = $2)"
                " ORDER BY seq DESC LIMIT $3",
                before_seq,
                resource,
                limit,
            )
        return [
            cpb.AuditEvent(
                seq=row["seq"],
                at=row["at"].astimezone(UTC).isoformat(timespec="microseconds"),
                actor=row["actor"],
                action=row["action"],
                resource=row["resource"],
                request_id=row["request_id"],
                hash=row["hash"],
                prev_hash=row["prev_hash"],
            )
            for row in rows
        ]
