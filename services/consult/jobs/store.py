"""PostgreSQL, the source of truth of queued consultations (table `operations`, migration 0004).

The Redis stream only carries operation names; whether a job runs, who holds it, how often it
was tried and how it ended live here. Every change is one short statement (or transaction) so
that a worker dying between two of them leaves a state the next worker can finish from:

    queued --lease--> running --succeed--> succeeded
       ^                 |  \\--retry---> retrying --(due)--> (sent again) --lease--> running
       |                 \\----dead_letter----> failed (dead_lettered)
    cancel (while queued or retrying) --> cancelled

A lease is taken with a conditional UPDATE (one holder at a time) and expires on its own: a job
whose worker died is taken again after `lease_until`. The request is sealed with AES-GCM (it can
carry the patient's identifier) and opened only by a worker."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db import audit
from utimesh.db.crypto import CryptoError, Keyring
from utimesh.db.pool import Pool

PREFIX = "operations/"
_PURPOSE = "job-request"
_COLUMNS = (
    "id, name, request_id, state, done, attempts, max_attempts, stage, error_code,"
    " error_reason, error_message, dead_lettered, consultation, cancel_requested, due_at,"
    " created_by, created_at, updated_at"
)
# One sweeper at a time across all workers (pg_try_advisory_xact_lock key).
_SWEEP_LOCK = 0x75746D_6A6F6273  # "utm" "jobs"

Send = Callable[[str], Awaitable[None]]  # puts an operation name on the stream

STATES = {
    "queued": cpb.OPERATION_STATE_QUEUED,
    "running": cpb.OPERATION_STATE_RUNNING,
    "retrying": cpb.OPERATION_STATE_RETRYING,
    "succeeded": cpb.OPERATION_STATE_SUCCEEDED,
    "failed": cpb.OPERATION_STATE_FAILED,
    "cancelled": cpb.OPERATION_STATE_CANCELLED,
}


def operation_uuid(name: str) -> uuid.UUID | None:
    """The id in "operations/{uuid}", or None when `name` is not such a name."""
    if not name.startswith(PREFIX):
        return None
    try:
        return uuid.UUID(name.removeprefix(PREFIX))
    except ValueError:
        return None


@dataclass(frozen=True)
class OperationRow:
    """An operation as stored (no request: that stays sealed)."""

    id: uuid.UUID
    name: str
    request_id: str
    state: str
    done: bool
    attempts: int
    max_attempts: int
    stage: str
    error_code: int | None
    error_reason: str
    error_message: str
    dead_lettered: bool
    consultation: str
    cancel_requested: bool
    due_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: asyncpg.Record) -> OperationRow:
        return cls(
            **{k: r[k] for k in cls.__dataclass_fields__} | {"request_id": r["request_id"] or ""}
        )


@dataclass(frozen=True)
class Lease:
    """A job a worker now holds: attempt number `attempts` of at most `max_attempts`.
    `request` is None when the sealed request cannot be opened or parsed (`unreadable` says
    why): such a job can never succeed."""

    name: str
    attempts: int
    max_attempts: int
    created_by: str
    request: cpb.StartConsultationRequest | None
    unreadable: str = ""
    last_error: str = ""


def page_token(row: OperationRow) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode()


def parse_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    """ValueError when `token` is not one of ours."""
    text = base64.urlsafe_b64decode(token.encode()).decode()
    at, _, ident = text.partition("|")
    return datetime.fromisoformat(at), uuid.UUID(ident)


class OperationStore:
    """Operations on PostgreSQL. `read_pool` (a replica's) serves Get and List when given;
    every write and every worker read goes to `pool` (the primary)."""

    def __init__(
        self,
        pool: Pool,
        keyring: Keyring,
        *,
        read_pool: Pool | None = None,
        max_attempts: int = 5,
        resend_after_s: float = 120.0,
        actor: str = "consult",
    ) -> None:
        self.pool = pool
        self.read_pool = read_pool or pool
        self.keyring = keyring
        self.max_attempts = max_attempts
        self.resend_after_s = resend_after_s
        self.actor = actor

    # --- the API side -------------------------------------------------------------------------

    async def create(
        self, request: cpb.StartConsultationRequest, *, actor: str = ""
    ) -> tuple[OperationRow, bool]:
        """Queue a consultation: (the operation, True), or (the one this request_id created
        before, False). Audited `operation.create` (ids only)."""
        op_id = uuid.uuid4()
        name = f"{PREFIX}{op_id}"
        raw = request.SerializeToString(deterministic=True)
        sealed = self.keyring.seal(base64.b64encode(raw).decode(), purpose=_PURPOSE)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO operations (id, name, request_id, payload, key_id, max_attempts,"
                " due_at, created_by) VALUES ($1, $2, $3, $4, $5, $6,"
                " now() + make_interval(secs => $7), $8)"
                f" ON CONFLICT (request_id) DO NOTHING RETURNING {_COLUMNS}",
                op_id,
                name,
                request.request_id or None,
                sealed.blob,
                sealed.key_id,
                self.max_attempts,
                self.resend_after_s,
                actor,
            )
            if row is None:  # AIP-155: the same request_id returns the same operation
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM operations WHERE request_id = $1", request.request_id
                )
                assert row is not None  # request_id rows are never deleted
                return OperationRow.of(row), False
            await audit.append(
                conn, actor or self.actor, "operation.create", name, request.request_id
            )
        return OperationRow.of(row), True

    async def send_now(self, name: str) -> None:
        """Make a queued job due for the sweep at once (its first send to the stream failed)."""
        await self.pool.execute(
            "UPDATE operations SET due_at = now() WHERE name = $1 AND NOT done", name
        )

    async def get(self, name: str) -> OperationRow | None:
        row = await self.read_pool.fetchrow(
            f"SELECT {_COLUMNS} FROM operations WHERE name = $1", name
        )
        return None if row is None else OperationRow.of(row)

    async def list(
        self, *, limit: int, after: tuple[datetime, uuid.UUID] | None, done: bool | None
    ) -> list[OperationRow]:
        """Newest first; `after` is the (created_at, id) of the last row of the previous page."""
        rows = await self.read_pool.fetch(
            f"SELECT {_COLUMNS} FROM operations"
            " WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))"
            " AND ($3::boolean IS NULL OR done = $3)"
            " ORDER BY created_at DESC, id DESC LIMIT $4",
            after[0] if after else None,
            after[1] if after else None,
            done,
            limit,
        )
        return [OperationRow.of(r) for r in rows]

    async def cancel(self, name: str, *, actor: str = "") -> OperationRow | None:
        """Ask for cancellation: a job not running ends CANCELLED at once; a running one
        finishes (a consultation is not cut in half) with `cancel_requested` set. None when
        unknown; a finished operation is left as it is. Audited `operation.cancel`."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE operations SET cancel_requested = NOT done,"
                " state = CASE WHEN state IN ('queued', 'retrying') THEN 'cancelled' ELSE state END,"
                " done = done OR state IN ('queued', 'retrying'),"
                " done_at = CASE WHEN state IN ('queued', 'retrying') THEN now() ELSE done_at END,"
                " error_code = CASE WHEN state IN ('queued', 'retrying') THEN 1 ELSE error_code END,"
                " error_reason = CASE WHEN state IN ('queued', 'retrying') THEN 'CANCELLED'"
                "   ELSE error_reason END,"
                " error_message = CASE WHEN state IN ('queued', 'retrying')"
                "   THEN 'cancelled by the caller' ELSE error_message END,"
                " due_at = CASE WHEN state IN ('queued', 'retrying') THEN NULL ELSE due_at END,"
                " updated_at = now()"
                f" WHERE name = $1 RETURNING {_COLUMNS}",
                name,
            )
            if row is not None:
                await audit.append(conn, actor or self.actor, "operation.cancel", name)
        return None if row is None else OperationRow.of(row)

    # --- the worker side ----------------------------------------------------------------------

    async def lease(self, name: str, owner: str, lease_s: float) -> Lease | None:
        """Take the job for one attempt, or None when it is done, cancelled or held by a live
        lease (the message was a duplicate: drop it). A retrying job is only sent again by
        the sweep once its time has come."""
        row = await self.pool.fetchrow(
            "UPDATE operations SET state = 'running', attempts = attempts + 1,"
            " lease_owner = $2, lease_until = now() + make_interval(secs => $3),"
            " due_at = now() + make_interval(secs => $3 + $4), stage = 'started',"
            " updated_at = now()"
            " WHERE name = $1 AND NOT done"
            " AND (lease_until IS NULL OR lease_until < now())"
            " RETURNING attempts, max_attempts, created_by, payload, error_reason, error_message",
            name,
            owner,
            lease_s,
            self.resend_after_s,
        )
        if row is None:
            return None
        last = f"{row['error_reason']}: {row['error_message']}" if row["error_reason"] else ""
        lease = Lease(name, row["attempts"], row["max_attempts"], row["created_by"], None, "", last)
        try:
            raw = base64.b64decode(self.keyring.open(row["payload"], purpose=_PURPOSE))
            request = cpb.StartConsultationRequest.FromString(raw)
        except (CryptoError, ValueError) as exc:  # DecodeError is a ValueError too
            return replace(lease, unreadable=f"{type(exc).__name__}: {exc}")
        return replace(lease, request=request)

    async def settled(self, name: str) -> bool:
        """True when nothing is left to do for `name`: done, or no such operation."""
        done = await self.pool.fetchval("SELECT done FROM operations WHERE name = $1", name)
        return done is None or bool(done)

    async def heartbeat(self, name: str, owner: str, lease_s: float) -> bool:
        """Extend our lease while the attempt runs; False when it is no longer ours."""
        status = await self.pool.execute(
            "UPDATE operations SET lease_until = now() + make_interval(secs => $3),"
            " due_at = now() + make_interval(secs => $3 + $4)"
            " WHERE name = $1 AND lease_owner = $2 AND state = 'running'",
            name,
            owner,
            lease_s,
            self.resend_after_s,
        )
        return status.endswith(" 1")

    async def progress(self, name: str, owner: str, stage: str) -> None:
        await self.pool.execute(
            "UPDATE operations SET stage = $3, updated_at = now()"
            " WHERE name = $1 AND lease_owner = $2 AND state = 'running'",
            name,
            owner,
            stage,
        )

    async def succeed(self, name: str, consultation: str) -> None:
        """Done with `consultation`. Idempotent; whoever finishes it first wins."""
        await self.pool.execute(
            "UPDATE operations SET state = 'succeeded', done = true, done_at = now(),"
            " consultation = $2, stage = 'done', lease_until = NULL, due_at = NULL,"
            " error_code = NULL, error_reason = '', error_message = '', updated_at = now()"
            " WHERE name = $1 AND NOT done",
            name,
            consultation,
        )

    async def retry(
        self, name: str, owner: str, *, code: int, reason: str, message: str, delay_s: float
    ) -> None:
        """The attempt failed: release the job and make it due again after `delay_s`."""
        await self.pool.execute(
            "UPDATE operations SET state = 'retrying', lease_until = NULL, lease_owner = '',"
            " due_at = now() + make_interval(secs => $6), error_code = $3, error_reason = $4,"
            " error_message = $5, updated_at = now()"
            " WHERE name = $1 AND lease_owner = $2 AND NOT done",
            name,
            owner,
            code,
            reason,
            message[:500],
            delay_s,
        )

    async def dead_letter(self, name: str, *, code: int, reason: str, message: str) -> bool:
        """Give up: FAILED with its reason, kept for a person to look at. False when the
        operation was done already."""
        status = await self.pool.execute(
            "UPDATE operations SET state = 'failed', done = true, done_at = now(),"
            " dead_lettered = true, lease_until = NULL, due_at = NULL, error_code = $2,"
            " error_reason = $3, error_message = $4, updated_at = now()"
            " WHERE name = $1 AND NOT done",
            name,
            code,
            reason,
            message[:500],
        )
        return status.endswith(" 1")

    async def sweep(self, send: Send, limit: int = 100) -> int:
        """Send again every job that is due and held by nobody: retries whose time has come,
        jobs whose worker died (lease run out) and jobs whose message Redis lost. One sweeper
        at a time; `send(name)` raising leaves the job due for the next sweep."""
        sent = 0
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _SWEEP_LOCK):
                return 0
            rows = await conn.fetch(
                "SELECT name FROM operations WHERE NOT done AND due_at <= now()"
                " AND (lease_until IS NULL OR lease_until < now())"
                " ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            for r in rows:
                await send(r["name"])
                await conn.execute(
                    "UPDATE operations SET due_at = now() + make_interval(secs => $2)"
                    " WHERE name = $1",
                    r["name"],
                    self.resend_after_s,
                )
                sent += 1
        return sent
