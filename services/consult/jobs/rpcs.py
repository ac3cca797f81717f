"""The API of queued consultations: StartConsultation (on ConsultationService) and the standard
google.longrunning.Operations service (Get, List, Cancel, Wait) over the operation store.

Operations are records, not caches: they are kept for the audit trail, so DeleteOperation is
UNIMPLEMENTED. A finished operation carries its Consultation as `response` (reading it is
audited like GetConsultation) or a google.rpc.Status `error` with an ErrorInfo reason
(DEAD_LETTERED, CANCELLED) and the cause."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.rpc import error_details_pb2, status_pb2

from services.consult import DOMAIN
from services.consult.app import ConsultationApp
from services.consult.jobs.store import (
    PREFIX,
    STATES,
    OperationRow,
    OperationStore,
    operation_uuid,
    page_token,
    parse_page_token,
)
from services.consult.jobs.stream import JobStream
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.caller import caller_of
from utimesh.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

log = logging.getLogger(__name__)

OPERATIONS_SERVICE = "google.longrunning.Operations"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 60.0
_POLL_S = 0.1
_FILTERS = {"": None, "done=true": True, "done=false": False}


@dataclass(frozen=True)
class Jobs:
    """What queueing needs: the operations (PostgreSQL) and the stream (Redis)."""

    store: OperationStore
    stream: JobStream


def _time(at: datetime | None) -> str:
    return "" if at is None else at.isoformat(timespec="milliseconds")


def to_operation(
    row: OperationRow, consultation: cpb.Consultation | None
) -> operations_pb2.Operation:
    op = operations_pb2.Operation(name=row.name, done=row.done)
    failed = row.state in ("failed", "cancelled")
    meta = cpb.ConsultationOperationMetadata(
        state=STATES[row.state],
        stage=row.stage,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        create_time=_time(row.created_at),
        update_time=_time(row.updated_at),
        next_attempt_time=_time(row.due_at) if row.state == "retrying" else "",
        last_error=f"{row.error_reason}: {row.error_message}" if row.error_reason else "",
        dead_lettered=row.dead_lettered,
        cancel_requested=row.cancel_requested,
        consultation=row.consultation,
    )
    op.metadata.Pack(meta)
    if row.done and failed:
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=row.error_reason,
                domain=DOMAIN,
                metadata={"attempts": str(row.attempts), "state": row.state},
            )
        )
        op.error.CopyFrom(
            status_pb2.Status(
                code=row.error_code or grpc.StatusCode.UNKNOWN.value[0],
                message=row.error_message,
                details=[info],
            )
        )
    elif row.done and consultation is not None:
        op.response.Pack(consultation)
    return op


def _bad_name(name: str) -> InvalidArgument:
    return InvalidArgument(
        "the operation name is invalid",
        reason="INVALID_NAME",
        violations=[FieldViolation("name", f"must be {PREFIX}{{uuid}}", "INVALID_FORMAT")],
    )


class OperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    def __init__(self, app: ConsultationApp, jobs: Jobs) -> None:
        self.app = app
        self.jobs = jobs

    async def _operation(self, row: OperationRow, actor: str) -> operations_pb2.Operation:
        consultation = None
        if row.state == "succeeded" and row.consultation:
            consultation = await self.app.get(row.consultation, actor=actor)
        return to_operation(row, consultation)

    async def _row(self, name: str) -> OperationRow:
        if operation_uuid(name) is None:
            raise _bad_name(name)
        row = await self.jobs.store.get(name)
        if row is None:
            raise NotFound(
                f"no operation named {name!r}",
                reason="OPERATION_NOT_FOUND",
                violations=[FieldViolation("name", "no such operation", "NOT_FOUND")],
            )
        return row

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        return await self._operation(await self._row(request.name), _actor(context))

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        violations = []
        if request.name not in ("", "operations"):
            violations.append(FieldViolation("name", 'must be "operations"', "INVALID_FORMAT"))
        key = request.filter.replace(" ", "").lower()
        if key not in _FILTERS:
            violations.append(
                FieldViolation("filter", 'must be empty, "done=true" or "done=false"', "INVALID")
            )
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative", "OUT_OF_RANGE"))
        after = None
        if request.page_token:
            try:
                after = parse_page_token(request.page_token)
            except ValueError:
                violations.append(FieldViolation("page_token", "is not a token we gave", "INVALID"))
        if violations:
            raise InvalidArgument(
                "the request is invalid", reason="INVALID_REQUEST", violations=violations
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        rows = await self.jobs.store.list(limit=size + 1, after=after, done=_FILTERS[key])
        actor = _actor(context)
        reply = operations_pb2.ListOperationsResponse(
            operations=[await self._operation(r, actor) for r in rows[:size]]
        )
        if len(rows) > size:
            reply.next_page_token = page_token(rows[size - 1])
        return reply

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        if operation_uuid(request.name) is None:
            raise _bad_name(request.name)
        if await self.jobs.store.cancel(request.name, actor=_actor(context)) is None:
            await self._row(request.name)  # raises NOT_FOUND
        return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "operations are kept for the audit trail and cannot be deleted",
        )
        raise AssertionError("unreachable")  # abort raises

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        """Until the operation is done or the wait (request.timeout, default 10 s, at most
        60 s, and the call's own deadline) is over; then the operation as it is."""
        wait = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 0
        wait = min(wait or DEFAULT_WAIT_S, MAX_WAIT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(0.0, remaining - 0.2))
        deadline = time.monotonic() + wait
        row = await self._row(request.name)
        while not row.done and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            row = await self._row(request.name)
        return await self._operation(row, _actor(context))


def _actor(context: grpc.aio.ServicerContext) -> str:
    return caller_of(context, default_sub="").sub


async def start_consultation(
    jobs: Jobs | None, request: cpb.StartConsultationRequest, actor: str
) -> operations_pb2.Operation:
    """Queue `request` (already validated) and return its operation at once."""
    if jobs is None:
        raise FailedPrecondition(
            "this consult service has no job queue (it needs UTIMESH_DATABASE_URL and"
            " UTIMESH_REDIS_URL); use CreateConsultation",
            reason="NO_JOB_QUEUE",
        )
    row, created = await jobs.store.create(request, actor=actor)
    if created:
        try:
            await jobs.stream.send(row.name)
        except Exception as exc:  # kept in PostgreSQL: a worker's sweep sends it
            log.warning(
                "job not sent to the stream; the sweep will send it",
                extra={"fields": {"operation": row.name, "error": repr(exc)}},
            )
            await jobs.store.send_now(row.name)
    return to_operation(row, None)
