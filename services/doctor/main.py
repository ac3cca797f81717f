"""Composition root of the doctor service: knowledge, model profile and client, servicer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from pydantic_settings import SettingsConfigDict

from services.doctor.servicer import DOMAIN, SERVICE_NAME, DoctorServicer
from utimesh.doctor.v1 import doctor_pb2_grpc
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings
from utimesh.llm import ModelProfile, StructuredLLM, load_llm_settings, model_client
from utimesh.rules import Knowledge, load_knowledge

DEFAULT_PORT = 50052


class DoctorSettings(ServiceSettings):
    """Environment: UTIMESH_DOCTOR_HOST, _PORT, _GRACE_SECONDS, _MAX_BUDGET_SECONDS, _LOG_LEVEL."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_DOCTOR_", extra="ignore", frozen=True)
    port: int = DEFAULT_PORT
    max_budget_seconds: float = 60.0  # a model may take a while; callers' deadlines still apply


def build_spec(
    knowledge: Knowledge, llm: StructuredLLM | None, profile: ModelProfile
) -> ServiceSpec:
    servicer = DoctorServicer(knowledge, llm, profile)

    def register(server: grpc.aio.Server) -> None:
        doctor_pb2_grpc.add_DoctorServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="doctor", service_names=(SERVICE_NAME,), register=register, domain=DOMAIN
    )


async def _main(settings: DoctorSettings, on_started: Callable[[int], None] | None) -> None:
    profile = load_llm_settings().for_agent("doctor")
    async with model_client(profile) as llm:
        await serve(build_spec(load_knowledge(), llm, profile), settings, on_started)


def run(settings: DoctorSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("doctor", settings.log_level)
    asyncio.run(_main(settings, on_started))
