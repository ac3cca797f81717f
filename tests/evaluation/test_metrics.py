"""Online signals (utimesh.kit.metrics): after recording consultations, sign-offs and reviews,
the values are on the /metrics page the exporter serves over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.consult.mesh import DEAD, running_mesh
from tests.factories import patient
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.kit.metrics import ConsultMetrics, Exporter, start_exporter, start_exporter_from_env
from utimesh.rules import Knowledge, parse_intake


@pytest.fixture
def metrics() -> Iterator[tuple[ConsultMetrics, Exporter]]:
    m = ConsultMetrics(CollectorRegistry())
    exporter = start_exporter(0, "127.0.0.1", m.registry)
    yield m, exporter
    exporter.close()


async def scrape(exporter: Exporter) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5)
    r.raise_for_status()
    return r.text


def request(**overrides: object) -> cpb.CreateConsultationRequest:
    return cpb.CreateConsultationRequest(
        intake=intake_to_proto(parse_intake(patient(**overrides))), profile="CA-ON"
    )


async def test_consultations_are_counted_by_profile_decision_and_outcome(
    knowledge: Knowledge, metrics: tuple[ConsultMetrics, Exporter]
) -> None:
    m, exporter = metrics
    async with running_mesh(knowledge) as mesh:
        treated = (await mesh.consult.CreateConsultation(request(), timeout=30)).consultation
        referred = (
            await mesh.consult.CreateConsultation(request(red_flags__fever=True), timeout=30)
        ).consultation
    async with running_mesh(knowledge, pharmacist_target=DEAD) as mesh:
        degraded = (await mesh.consult.CreateConsultation(request(), timeout=30)).consultation
    m.record_consultation(treated, 0.2)
    m.record_consultation(treated, 0.3)
    m.record_consultation(referred, 0.05)
    m.record_consultation(degraded, 1.5)
    text = await scrape(exporter)
    assert (
        'utimesh_consultations_total{decision="recommend_treatment",outcome="agreed",profile="CA-ON"} 2.0'
        in text
    )
    assert (
        'utimesh_consultations_total{decision="refer",outcome="not_treated",profile="CA-ON"} 1.0'
        in text
    )
    assert 'utimesh_degraded_reviews_total{missing="pharmacist",profile="CA-ON"} 1.0' in text
    recorded = (treated, treated, referred, degraded)
    approvals = sum(
        e.actor == "pharmacist" and e.verdict == apb.VERDICT_APPROVE
        for c in recorded
        for e in c.transcript
    )
    assert approvals >= 2  # both treated consultations were approved; the degraded one not
    assert (
        f'utimesh_pharmacist_verdicts_total{{profile="CA-ON",verdict="approve"}} {approvals}.0'
        in text
    )
    assert (
        'utimesh_consultation_duration_seconds_count{outcome="agreed",profile="CA-ON"} 2.0' in text
    )
    assert (
        'utimesh_consultation_duration_seconds_bucket{le="0.25",outcome="agreed",profile="CA-ON"} 1.0'
        in text
    )
    supports = sum(len(c.groundings) for c in recorded)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("utimesh_claims_total{")
    )
    assert counted == supports > 0


async def test_escalations_sign_offs_and_reviews(metrics: tuple[ConsultMetrics, Exporter]) -> None:
    m, exporter = metrics
    escalated = cpb.Consultation(
        outcome=cpb.OUTCOME_ESCALATED,
        escalation_reason=cpb.ESCALATION_REASON_PHARMACIST_REJECTED,
    )
    escalated.triage.profile = "CA-AB"
    m.record_consultation(escalated, 2.0)
    m.record_sign_off(cpb.SIGN_OFF_ACTION_AMEND)
    m.record_sign_off(cpb.SIGN_OFF_ACTION_APPROVE)
    m.record_review("pharmacist", False, True, ["missed_interaction", "free_word"])
    text = await scrape(exporter)
    assert 'utimesh_escalations_total{profile="CA-AB",reason="pharmacist_rejected"} 1.0' in text
    assert 'utimesh_sign_offs_total{action="amend"} 1.0' in text
    assert (
        'utimesh_reviews_total{agrees_with_decision="false",agrees_with_plan="true",role="pharmacist"} 1.0'
        in text
    )
    # label values are bounded: unknown categories never become new series
    assert 'utimesh_review_error_categories_total{category="missed_interaction"} 1.0' in text
    assert 'utimesh_review_error_categories_total{category="other"} 1.0' in text
    assert "free_word" not in text


def test_the_exporter_starts_only_when_configured() -> None:
    assert start_exporter_from_env({}) is None
    with pytest.raises(ValueError, match="UTIMESH_METRICS_PORT"):
        start_exporter_from_env({"UTIMESH_METRICS_PORT": "http"})


async def test_the_exporter_serves_from_its_own_thread(
    metrics: tuple[ConsultMetrics, Exporter],
) -> None:
    """Scraping from this event loop completes only because the exporter does not run on it."""
    m, exporter = metrics
    m.record_sign_off(cpb.SIGN_OFF_ACTION_REJECT)
    texts = await asyncio.gather(*(scrape(exporter) for _ in range(5)))
    assert all('utimesh_sign_offs_total{action="reject"} 1.0' in t for t in texts)
