"""Record-keeping RPCs of the consult service (sign-off, follow-up, reviews, audit listing).
The caller is who the edge vouches for (x-utimesh-sub / x-utimesh-roles); the use cases are
in services/consult/records.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from services.consult.records import Records
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.caller import caller_of

if TYPE_CHECKING:
    from services.consult.app import ConsultationApp


class RecordRpcs:
    """Mixed into ConsultationServicer (which sets `app`)."""

    app: ConsultationApp

    @staticmethod
    def _actor(context: grpc.aio.ServicerContext) -> str:
        """Who the audit trail records for this call: the JWT subject the edge forwards;
        empty (the store's own actor) for a call without one."""
        return caller_of(context, default_sub="").sub

    def _records(self, context: grpc.aio.ServicerContext) -> Records:
        remaining = context.time_remaining()
        timeout = self.app.limits.agent_timeout_s
        return Records(
            self.app.store,
            self.app.ports.triage,
            self.app.patients,
            timeout if remaining is None else max(0.001, min(timeout, remaining)),
        )

    async def SignOffConsultation(
        self, request: cpb.SignOffConsultationRequest, context: grpc.aio.ServicerContext
    ) -> cpb.SignOffConsultationResponse:
        consultation = await self._records(context).sign_off(caller_of(context), request)
        return cpb.SignOffConsultationResponse(consultation=consultation)

    async def RecordFollowUp(
        self, request: cpb.RecordFollowUpRequest, context: grpc.aio.ServicerContext
    ) -> cpb.RecordFollowUpResponse:
        return await self._records(context).follow_up(caller_of(context), request)

    async def SubmitReview(
        self, request: cpb.SubmitReviewRequest, context: grpc.aio.ServicerContext
    ) -> cpb.SubmitReviewResponse:
        name = await self._records(context).review(caller_of(context), request)
        return cpb.SubmitReviewResponse(name=name)

    async def ListAuditEvents(
        self, request: cpb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> cpb.ListAuditEventsResponse:
        return await self._records(context).audit_events(caller_of(context), request)
