"""Composition root of the triage service: load the knowledge once, build the servicer, serve."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from pydantic_settings import SettingsConfigDict

from services.triage.servicer import DOMAIN, SERVICE_NAME, TriageServicer
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings
from utimesh.rules import TriageEngine, load_knowledge
from utimesh.triage.v1 import triage_pb2_grpc

DEFAULT_PORT = 50051


class TriageSettings(ServiceSettings):
    """Environment: UTIMESH_TRIAGE_HOST, _PORT, _GRACE_SECONDS, _MAX_BUDGET_SECONDS, _LOG_LEVEL."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_TRIAGE_", extra="ignore", frozen=True)
    port: int = DEFAULT_PORT
    max_budget_seconds: float = 2.0  # pure computation: microseconds per call


def build_spec(engine: TriageEngine) -> ServiceSpec:
    servicer = TriageServicer(engine)

    def register(server: grpc.aio.Server) -> None:
        triage_pb2_grpc.add_TriageServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="triage", service_names=(SERVICE_NAME,), register=register, domain=DOMAIN
    )


def run(settings: TriageSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("triage", settings.log_level)
    engine = TriageEngine(load_knowledge())  # fails fast on inconsistent clinical data
    asyncio.run(serve(build_spec(engine), settings, on_started))
