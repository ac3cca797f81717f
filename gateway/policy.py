"""Who may call what at the edge: the role table that the RBAC config and the OpenAPI share."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from gateway.settings import CONSULT_SERVICE, OPERATIONS_SERVICE

ROLES: Final = ("clinician", "pharmacist", "prescriber", "auditor", "operator")

METHOD_ROLES: Final = MappingProxyType(
    {
        "CreateConsultation": ("clinician", "pharmacist"),
        "StartConsultation": ("clinician", "pharmacist"),
        "StreamConsultation": ("clinician", "pharmacist"),
        "GetConsultation": ("clinician", "pharmacist", "prescriber", "auditor"),
        "AskConsultation": ("clinician", "pharmacist", "prescriber"),
        "SignOffConsultation": ("prescriber",),
        "RecordFollowUp": ("clinician", "pharmacist"),
        "SubmitReview": ("clinician", "pharmacist", "prescriber"),
        "GetPatientTimeline": ("clinician", "pharmacist", "prescriber"),
        "ListAuditEvents": ("auditor",),
        # google.longrunning.Operations (queued consultations); DeleteOperation: nobody.
        "GetOperation": ("clinician", "pharmacist", "prescriber", "auditor"),
        "ListOperations": ("clinician", "pharmacist", "prescriber", "auditor"),
        "CancelOperation": ("clinician", "pharmacist"),
    }
)
"""gRPC method of the consult service -> roles allowed (any one suffices)."""

OPERATIONS_METHODS: Final = frozenset(
    {"GetOperation", "ListOperations", "CancelOperation", "DeleteOperation", "WaitOperation"}
)

ADMIN_ROUTES: Final = MappingProxyType(
    {"/admin/ready": "/ready", "/admin/stats": "/stats/prometheus"}
)
"""Read-only Envoy admin endpoints the edge exposes (edge path -> admin path); GET only."""

ADMIN_ROLES: Final = ("operator",)

HEALTH_PATH: Final = "/healthz"
"""Answered by Envoy itself from its active gRPC health checks of consult; needs no token."""


def grpc_path(method: str) -> str:
    """The HTTP/2 path of a consult RPC, as routes and RBAC see it after transcoding."""
    service = OPERATIONS_SERVICE if method in OPERATIONS_METHODS else CONSULT_SERVICE
    return f"/{service}/{method}"


def roles_for(method: str) -> tuple[str, ...]:
    """Roles allowed to call `method` (empty: nobody)."""
    return METHOD_ROLES.get(method, ())
