"""The run record: what one `utimesh eval` run measured, written as JSON (run.json) and to
Postgres (eval_runs), and compared with a baseline run.

A record names everything needed to compare two runs honestly: the datasets (name, version,
content hash), the ruleset hashes, the corpus version and the model of every agent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from utimesh.evaluation.scoring import METRICS

RUN_FILE = "run.json"


class DatasetResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    content_sha256: str
    kind: str
    size: int
    metrics: dict[str, float | None]
    verdicts: list[dict[str, Any]] = Field(default_factory=list)  # per case: passed, problems
    outcomes: list[dict[str, Any]] = Field(default_factory=list)  # per case: what happened


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    started_at: str
    finished_at: str
    duration_s: float
    provider: str
    models: dict[str, str]  # agent -> "provider:model"
    rulesets: dict[str, str]  # profile -> ruleset hash
    corpus_version: str
    concurrency: int
    datasets: dict[str, DatasetResult]
    baseline: str = ""  # run id (or path) compared against, if any
    gate: dict[str, Any] | None = None  # {"passed": bool, "failures": [...]} when --gate

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / RUN_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """A run record from a run.json file or a run directory."""
        if path.is_dir():
            path = path / RUN_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def summary(self) -> dict[str, Any]:
        """The record without per-case detail (for the eval_runs summary column)."""
        body = json.loads(self.model_dump_json())
        for d in body["datasets"].values():
            d.pop("outcomes", None)
            d.pop("verdicts", None)
        return dict(body)


@dataclass(frozen=True)
class Delta:
    dataset: str
    metric: str
    baseline: float | None
    current: float | None
    comparable: bool  # same dataset content in both runs

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def worse(self) -> bool:
        """True when the metric moved in its bad direction (any amount)."""
        direction = METRICS[self.metric].higher_is_better
        change = self.change
        if direction is None or change is None or change == 0:
            return False
        return change < 0 if direction else change > 0


def compare(current: RunRecord, baseline: RunRecord) -> list[Delta]:
    """Metric by metric, for every dataset both runs have."""
    out = []
    for name, result in current.datasets.items():
        before = baseline.datasets.get(name)
        if before is None:
            continue
        same = before.content_sha256 == result.content_sha256
        for metric, value in result.metrics.items():
            if metric in before.metrics:
                out.append(Delta(name, metric, before.metrics[metric], value, same))
    return out
