"""The PostgreSQL ConsultationStore: the system of record of consultations.

A consultation is kept whole as its serialized `Consultation` message (`record`), beside the
columns that queries need (outcome, decision, profile, ...). Every write and every successful
read appends an audit event in the same transaction: a consultation is never stored or shown
without a trace. Audit payloads carry ids and a digest of the record, never patient data."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

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
    record, report_markdown, ruleset_hash, corpus_version
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (name) DO UPDATE SET
    request_id = EXCLUDED.request_id,
    profile = EXCLUDED.profile,
    decision = EXCLUDED.decision,
    outcome = EXCLUDED.outcome,
    needs_prescriber_review = EXCLUDED.needs_prescriber_review,
    record = EXCLUDED.record,
    report_markdown = EXCLUDED.report_markdown,
    ruleset_hash = EXCLUDED.ruleset_hash,
    corpus_version = EXCLUDED.corpus_version
RETURNING id, (xmax = 0) AS inserted
"""


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


def _enum_name(name_of: Callable[[_V], str], value: _V) -> str:
    """The enum value's name (e.g. "OUTCOME_AGREED"); the number for one newer than our protos."""
    try:
        return name_of(value)
    except ValueError:
        return str(value)


class RequestIdInUse(FailedPrecondition):
    """Another consultation already holds this request id (idempotency is the caller's job)."""


class PostgresConsultationStore:
    """ConsultationStore on PostgreSQL (tables of migration 0001). `actor` is recorded in the
    audit events it appends."""

    def __init__(self, pool: Pool, *, actor: str = "consult") -> None:
        self.pool = pool
        self.actor = actor

    async def put(self, consultation: cpb.Consultation) -> None:
        """Insert (or replace, when the name exists) and audit `consultation.create` (or
        `consultation.update`) in one transaction. RequestIdInUse when another consultation
        already has the same non-empty request id."""
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
                actor=self.actor,
                action="consultation.create" if row["inserted"] else "consultation.update",
                resource=c.name,
                request_id=c.request_id,
                payload={
                    "consultation_id": str(row["id"]),
                    "record_sha256": hashlib.sha256(record).hexdigest(),
                },
            )

    async def get(self, name: str) -> cpb.Consultation | None:
        """The consultation named `name`, or None. A found one is audited `consultation.read`."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._read(conn, "name = $1", name, request_id="")

    async def get_by_request_id(self, request_id: str) -> cpb.Consultation | None:
        """The consultation created with `request_id` (non-empty), or None; audited as a read.
        For AIP-155 idempotency: a retried request finds its earlier result."""
        if not request_id:
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            return await self._read(conn, "request_id = $1", request_id, request_id=request_id)

    async def _read(
        self, conn: Conn, where: str, value: str, *, request_id: str
    ) -> cpb.Consultation | None:
        row = await conn.fetchrow(
            f"SELECT id, name, record FROM consultations WHERE {where}", value
        )
        if row is None:
            return None
        found = cpb.Consultation.FromString(row["record"])
        await audit.append(
            conn,
            actor=self.actor,
            action="consultation.read",
            resource=row["name"],
            request_id=request_id,
            payload={"consultation_id": str(row["id"])},
        )
        return found
