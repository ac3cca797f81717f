"""Run datasets through a running mesh and record what happened to each case, as plain JSON
(the per-case part of a run record). Scoring is separate (scoring.py) and pure.

Consultations go through consult's CreateConsultation exactly as a client's would; questions
through AskConsultation on consultations created for the dataset's subjects. Cases run
`concurrency` at a time; latency is the client-side wall time of each call (so it includes
queueing when concurrency exceeds what the mesh serves in parallel)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto, regimen_from_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.evaluation.corpus import span_is_verbatim
from utimesh.evaluation.datasets import Case, Dataset, Question
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.rules import parse_intake, regimen_to_json

Tick = Callable[[], None]
T = TypeVar("T")
R = TypeVar("R")


def _decision(value: pb.Decision.ValueType) -> str:
    return pb.Decision.Name(value).removeprefix("DECISION_").lower()


def _regimen(c: cpb.Consultation) -> dict[str, Any] | None:
    return regimen_to_json(regimen_from_proto(c.regimen)) if c.HasField("regimen") else None


def consultation_outcome(
    c: cpb.Consultation, latency_ms: float, passages: dict[str, str]
) -> dict[str, Any]:
    """What the evaluation needs from one finished consultation (no patient data)."""
    regimen = _regimen(c)
    eligible = [regimen_to_json(regimen_from_proto(r)) for r in c.triage.eligible_regimens]
    citations = [
        {
            "claim": g.claim.id,
            "passage": cit.passage.id,
            "support": epb.SupportLabel.Name(cit.support).removeprefix("SUPPORT_LABEL_"),
            "has_span": bool(cit.quoted_span),
            "verbatim": span_is_verbatim(passages, cit.passage.id, cit.quoted_span),
        }
        for g in c.groundings
        for cit in g.citations
    ]
    return {
        "decision": _decision(c.decision),
        "triage_decision": _decision(c.triage.decision),
        "regimen": regimen,
        "regimen_in_allow_list": regimen is None or regimen in eligible,
        "rules_fired": [h.rule_id for h in c.triage.rules_fired],
        "warnings": [w.rule_id for w in c.triage.warnings],
        "outcome": cpb.Outcome.Name(c.outcome).removeprefix("OUTCOME_"),
        "escalation_reason": cpb.EscalationReason.Name(c.escalation_reason).removeprefix(
            "ESCALATION_REASON_"
        ),
        "needs_prescriber_review": c.needs_prescriber_review,
        "missing_reviews": list(c.missing_reviews),
        "rounds": c.rounds,
        "pharmacist_verdicts": [
            apb.Verdict.Name(e.verdict).removeprefix("VERDICT_")
            for e in c.transcript
            if e.actor == "pharmacist" and e.verdict
        ],
        "concerns": sorted({x.code for x in c.review.concerns}),
        "claims": [
            {
                "support": epb.SupportLabel.Name(g.support).removeprefix("SUPPORT_LABEL_"),
                "flagged": g.flagged,
            }
            for g in c.groundings
        ],
        "citations": citations,
        "generated_by": sorted({e.run.generated_by for e in c.transcript if e.HasField("run")}),
        "usage": {
            "input_tokens": c.usage.input_tokens,
            "output_tokens": c.usage.output_tokens,
            "cost_usd": c.usage.cost_usd,
            "model_calls": c.usage.model_calls,
        },
        "latency_ms": round(latency_ms, 3),
        "error": "",
    }


def _error_outcome(err: grpc.aio.AioRpcError, latency_ms: float) -> dict[str, Any]:
    return {"error": f"{err.code().name}: {err.details()}", "latency_ms": round(latency_ms, 3)}


async def _bounded(
    items: list[T], concurrency: int, work: Callable[[T], Awaitable[R]], tick: Tick
) -> list[R]:
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(item: T) -> R:
        async with gate:
            result = await work(item)
        tick()
        return result

    return list(await asyncio.gather(*(one(i) for i in items)))


def _request(profile: str, patient: dict[str, Any]) -> cpb.CreateConsultationRequest:
    return cpb.CreateConsultationRequest(
        intake=intake_to_proto(parse_intake(patient)), profile=profile
    )


async def run_consultations(
    consult: consult_pb2_grpc.ConsultationServiceStub,
    dataset: Dataset,
    passages: dict[str, str],
    *,
    concurrency: int = 4,
    timeout_s: float = 60.0,
    tick: Tick = lambda: None,
) -> list[dict[str, Any]]:
    """One outcome per case, in the dataset's order, each tagged with the case id and version."""

    async def one(case: Case) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            reply = await consult.CreateConsultation(
                _request(case.profile, case.patient), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as err:
            out = _error_outcome(err, (time.perf_counter() - start) * 1000)
        else:
            elapsed = (time.perf_counter() - start) * 1000
            out = consultation_outcome(reply.consultation, elapsed, passages)
        return {"id": case.id, "version": case.version, **out}

    return await _bounded(list(dataset.cases), concurrency, one, tick)


async def run_questions(
    consult: consult_pb2_grpc.ConsultationServiceStub,
    dataset: Dataset,
    *,
    concurrency: int = 4,
    timeout_s: float = 60.0,
    tick: Tick = lambda: None,
) -> list[dict[str, Any]]:
    """Create one consultation per subject, then ask every question about its subject's."""
    names: dict[str, str] = {}
    for subject in dataset.subjects:
        reply = await consult.CreateConsultation(
            _request(subject.profile, subject.patient), timeout=timeout_s
        )
        names[subject.key] = reply.consultation.name

    async def one(q: Question) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            a = await consult.AskConsultation(
                cpb.AskConsultationRequest(name=names[q.on], question=q.question),
                timeout=timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            out = _error_outcome(err, (time.perf_counter() - start) * 1000)
        else:
            out = {
                "kind": a.kind,
                "answer": a.answer,
                "rule_ids": list(a.rule_ids),
                "generated_by": a.generated_by,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                "error": "",
            }
        return {"id": q.id, "version": q.version, **out}

    return await _bounded(list(dataset.questions), concurrency, one, tick)
