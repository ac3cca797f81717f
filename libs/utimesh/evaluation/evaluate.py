"""One evaluation run: start the in-process mesh with the chosen model provider, run every
dataset through it, score the outcomes and return the run record.

This is the engine of `utimesh eval`; the command adds the table, the files, Postgres, the
baseline comparison and the gate."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from utimesh.evaluation.corpus import corpus_version, load_passages
from utimesh.evaluation.datasets import Case, Dataset
from utimesh.evaluation.mesh import running_mesh
from utimesh.evaluation.record import DatasetResult, RunRecord
from utimesh.evaluation.runner import run_consultations, run_questions
from utimesh.evaluation.scoring import score_consultations, score_questions
from utimesh.llm import ConfigError, ModelProfile, load_llm_settings
from utimesh.rules import Knowledge, TriageEngine

Provider = Literal["offline", "openai-compatible"]
AGENTS = ("doctor", "pharmacist", "report")


class Progress(Protocol):
    """Told what the run is doing (the CLI shows a progress bar; tests pass nothing)."""

    def start(self, dataset: str, total: int) -> None: ...
    def advance(self, dataset: str) -> None: ...


class _Silent:
    def start(self, dataset: str, total: int) -> None:
        return None

    def advance(self, dataset: str) -> None:
        return None


@dataclass(frozen=True)
class EvalOptions:
    provider: Provider = "offline"
    base_url: str | None = None
    model: str | None = None
    models_file: Path | None = None  # model profiles (models.toml form); default: the packaged
    clinical_profile: str | None = None  # only cases of this clinical profile (e.g. CA-ON)
    concurrency: int = 4
    timeout_s: float = 60.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def model_profiles(options: EvalOptions) -> dict[str, ModelProfile]:
    """The profile of each agent. Offline: the deterministic engine for all. openai-compatible:
    the profiles of the models file and UTIMESH_LLM_* overrides, with --base-url and --model
    applied to every agent. Raises ConfigError when no model is named."""
    if options.provider == "offline":
        return {agent: ModelProfile() for agent in AGENTS}
    env = dict(options.environ)
    env["UTIMESH_LLM_ALL_PROVIDER"] = "openai-compatible"
    for agent in AGENTS:
        env.pop(f"UTIMESH_LLM_{agent.upper()}_PROVIDER", None)
    if options.base_url:
        env["UTIMESH_LLM_ALL_BASE_URL"] = options.base_url
    if options.model:
        env["UTIMESH_LLM_ALL_MODEL"] = options.model
    settings = load_llm_settings(options.models_file, env)
    profiles = {agent: settings.for_agent(agent) for agent in AGENTS}
    offline_named = [a for a, p in profiles.items() if p.model == "offline-rules"]
    if offline_named:
        raise ConfigError(
            f"provider openai-compatible needs a model for {', '.join(offline_named)}: "
            "pass --model or set it in the models file"
        )
    return profiles


def new_run_id(now: datetime) -> str:
    """Sortable and unique: UTC time, then random hex."""
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _only_profile(dataset: Dataset, profile: str | None) -> Dataset:
    if profile is None or dataset.kind != "consultations":
        return dataset
    cases: tuple[Case, ...] = tuple(c for c in dataset.cases if c.profile == profile)
    return dataset.model_copy(update={"cases": cases})


async def evaluate(
    datasets: Sequence[Dataset],
    knowledge: Knowledge,
    options: EvalOptions = EvalOptions(),
    *,
    engine: TriageEngine | None = None,
    progress: Progress | None = None,
) -> RunRecord:
    """Run `datasets` through a fresh in-process mesh and score them.

    `engine` replaces triage's engine (e.g. over an altered ruleset, to prove the gate fails).
    The run record's rulesets are those of the engine's knowledge actually used."""
    progress = progress or _Silent()
    profiles = model_profiles(options)
    passages, corpus = await asyncio.to_thread(lambda: (load_passages(), corpus_version()))
    started = datetime.now(UTC)
    clock = time.perf_counter()
    llm = None
    if options.provider != "offline":
        from utimesh.llm.openai_compat import OpenAICompatibleLLM

        llm = OpenAICompatibleLLM(environ=options.environ)
    results: dict[str, DatasetResult] = {}
    try:
        async with running_mesh(
            knowledge,
            doctor_profile=profiles["doctor"],
            pharmacist_profile=profiles["pharmacist"],
            report_profile=profiles["report"],
            llm=llm,
            engine=engine,
            agent_timeout_s=options.timeout_s,
        ) as mesh:
            for full in datasets:
                dataset = _only_profile(full, options.clinical_profile)
                progress.start(dataset.name, dataset.size)

                def tick(name: str = dataset.name) -> None:
                    progress.advance(name)

                if dataset.kind == "consultations":
                    outcomes = await run_consultations(
                        mesh.consult,
                        dataset,
                        passages,
                        concurrency=options.concurrency,
                        timeout_s=options.timeout_s,
                        tick=tick,
                    )
                    metrics, verdicts = score_consultations(dataset, outcomes)
                else:
                    outcomes = await run_questions(
                        mesh.consult,
                        dataset,
                        concurrency=options.concurrency,
                        timeout_s=options.timeout_s,
                        tick=tick,
                    )
                    metrics, verdicts = score_questions(dataset, outcomes)
                results[dataset.name] = DatasetResult(
                    name=dataset.name,
                    version=dataset.version,
                    content_sha256=dataset.content_sha256(),
                    kind=dataset.kind,
                    size=dataset.size,
                    metrics=metrics,
                    verdicts=verdicts,
                    outcomes=outcomes,
                )
    finally:
        if llm is not None:
            await llm.aclose()
    finished = datetime.now(UTC)
    ruleset_source = engine.knowledge if engine is not None else knowledge
    return RunRecord(
        run_id=new_run_id(started),
        started_at=started.isoformat(),
        finished_at=finished.isoformat(),
        duration_s=round(time.perf_counter() - clock, 3),
        provider=options.provider,
        models={a: f"{p.provider}:{p.model}" for a, p in profiles.items()},
        rulesets={p: ruleset_source.ruleset(p).content_hash for p in ruleset_source.profiles},
        corpus_version=corpus,
        concurrency=options.concurrency,
        datasets=results,
    )
