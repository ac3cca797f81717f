"""Composition root of the pharmacist service: load the knowledge, the model profile and the
prompt once, build the model client only when a model is configured, serve, close on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from pydantic_settings import SettingsConfigDict

from services.pharmacist.servicer import DOMAIN, SERVICE_NAME, PharmacistServicer, uses_model
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings
from utimesh.llm import ModelProfile, StructuredLLM, load_llm_settings, load_prompt, model_client
from utimesh.pharmacist.v1 import pharmacist_pb2_grpc
from utimesh.rules import Knowledge, load_knowledge

DEFAULT_PORT = 50053
DEFAULT_MAX_BUDGET_SECONDS = 60.0  # a model review, re-asks included
PROMPT_NAME = "pharmacist_review"
AGENT = "pharmacist"


class PharmacistSettings(ServiceSettings):
    """Environment: UTIMESH_PHARMACIST_HOST, _PORT, _GRACE_SECONDS, _MAX_BUDGET_SECONDS,
    _LOG_LEVEL. The model profile comes from the LLM settings (agent "pharmacist")."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_PHARMACIST_", extra="ignore", frozen=True)
    port: int = DEFAULT_PORT
    max_budget_seconds: float = DEFAULT_MAX_BUDGET_SECONDS


def build_spec(
    knowledge: Knowledge,
    llm: StructuredLLM | None,
    profile: ModelProfile,
    *,
    max_budget_s: float = DEFAULT_MAX_BUDGET_SECONDS,
) -> ServiceSpec:
    """The service to serve. Loads the prompt (file I/O) when a model is configured: call it at
    start. `max_budget_s` must be the server's max_budget_seconds."""
    prompt = load_prompt(PROMPT_NAME) if uses_model(profile) else None
    servicer = PharmacistServicer(
        knowledge, llm=llm, profile=profile, prompt=prompt, max_budget_s=max_budget_s
    )

    def register(server: grpc.aio.Server) -> None:
        pharmacist_pb2_grpc.add_PharmacistServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="pharmacist", service_names=(SERVICE_NAME,), register=register, domain=DOMAIN
    )


def run(settings: PharmacistSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("pharmacist", settings.log_level)
    knowledge = load_knowledge()  # fails fast on inconsistent clinical data
    profile = load_llm_settings().for_agent(AGENT)  # fails fast on bad LLM configuration
    asyncio.run(_serve(knowledge, profile, settings, on_started))


async def _serve(
    knowledge: Knowledge,
    profile: ModelProfile,
    settings: PharmacistSettings,
    on_started: Callable[[int], None] | None,
) -> None:
    async with model_client(profile) as llm:
        spec = build_spec(knowledge, llm, profile, max_budget_s=settings.max_budget_seconds)
        await serve(spec, settings, on_started)
