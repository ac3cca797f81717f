"""Rich gRPC status (google.rpc.Status with ErrorInfo and BadRequest) both ways."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

from utimesh.kit.errors import UtimeshError

_DETAILS_KEY = "grpc-status-details-bin"


def to_status_proto(err: UtimeshError, domain: str) -> status_pb2.Status:
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=domain, metadata=err.metadata)
    status.details.add().Pack(info)
    if err.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in err.violations
            ]
        )
        status.details.add().Pack(bad)
    return status


def trailing_metadata(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    return ((_DETAILS_KEY, status.SerializeToString()),)


@dataclass(frozen=True)
class ErrorDetails:
    """What a client can read from a failed call without parsing message strings."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    field_violations: tuple[tuple[str, str], ...]  # (field, description)

    def as_json(self) -> dict[str, object]:
        """The error as the CLI prints it."""
        return {
            "code": self.code.name,
            "reason": self.reason,
            "message": self.message,
            "field_violations": [{"field": f, "description": t} for f, t in self.field_violations],
        }


def error_details(exc: grpc.RpcError) -> ErrorDetails:
    """Decode the rich status of a failed call (sync or aio)."""
    code: grpc.StatusCode = exc.code()
    message = exc.details() or ""
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    for key, value in exc.trailing_metadata() or ():
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
    return ErrorDetails(code, message, reason, domain, metadata, tuple(violations))
