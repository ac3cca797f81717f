"""Distributed tracing (utimesh.kit.tracing): one trace per consultation across the mesh, no
patient data in spans, trace ids in log lines; nothing traced when it is off."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.consult.mesh import running_mesh
from tests.factories import patient
from tests.gateway.harness import intake_json, running_edge
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit import tracing
from utimesh.kit.logging import JsonFormatter
from utimesh.rules import Knowledge, parse_intake

ALLERGY = "Zyrtecolamine-9 hives"  # recognisable free text that must not reach any span


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


async def test_one_consultation_is_one_trace_across_the_services(
    knowledge: Knowledge, spans: InMemorySpanExporter
) -> None:
    async with running_mesh(knowledge) as mesh:
        intake = intake_to_proto(parse_intake(patient(history__allergies=[ALLERGY])))
        await mesh.consult.CreateConsultation(
            cpb.CreateConsultationRequest(intake=intake), timeout=30
        )
    finished = spans.get_finished_spans()
    names = {s.name for s in finished}
    for method in (
        "/utimesh.consult.v1.ConsultationService/CreateConsultation",
        "/utimesh.triage.v1.TriageService/AssessPatient",
        "/utimesh.doctor.v1.DoctorService/ProposePlan",
        "/utimesh.pharmacist.v1.PharmacistService/ReviewPlan",
        "/utimesh.evidence.v1.EvidenceService/GroundClaims",
        "/utimesh.report.v1.ReportService/RenderReport",
    ):
        assert method in names, sorted(names)
    assert len({s.context.trace_id for s in finished}) == 1  # one trace, client to the last hop
    roots = [s for s in finished if s.parent is None]
    assert len(roots) == 1 and roots[0].name.endswith("/CreateConsultation")
    assert not any("grpc.health" in s.name for s in finished)
    dumped = json.dumps([dict(s.attributes or {}) for s in finished], default=str)
    assert "Zyrtecolamine" not in dumped and "allerg" not in dumped.lower()


async def test_nothing_is_traced_when_tracing_is_off(knowledge: Knowledge) -> None:
    assert not tracing.enabled()
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    assert tracing.configure_from_env("triage", {}) is False
    with pytest.raises(tracing.TracingConfigError):
        tracing.configure_from_env("triage", {"OTEL_TRACES_EXPORTER": "zipkin"})


def test_log_lines_inside_a_span_carry_its_ids(spans: InMemorySpanExporter) -> None:
    tracer = TracerProvider().get_tracer("test")
    formatter = JsonFormatter("consult")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(formatter.format(record))
    with tracer.start_as_current_span("call") as span:
        event = json.loads(formatter.format(record))
    assert event["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert event["span_id"] == f"{span.get_span_context().span_id:016x}"


async def test_a_rest_clients_traceparent_is_continued_through_the_edge(
    knowledge: Knowledge, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """A REST client's W3C trace context reaches consult through Envoy's transcoder: consult's
    span (and everything under it) joins the client's trace."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with (
        running_mesh(knowledge) as mesh,
        running_edge(tmp_path, mesh.servers["consult"].port) as edge,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        http.post(
            edge.url + "/v1/consultations",
            json={"intake": intake_json()},
            headers={
                **edge.bearer("clinician"),
                "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            },
        ) as response,
    ):
        assert response.status == 200, await response.text()
    consult = [
        s
        for s in spans.get_finished_spans()
        if s.name == "/utimesh.consult.v1.ConsultationService/CreateConsultation"
    ]
    assert consult and all(f"{s.context.trace_id:032x}" == trace_id for s in consult)
    assert {f"{s.context.trace_id:032x}" for s in spans.get_finished_spans()} == {trace_id}
