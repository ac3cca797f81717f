"""The evaluation datasets: versioned JSON files of cases (consultations) or questions (report
Q&A), each case with an id, a version and its provenance.

A dataset file is the unit a run record points at (name, version, content hash), so two runs are
comparable only when they ran the same cases. Files live in `utimesh/evaluation/datasets/`;
`utimesh eval datasets build` regenerates the built ones (gold, adversarial, qa) and bumps the
version of every case whose content changed; the regression set is only ever appended to (by
`utimesh eval promote`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
#: The datasets shipped with utimesh, in the order `utimesh eval` runs them by default.
NAMES = ("gold", "adversarial", "regression", "qa")

Decision = Literal["recommend_treatment", "no_antibiotics", "refer"]
AnswerKind = Literal["ANSWERED", "CANNOT_ANSWER", "NEEDS_NEW_CONSULTATION", "OUT_OF_SCOPE"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expected(_Model):
    """What the system must do with one consultation case. Only the fields given are checked."""

    decision: Decision
    #: The exact structured regimen (cases.json form), or None for no prescription.
    regimen: dict[str, Any] | None = None
    #: Check `regimen` exactly (gold); adversarial cases check `regimen_agent` instead.
    check_regimen: bool = True
    regimen_agent: str | None = None  # "NIT", "SXT", "TMP", "FOS"
    rules_that_must_fire: tuple[str, ...] = ()
    rules_that_must_not_fire: tuple[str, ...] = ()
    warnings: tuple[str, ...] | None = None  # exact set when given
    #: Pharmacist concern codes that must be raised (e.g. UNRECOGNISED_ALLERGY).
    concerns_must_include: tuple[str, ...] = ()
    #: Words that must never appear in the final regimen's drug name (e.g. "ciprofloxacin").
    drugs_never: tuple[str, ...] = ()
    #: The consultation outcome must be one of these (e.g. ESCALATED: a person must look).
    outcome_in: tuple[str, ...] = ()

    @model_serializer(mode="wrap")
    def _omit_unused_outcome(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Added after version 1 of the datasets: left out when unused, so that adding it did
        not change (and re-version) every case."""
        data: dict[str, Any] = handler(self)
        if not data.get("outcome_in"):
            data.pop("outcome_in", None)
        return data


class Case(_Model):
    """One consultation to run: a patient in cases.json form, its profile and expectations."""

    id: str = Field(pattern=r"^[A-Z][A-Z0-9-]*$")
    version: int = Field(ge=1)
    provenance: dict[str, str]
    description: str
    tags: tuple[str, ...] = ()
    profile: str
    patient: dict[str, Any]
    expected: Expected

    @model_validator(mode="after")
    def _has_source(self) -> Case:
        if "source" not in self.provenance:
            raise ValueError(f"case {self.id}: provenance needs a 'source'")
        return self


class Subject(_Model):
    """A consultation the questions of a Q&A dataset are asked about."""

    key: str
    profile: str
    patient: dict[str, Any]


class Question(_Model):
    """One question about a subject's report and what the answer must hold."""

    id: str = Field(pattern=r"^[A-Z][A-Z0-9-]*$")
    version: int = Field(ge=1)
    provenance: dict[str, str]
    on: str  # Subject.key
    question: str
    kind: AnswerKind
    words: tuple[str, ...] = ()  # must appear in the answer (case-insensitive)
    absent: tuple[str, ...] = ()  # must not appear in the answer
    rules: tuple[str, ...] = ()  # must be among the answer's rule ids


class Dataset(_Model):
    """One dataset file."""

    name: str
    kind: Literal["consultations", "questions"]
    version: int = Field(ge=1)
    description: str
    cases: tuple[Case, ...] = ()
    subjects: tuple[Subject, ...] = ()
    questions: tuple[Question, ...] = ()

    @model_validator(mode="after")
    def _unique_and_linked(self) -> Dataset:
        ids = [c.id for c in self.cases] + [q.id for q in self.questions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"dataset {self.name}: duplicate ids {dupes}")
        keys = {s.key for s in self.subjects}
        unknown = sorted({q.on for q in self.questions} - keys)
        if unknown:
            raise ValueError(f"dataset {self.name}: questions on unknown subjects {unknown}")
        return self

    @property
    def size(self) -> int:
        return len(self.cases) if self.kind == "consultations" else len(self.questions)

    def content_sha256(self) -> str:
        """Hash of the cases (not of the file's layout): equal hashes = the same test."""
        body = self.model_dump(mode="json", include={"cases", "subjects", "questions"})
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dataset_path(name_or_path: str) -> Path:
    """A shipped dataset by name (gold, adversarial, regression, qa), else a file path."""
    if name_or_path in NAMES:
        return DATASETS_DIR / f"{name_or_path}.json"
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"no dataset {name_or_path!r}: use one of {', '.join(NAMES)} or a file path"
        )
    return path


def load_dataset(name_or_path: str) -> Dataset:
    """Read and validate a dataset (by name or path). Reads a file: call it outside the event
    loop or from a thread."""
    path = dataset_path(name_or_path)
    return Dataset.model_validate_json(path.read_text(encoding="utf-8"))


def write_dataset(dataset: Dataset, path: Path) -> None:
    """Write `dataset` as stable, reviewable JSON (sorted keys, two-space indent)."""
    body = dataset.model_dump(mode="json", exclude_defaults=False)
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
