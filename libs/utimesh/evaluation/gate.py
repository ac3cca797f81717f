"""The release gate: absolute thresholds and tolerances against a baseline, read from
gate.toml (or another file), applied to a run record. `utimesh eval --gate` exits non-zero
when `check` returns any failure."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from utimesh.evaluation.record import RunRecord, compare
from utimesh.evaluation.scoring import METRICS

GATE_FILE = Path(__file__).resolve().parent / "gate.toml"


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | None = None
    max: float | None = None


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    absolute: float | None = None
    relative: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Tolerance:
        if (self.absolute is None) == (self.relative is None):
            raise ValueError("give exactly one of absolute or relative")
        return self


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    thresholds: dict[str, Bound] = {}
    tolerances: dict[str, Tolerance] = {}

    @model_validator(mode="after")
    def _known_metrics(self) -> GateConfig:
        unknown = sorted((set(self.thresholds) | set(self.tolerances)) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metrics in the gate config: {unknown}")
        for name in self.tolerances:
            if METRICS[name].higher_is_better is None:
                raise ValueError(f"{name} has no direction: it cannot have a tolerance")
        return self


def load_gate(path: Path | None = None) -> GateConfig:
    """Read and validate the gate config (default: the packaged gate.toml). Reads a file."""
    return GateConfig.model_validate(tomllib.loads((path or GATE_FILE).read_text("utf-8")))


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def check(record: RunRecord, config: GateConfig, baseline: RunRecord | None = None) -> list[str]:
    """Every reason the run must not be released (empty: it passes)."""
    failures = []
    for name, result in record.datasets.items():
        for metric, bound in config.thresholds.items():
            value = result.metrics.get(metric)
            if value is None:
                continue
            if bound.min is not None and value < bound.min:
                failures.append(f"{name}: {metric} {_fmt(value)} < minimum {_fmt(bound.min)}")
            if bound.max is not None and value > bound.max:
                failures.append(f"{name}: {metric} {_fmt(value)} > maximum {_fmt(bound.max)}")
    if baseline is None:
        return failures
    for delta in compare(record, baseline):
        tol = config.tolerances.get(delta.metric)
        if tol is None or not delta.comparable or not delta.worse:
            continue
        assert delta.baseline is not None and delta.change is not None  # worse implies both
        if tol.relative is not None and delta.baseline == 0:
            continue  # a share of nothing: e.g. cost against an offline (free) baseline
        allowed = (
            tol.absolute if tol.absolute is not None else abs(delta.baseline) * (tol.relative or 0)
        )
        if abs(delta.change) > allowed + 1e-12:
            failures.append(
                f"{delta.dataset}: {delta.metric} regressed {_fmt(delta.baseline)} -> "
                f"{_fmt(delta.current or 0.0)} (tolerance {_fmt(allowed)}) vs {baseline.run_id}"
            )
    return failures
