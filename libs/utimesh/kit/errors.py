"""The one error tree of utimesh. Every error carries a gRPC code, a stable reason (ErrorInfo,
AIP-193) and whether a retry can help; the error interceptor turns it into a rich status.
Messages never contain patient free text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field (google.rpc.BadRequest.FieldViolation)."""

    field: str  # path in the request message, e.g. "intake.age"
    description: str
    reason: str = ""


class UtimeshError(Exception):
    """Base of every error a utimesh service returns on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})


class InvalidArgument(UtimeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(UtimeshError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(UtimeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(UtimeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(UtimeshError):
    code = grpc.StatusCode.UNAVAILABLE
    retryable = True


class DeadlineExceeded(UtimeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class Internal(UtimeshError):
    code = grpc.StatusCode.INTERNAL


class ResourceExhausted(UtimeshError):
    """A quota or rate limit is spent (the edge maps it to HTTP 429)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable = True
