"""Composition root of the report service: the clinical knowledge (drug dictionaries for the
answerer), the model profile, prompt and client when a model is configured, the servicer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
from pydantic_settings import SettingsConfigDict

from services.report.servicer import DOMAIN, SERVICE_NAME, ReportServicer, uses_model
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings
from utimesh.llm import ModelProfile, StructuredLLM, load_llm_settings, load_prompt, model_client
from utimesh.report.v1 import report_pb2_grpc
from utimesh.rules import Knowledge, load_knowledge

DEFAULT_PORT = 50055
AGENT = "report"
PROMPT_NAME = "report_answer"
PROMPTS = Path(__file__).resolve().parent / "prompts"


class ReportSettings(ServiceSettings):
    """Environment: UTIMESH_REPORT_HOST, _PORT, _GRACE_SECONDS, _MAX_BUDGET_SECONDS,
    _LOG_LEVEL. The model profile comes from the LLM settings (agent "report")."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_REPORT_", extra="ignore", frozen=True)
    port: int = DEFAULT_PORT
    max_budget_seconds: float = 30.0  # rendering is milliseconds; a model answer may take longer


def build_spec(
    knowledge: Knowledge, llm: StructuredLLM | None = None, profile: ModelProfile | None = None
) -> ServiceSpec:
    """The service to serve. Loads the prompt (file I/O) when a model is configured: call it at
    start."""
    profile = profile or ModelProfile()
    prompt = load_prompt(PROMPT_NAME, directory=PROMPTS) if uses_model(profile) else None
    servicer = ReportServicer(knowledge, llm=llm, profile=profile, prompt=prompt)

    def register(server: grpc.aio.Server) -> None:
        report_pb2_grpc.add_ReportServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="report", service_names=(SERVICE_NAME,), register=register, domain=DOMAIN
    )


def run(settings: ReportSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("report", settings.log_level)
    knowledge = load_knowledge()  # fails fast on inconsistent clinical data
    profile = load_llm_settings().for_agent(AGENT)  # fails fast on bad LLM configuration
    asyncio.run(_serve(knowledge, profile, settings, on_started))


async def _serve(
    knowledge: Knowledge,
    profile: ModelProfile,
    settings: ReportSettings,
    on_started: Callable[[int], None] | None,
) -> None:
    async with model_client(profile) as llm:
        await serve(build_spec(knowledge, llm, profile), settings, on_started)
