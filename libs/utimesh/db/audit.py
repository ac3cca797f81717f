"""The append-only, hash-chained audit log (`audit_events`).

Each event's `hash` is `sha256(prev_hash + canonical JSON of the event)`, where the event is
its seq, id, time, actor, action, resource, request id and payload, and `prev_hash` is the hash
of the event before it (64 zeros for the first). Appenders lock the single `audit_chain_head`
row, so events are chained strictly one after the other with gapless sequence numbers, and the
head records the last seq and hash so that events removed from the end are noticed too.

`verify` walks the chain in one snapshot and names the first event that does not check out.
Payloads hold identifiers only, never patient data: `append` accepts only strings, integers,
booleans and null (in lists and objects), and refuses more than a few kilobytes."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg

from utimesh.db.pool import Conn

GENESIS_HASH = "0" * 64
MAX_PAYLOAD_BYTES = 4096
_FORMAT = 1  # version of the canonical form, part of every hash

JsonValue: TypeAlias = str | int | bool | list["JsonValue"] | dict[str, "JsonValue"] | None


class AuditSchemaMissing(RuntimeError):
    """The audit tables are not there: run the migrations first."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event of the chain, as stored."""

    seq: int
    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    resource: str
    request_id: str
    payload: Mapping[str, JsonValue]
    prev_hash: str
    hash: str

    def canonical(self) -> str:
        """The canonical JSON text the hash covers (everything but the hashes)."""
        return canonical_json(
            {
                "v": _FORMAT,
                "seq": self.seq,
                "id": str(self.id),
                "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"),
                "actor": self.actor,
                "action": self.action,
                "resource": self.resource,
                "request_id": self.request_id,
                "payload": dict(self.payload),
            }
        )

    def expected_hash(self) -> str:
        """The hash this event must have, given its `prev_hash` and content."""
        return chain_hash(self.prev_hash, self.canonical())


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of walking the chain."""

    ok: bool
    checked: int  # events that checked out before the first broken one (all, when ok)
    first_broken_seq: int | None = None
    reason: str = ""
    head_seq: int = 0  # the last seq according to the chain head


def canonical_json(value: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces, UTF-8 text kept as is, no NaN: one text per value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def chain_hash(prev_hash: str, canonical: str) -> str:
    """sha256(prev_hash + canonical), hex."""
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _check_payload(value: object, path: str = "payload") -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path}: NUL characters cannot be stored")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_payload(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings, got {type(key).__name__}")
            _check_payload(item, f"{path}.{key}")
        return
    # Floats would not survive jsonb unchanged (1e20 comes back as an integer): no hash match.
    raise ValueError(f"{path}: {type(value).__name__} is not allowed (ids only: str, int, bool)")


def _event(row: asyncpg.Record) -> AuditEvent:
    payload = row["payload"]
    decoded = json.loads(payload) if isinstance(payload, str) else payload
    return AuditEvent(
        seq=row["seq"],
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        resource=row["resource"],
        request_id=row["request_id"],
        payload=decoded,
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


_COLUMNS = (
    "seq, id, at, actor, action, resource, request_id, payload::text AS payload, prev_hash, hash"
)


async def append(
    conn: Conn,
    actor: str,
    action: str,
    resource: str,
    request_id: str = "",
    payload: Mapping[str, JsonValue] | None = None,
) -> AuditEvent:
    """Append one event and return it.

    Runs in its own transaction, or as a savepoint of the caller's, so the event commits (or
    not) with the caller's change. Blocks while another transaction holds the chain head, which
    keeps the chain strictly sequential: keep the surrounding transaction short."""
    body: dict[str, JsonValue] = dict(payload or {})
    _check_payload(body)
    if len(canonical_json(body).encode("utf-8")) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes: ids only")
    for name, text in (("actor", actor), ("action", action), ("resource", resource)):
        if not text:
            raise ValueError(f"{name} must not be empty")
    async with conn.transaction():
        try:
            head = await conn.fetchrow(
                "SELECT seq, hash, clock_timestamp() AS now FROM audit_chain_head"
                " WHERE singleton FOR UPDATE"
            )
        except asyncpg.UndefinedTableError as exc:
            raise AuditSchemaMissing("audit tables missing: run the migrations") from exc
        if head is None:
            raise AuditSchemaMissing("audit chain head row missing")
        event = AuditEvent(
            seq=head["seq"] + 1,
            id=uuid.uuid4(),
            at=head["now"],
            actor=actor,
            action=action,
            resource=resource,
            request_id=request_id,
            payload=body,
            prev_hash=head["hash"],
            hash="",
        )
        digest = event.expected_hash()
        await conn.execute(
            "INSERT INTO audit_events (seq, id, at, actor, action, resource, request_id,"
            " payload, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)",
            event.seq,
            event.id,
            event.at,
            actor,
            action,
            resource,
            request_id,
            canonical_json(body),
            event.prev_hash,
            digest,
        )
        await conn.execute(
            "UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE singleton", event.seq, digest
        )
    return replace(event, hash=digest)


def _broken(checked: int, seq: int, reason: str, head_seq: int) -> VerifyResult:
    return VerifyResult(
        ok=False, checked=checked, first_broken_seq=seq, reason=reason, head_seq=head_seq
    )


async def verify(conn: Conn, *, batch: int = 1000) -> VerifyResult:
    """Walk the whole chain in one consistent snapshot and check every link.

    Reports the first broken event: a missing seq (a deleted event), a `prev_hash` that does
    not match the event before (an earlier event's hash was rewritten), a content that does
    not match its hash (the event was altered), or a chain head that disagrees with the last
    event (events removed from, or added behind the log's back at, the end)."""
    # Inside a caller's transaction its snapshot rules (a savepoint cannot change isolation).
    snapshot = (
        conn.transaction()
        if conn.is_in_transaction()
        else conn.transaction(isolation="repeatable_read", readonly=True)
    )
    async with snapshot:
        try:
            head = await conn.fetchrow("SELECT seq, hash FROM audit_chain_head WHERE singleton")
        except asyncpg.UndefinedTableError as exc:
            raise AuditSchemaMissing("audit tables missing: run the migrations") from exc
        if head is None:
            return _broken(0, 1, "the audit chain head row is missing", 0)
        head_seq: int = head["seq"]
        expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
        query = f"SELECT {_COLUMNS} FROM audit_events ORDER BY seq"
        async for row in conn.cursor(query, prefetch=batch):
            event = _event(row)
            if event.seq > head_seq:
                return _broken(
                    checked,
                    event.seq,
                    f"event {event.seq} lies beyond the chain head ({head_seq}): "
                    "it was not appended through the audit log",
                    head_seq,
                )
            if event.seq != expected_seq:
                return _broken(
                    checked,
                    expected_seq,
                    f"event {expected_seq} is missing (the next stored event is {event.seq})",
                    head_seq,
                )
            if event.prev_hash != prev_hash:
                return _broken(
                    checked,
                    event.seq,
                    "prev_hash does not match the hash of the event before it",
                    head_seq,
                )
            if event.hash != event.expected_hash():
                return _broken(
                    checked,
                    event.seq,
                    "the event's content does not match its hash (it was altered)",
                    head_seq,
                )
            prev_hash, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
        last_seq = expected_seq - 1
        if head_seq > last_seq:
            return _broken(
                checked,
                last_seq + 1,
                f"events {last_seq + 1}..{head_seq} are missing (the chain head is at {head_seq})",
                head_seq,
            )
        if head["hash"] != prev_hash:
            return _broken(
                checked,
                head_seq,
                "the chain head's hash does not match the last event",
                head_seq,
            )
    return VerifyResult(ok=True, checked=checked, head_seq=head_seq)


async def list_events(
    conn: Conn, *, limit: int = 20, resource: str | None = None
) -> list[AuditEvent]:
    """The latest `limit` events, newest first (only those about `resource` when given)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if resource is None:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM audit_events ORDER BY seq DESC LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM audit_events WHERE resource = $1 ORDER BY seq DESC LIMIT $2",
            resource,
            limit,
        )
    return [_event(row) for row in rows]
