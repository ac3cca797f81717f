"""Distributed tracing with OpenTelemetry: one trace per consultation across the mesh.

Off unless configured (no provider, no interceptors, no cost). `utimesh serve NAME` calls
`configure_from_env(NAME)` before it builds anything; the standard OpenTelemetry variables
decide:

    OTEL_TRACES_EXPORTER=otlp   OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317   (gRPC OTLP)
    OTEL_TRACES_EXPORTER=console                                  (spans as JSON on stdout)
    OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES

When on, every gRPC server of the kit (utimesh.kit.server) and every channel it makes
(utimesh.kit.channels) carry the opentelemetry-instrumentation-grpc interceptors, so the W3C
trace context travels in gRPC metadata from the edge (a REST client's `traceparent` header
becomes metadata through Envoy's transcoder) to consult and on to triage, the agents, evidence
and report. Spans name methods, status codes and peers: never payloads, so no patient data.
Health checks are not traced (noise). Log lines written inside a traced call carry its
`trace_id` and `span_id` (utimesh.kit.logging)."""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

_HEALTH = "grpc.health.v1.Health"
_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """OTEL_TRACES_EXPORTER names an exporter we do not ship."""


def enable(provider: TracerProvider) -> None:
    """Trace with `provider` from now on (new servers and channels). Tests pass a provider
    with an in-memory exporter; `configure_from_env` passes the configured one."""
    global _provider
    _provider = provider


def disable() -> None:
    global _provider
    _provider = None


def enabled() -> bool:
    return _provider is not None


def configure_from_env(service: str, environ: dict[str, str] | None = None) -> bool:
    """Set up tracing for process `service` from the OTEL_* variables; False when it stays
    off (OTEL_TRACES_EXPORTER unset or "none"). TracingConfigError on an unknown exporter."""
    env = os.environ if environ is None else environ
    kind = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if kind in ("", "none"):
        return False
    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, TLS from OTEL_EXPORTER_OTLP_*
    else:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={kind!r}: use otlp, console or none")
    name = env.get("OTEL_SERVICE_NAME") or f"utimesh-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # exports off the event loop
    trace.set_tracer_provider(provider)
    enable(provider)
    return True


def _not_health() -> Any:
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(filters.service_name(_HEALTH))


def server_interceptors() -> list[Any]:
    """The tracing interceptor for a grpc.aio server (empty when tracing is off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider, filter_=_not_health())]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """The tracing interceptors for a grpc.aio channel (empty when tracing is off)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=_provider, filter_=_not_health()))  # type: ignore[no-untyped-call]


def current_ids() -> dict[str, str]:
    """trace_id and span_id of the span in progress, for log lines; empty outside one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
