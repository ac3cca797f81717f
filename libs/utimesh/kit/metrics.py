"""Online signals: Prometheus counters and histograms a running consult service exports, named
for dashboards and alerts (EVALUATION.md §Online signals), and the exporter that serves them.

Labels carry enum names and profile ids only: never identifiers, free text or anything about
a patient, and every label has a small fixed set of values (unknown values become "other") so
that no caller can blow up the series count.

    metrics = ConsultMetrics()                 # on the default registry (what the exporter serves)
    metrics.record_consultation(c, seconds)     # after CreateConsultation / StreamConsultation
    start_exporter_from_env()                   # serves /metrics when UTIMESH_METRICS_PORT is set

The exporter is prometheus_client's HTTP server in a daemon thread: it never blocks the event
loop, and recording is a few in-memory additions under a lock."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.evaluation.taxonomy import TAXONOMY
from utimesh.evidence.v1 import evidence_pb2 as epb

PORT_ENV = "UTIMESH_METRICS_PORT"
ADDR_ENV = "UTIMESH_METRICS_ADDR"
PROFILES = frozenset({"CA-ON", "CA-AB"})
MISSING = frozenset(
    {"doctor", "pharmacist", "pharmacist_model", "doctor_model", "evidence", "report"}
)
ROLES = frozenset({"prescriber", "pharmacist", "clinician", "patient"})
# Seconds: consultations take milliseconds offline and seconds to a minute with models.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else "other"


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


class ConsultMetrics:
    """The metric families of consultations, sign-offs and reviews on one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.consultations = Counter(
            "utimesh_consultations_total",
            "Finished consultations by clinical profile, final decision and outcome.",
            ("profile", "decision", "outcome"),
            registry=registry,
        )
        self.escalations = Counter(
            "utimesh_escalations_total",
            "Consultations escalated to a human, by reason.",
            ("profile", "reason"),
            registry=registry,
        )
        self.pharmacist_verdicts = Counter(
            "utimesh_pharmacist_verdicts_total",
            "Pharmacist verdicts in deliberation (every round), e.g. request_change, reject.",
            ("profile", "verdict"),
            registry=registry,
        )
        self.degraded = Counter(
            "utimesh_degraded_reviews_total",
            "Consultations finished without a review, by the missing reviewer.",
            ("profile", "missing"),
            registry=registry,
        )
        self.claims = Counter(
            "utimesh_claims_total",
            "Grounded claims by support label.",
            ("profile", "support"),
            registry=registry,
        )
        self.unsupported_claims = Counter(
            "utimesh_unsupported_claims_total",
            "Claims flagged as unsupported or contradicted by the evidence.",
            ("profile",),
            registry=registry,
        )
        self.rounds = Histogram(
            "utimesh_deliberation_rounds",
            "Deliberation rounds per consultation.",
            ("profile",),
            buckets=(1, 2, 3, 4, 5),
            registry=registry,
        )
        self.latency = Histogram(
            "utimesh_consultation_duration_seconds",
            "Wall time of a consultation in the consult service.",
            ("profile", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "utimesh_llm_tokens_total",
            "Model tokens spent by consultations.",
            ("profile", "direction"),
            registry=registry,
        )
        self.cost = Counter(
            "utimesh_llm_cost_usd_total",
            "Model cost of consultations, USD.",
            ("profile",),
            registry=registry,
        )
        self.sign_offs = Counter(
            "utimesh_sign_offs_total",
            "Prescriber sign-offs by action (approve, amend, reject).",
            ("action",),
            registry=registry,
        )
        self.reviews = Counter(
            "utimesh_reviews_total",
            "Clinician reviews by reviewer role and agreement with the decision and the plan.",
            ("role", "agrees_with_decision", "agrees_with_plan"),
            registry=registry,
        )
        self.review_categories = Counter(
            "utimesh_review_error_categories_total",
            "Error categories named in clinician reviews (taxonomy; others as 'other').",
            ("category",),
            registry=registry,
        )

    def record_consultation(self, c: cpb.Consultation, seconds: float) -> None:
        """Count one finished consultation (`seconds`: its wall time in the service)."""
        profile = _bounded(c.triage.profile, PROFILES)
        outcome = _enum(cpb.Outcome.Name(c.outcome), "OUTCOME_")
        self.consultations.labels(
            profile, _enum(pb.Decision.Name(c.decision), "DECISION_"), outcome
        ).inc()
        if c.outcome == cpb.OUTCOME_ESCALATED:
            reason = _enum(cpb.EscalationReason.Name(c.escalation_reason), "ESCALATION_REASON_")
            self.escalations.labels(profile, reason).inc()
        for entry in c.transcript:
            if entry.actor == "pharmacist" and entry.verdict:
                self.pharmacist_verdicts.labels(
                    profile, _enum(apb.Verdict.Name(entry.verdict), "VERDICT_")
                ).inc()
        for missing in c.missing_reviews:
            self.degraded.labels(profile, _bounded(missing.replace(" ", "_"), MISSING)).inc()
        for g in c.groundings:
            support = _enum(epb.SupportLabel.Name(g.support), "SUPPORT_LABEL_")
            self.claims.labels(profile, support).inc()
            if g.flagged:
                self.unsupported_claims.labels(profile).inc()
        if c.rounds:
            self.rounds.labels(profile).observe(c.rounds)
        self.latency.labels(profile, outcome).observe(max(0.0, seconds))
        self.tokens.labels(profile, "input").inc(max(0, c.usage.input_tokens))
        self.tokens.labels(profile, "output").inc(max(0, c.usage.output_tokens))
        self.cost.labels(profile).inc(max(0.0, c.usage.cost_usd))

    def record_sign_off(self, action: cpb.SignOffAction.ValueType) -> None:
        """Count one sign-off; amendments are what dashboards watch (prescriber overrides)."""
        self.sign_offs.labels(_enum(cpb.SignOffAction.Name(action), "SIGN_OFF_ACTION_")).inc()

    def record_review(
        self,
        role: str,
        agrees_with_decision: bool,
        agrees_with_plan: bool,
        error_categories: Iterable[str] = (),
    ) -> None:
        """Count one clinician review (SubmitReview); the comment is never a metric."""
        self.reviews.labels(
            _bounded(role, ROLES), str(agrees_with_decision).lower(), str(agrees_with_plan).lower()
        ).inc()
        for category in error_categories:
            self.review_categories.labels(_bounded(category, TAXONOMY)).inc()


_default: ConsultMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> ConsultMetrics:
    """The process's metrics on the default registry (created on first use, once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ConsultMetrics()
        return _default


def record_consultation(c: cpb.Consultation, seconds: float) -> None:
    default_metrics().record_consultation(c, seconds)


def record_sign_off(action: cpb.SignOffAction.ValueType) -> None:
    default_metrics().record_sign_off(action)


def record_review(
    role: str, agrees_with_decision: bool, agrees_with_plan: bool, categories: Iterable[str] = ()
) -> None:
    default_metrics().record_review(role, agrees_with_decision, agrees_with_plan, categories)


class Exporter:
    """A running /metrics HTTP server (daemon thread). `port` is the bound port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port = int(server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_exporter(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> Exporter:
    """Serve `registry` at http://addr:port/metrics (port 0: any free port)."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return Exporter(server, thread)


def start_exporter_from_env(environ: Mapping[str, str] | None = None) -> Exporter | None:
    """Start the exporter when UTIMESH_METRICS_PORT is set (UTIMESH_METRICS_ADDR, default
    0.0.0.0); None otherwise. A bad port is a configuration error raised at start."""
    env = os.environ if environ is None else environ
    raw = env.get(PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{PORT_ENV} must be a port number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV} must be 0..65535, got {port}")
    return start_exporter(port, env.get(ADDR_ENV, "0.0.0.0"), default_metrics().registry)
