"""A bounded in-memory ConsultationStore (least recently used evicted), for tests and local
runs. NOT DURABLE: a restart forgets consultations, their sign-offs, follow-ups, reviews and
the audit trail. The audit events it keeps (a bounded list, hash-chained like the Postgres log
but with nothing to protect it) only let ListAuditEvents work without a database; Postgres is
the system of record."""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping
from datetime import UTC, datetime

from services.consult.domain.ports import (
    SIGNABLE,
    AlreadySigned,
    FollowUpRecord,
    ReviewRecord,
)
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db.audit import GENESIS_HASH, JsonValue, canonical_json, chain_hash


class MemoryConsultationStore:
    def __init__(self, capacity: int = 10_000, audit_capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, cpb.Consultation] = OrderedDict()
        self.follow_ups: dict[str, FollowUpRecord] = {}
        self.reviews: dict[str, ReviewRecord] = {}
        self._audit: deque[cpb.AuditEvent] = deque(maxlen=audit_capacity)
        self._seq = 0
        self._head = GENESIS_HASH

    async def put(self, consultation: cpb.Consultation, *, actor: str = "") -> None:
        action = (
            "consultation.update" if consultation.name in self._items else "consultation.create"
        )
        self._items[consultation.name] = consultation
        self._items.move_to_end(consultation.name)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        self._append(actor or "consult", action, consultation.name, consultation.request_id, {})

    async def get_by_request_id(
        self, request_id: str, *, actor: str = ""
    ) -> cpb.Consultation | None:
        """Reads are not audited here (only the Postgres store audits reads)."""
        if not request_id:
            return None
        return next((c for c in reversed(self._items.values()) if c.request_id == request_id), None)

    async def get(self, name: str, *, actor: str = "") -> cpb.Consultation | None:
        item = self._items.get(name)
        if item is not None:
            self._items.move_to_end(name)
        return item

    async def sign_off(
        self,
        name: str,
        status: cpb.ConsultationStatus.ValueType,
        sign_off: cpb.SignOff,
        *,
        actor: str,
        request_id: str = "",
    ) -> cpb.Consultation | None:
        current = self._items.get(name)
        if current is None:
            return None
        if current.status not in SIGNABLE:
            raise AlreadySigned(name)
        updated = cpb.Consultation()
        updated.CopyFrom(current)
        updated.status = status
        updated.sign_off.CopyFrom(sign_off)
        self._items[name] = updated  # no await since the check: atomic on the event loop
        self._append(
            actor,
            "consultation.sign_off",
            name,
            request_id,
            {
                "action": cpb.SignOffAction.Name(sign_off.action),
                "status": cpb.ConsultationStatus.Name(status),
            },
        )
        return updated

    async def save_follow_up(self, record: FollowUpRecord) -> None:
        self.follow_ups[record.name] = record
        self._append(
            record.recorded_by,
            "consultation.follow_up",
            record.consultation,
            record.request_id,
            {"follow_up": record.name, "outcome": cpb.EpisodeOutcome.Name(record.outcome)},
        )

    async def save_review(self, record: ReviewRecord) -> None:
        self.reviews[record.name] = record
        self._append(
            record.reviewer,
            "consultation.review",
            record.consultation,
            record.request_id,
            {"review": record.name, "reviewer_role": record.reviewer_role},
        )

    async def list_audit_events(
        self, *, limit: int, before_seq: int | None = None, resource: str | None = None
    ) -> list[cpb.AuditEvent]:
        found: list[cpb.AuditEvent] = []
        for event in reversed(self._audit):
            if len(found) >= limit:
                break
            if before_seq is not None and event.seq >= before_seq:
                continue
            if resource is not None and event.resource != resource:
                continue
            out = cpb.AuditEvent()
            out.CopyFrom(event)
            found.append(out)
        return found

    def _append(
        self,
        actor: str,
        action: str,
        resource: str,
        request_id: str,
        payload: Mapping[str, JsonValue],
    ) -> None:
        self._seq += 1
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        body = {
            "seq": self._seq,
            "id": str(uuid.uuid4()),
            "at": at,
            "actor": actor,
            "action": action,
            "resource": resource,
            "request_id": request_id,
            "payload": dict(payload),
        }
        digest = chain_hash(self._head, canonical_json(body))
        self._audit.append(
            cpb.AuditEvent(
                seq=self._seq,
                at=at,
                actor=actor,
                action=action,
                resource=resource,
                request_id=request_id,
                hash=digest,
                prev_hash=self._head,
            )
        )
        self._head = digest
