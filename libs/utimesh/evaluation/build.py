"""Build the shipped datasets: gold from the development cases (shared/clinical/cases.json),
adversarial and qa from `authored.py`. Run by `utimesh eval datasets build`.

Versioning: a case keeps its version while its content (everything but the version) is
unchanged, and gets version + 1 when it changes; a new case starts at 1. The dataset's version
goes up by one whenever any case changed, was added or removed. A test checks that the checked-in
files are what this module builds (so nobody edits a case without its version moving)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from utimesh.evaluation import authored
from utimesh.evaluation.datasets import (
    DATASETS_DIR,
    Dataset,
    canonical_json,
    write_dataset,
)

REPO = Path(__file__).resolve().parents[3]
#: Where the development cases are read from (override with UTIMESH_CASES).
CASES_SOURCE = "shared/clinical/cases.json"


def cases_path() -> Path:
    return Path(os.environ.get("UTIMESH_CASES", REPO.parent / "shared" / "clinical" / "cases.json"))


def _sha(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _versioned(
    items: Sequence[dict[str, Any]], previous: Mapping[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], bool]:
    """Give each item (without "version") its version; True when anything changed."""
    out: list[dict[str, Any]] = []
    changed = set(previous) != {i["id"] for i in items}
    for item in items:
        before = previous.get(item["id"])
        if before is None:
            version = 1
            changed = True
        else:
            old = {k: v for k, v in before.items() if k != "version"}
            if _sha(old) == _sha(item):
                version = before["version"]
            else:
                version = before["version"] + 1
                changed = True
        out.append({**item, "version": version})
    return out, changed


def _previous(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return body


def _finish(
    name: str, kind: str, description: str, path: Path, body: dict[str, list[dict[str, Any]]]
) -> Dataset:
    """Version the cases/questions of `body` against the file at `path` and validate."""
    prev = _previous(path) or {}
    key = "cases" if kind == "consultations" else "questions"
    prev_items = {i["id"]: i for i in prev.get(key, [])}
    # Normalise through the model (defaults filled in) so that an unchanged case compares equal
    # with what the file holds; the placeholder version is dropped again before comparing.
    probe = Dataset.model_validate(
        {
            "name": name,
            "kind": kind,
            "version": 1,
            "description": description,
            **body,
            key: [{**i, "version": 1} for i in body[key]],
        }
    )
    normalised = [
        {k: v for k, v in i.model_dump(mode="json").items() if k != "version"}
        for i in (probe.cases if key == "cases" else probe.questions)
    ]
    items, changed = _versioned(normalised, prev_items)
    changed = changed or prev.get("subjects", []) != probe.model_dump(mode="json")["subjects"]
    version = int(prev.get("version", 0)) + 1 if changed or not prev else int(prev["version"])
    return Dataset.model_validate(
        {
            "name": name,
            "kind": kind,
            "version": version,
            "description": description,
            **body,
            key: items,
        }
    )


def build_gold(cases: Sequence[Mapping[str, Any]], path: Path) -> Dataset:
    """The gold set: every development case with its expected decision, regimen and rules."""
    items = []
    for case in cases:
        exp = case["expected"]
        items.append(
            {
                "id": case["id"],
                "provenance": {
                    "source": CASES_SOURCE,
                    "source_id": case["id"],
                    "source_sha256": _sha(case),
                    "rationale": case.get("rationale", ""),
                },
                "description": case["description"],
                "tags": [case["profile"], exp["decision"]],
                "profile": case["profile"],
                "patient": case["patient"],
                "expected": {
                    "decision": exp["decision"],
                    "regimen": exp["regimen"],
                    "check_regimen": True,
                    "regimen_agent": exp["regimen"]["agent"] if exp["regimen"] else None,
                    "rules_that_must_fire": exp["rules_that_must_fire"],
                    "rules_that_must_not_fire": exp["rules_that_must_not_fire"],
                    "warnings": exp["warnings"],
                },
            }
        )
    return _finish(
        "gold",
        "consultations",
        "Every development case of shared/clinical/cases.json (RULES.md v2.0) with its expected "
        "decision, exact regimen, rules that must and must not fire, and warnings.",
        path,
        {"cases": items},
    )


def build_adversarial(path: Path) -> Dataset:
    items = []
    for a in authored.ADVERSARIAL:
        provenance = {"source": "authored", "author": authored.AUTHOR, "why": a.why}
        if a.known_gap:
            provenance["known_gap"] = a.known_gap
        items.append(
            {
                "id": a.id,
                "provenance": provenance,
                "description": a.description,
                "tags": [a.category, *(["known-gap"] if a.known_gap else [])],
                "profile": a.profile,
                "patient": a.patient,
                "expected": a.expected(),
            }
        )
    return _finish(
        "adversarial",
        "consultations",
        "Prompt injection in free text, contradictory histories, brand-name and misspelled "
        "medications, and boundary values of the profile parameters. Cases tagged known-gap are "
        "run and reported but not gated.",
        path,
        {"cases": items},
    )


def build_qa(path: Path) -> Dataset:
    subjects = [
        {"key": key, "profile": profile, "patient": p}
        for key, (profile, p) in authored.QA_SUBJECTS.items()
    ]
    questions = [
        {
            "id": f"QA-{i:03d}",
            "provenance": {
                "source": "authored",
                "author": authored.AUTHOR,
                "adapted_from": "tests/report/test_answer.py",
            },
            "on": q.on,
            "question": q.question,
            "kind": q.kind,
            "words": list(q.words),
            "absent": list(q.absent),
            "rules": list(q.rules),
        }
        for i, q in enumerate(authored.QUESTIONS, start=1)
    ]
    return _finish(
        "qa",
        "questions",
        "Questions about consultation reports through AskConsultation: what the answer must say, "
        "and which questions must be refused (cannot answer, new consultation, out of scope).",
        path,
        {"subjects": subjects, "questions": questions},
    )


def build_all(
    directory: Path = DATASETS_DIR, cases: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Dataset]:
    """Every built dataset, versioned against the files in `directory` (not written).
    Gold is left out when the development cases are not available."""
    out = {
        "adversarial": build_adversarial(directory / "adversarial.json"),
        "qa": build_qa(directory / "qa.json"),
    }
    if cases is None and cases_path().exists():
        cases = json.loads(cases_path().read_text(encoding="utf-8"))
    if cases is not None:
        out["gold"] = build_gold(cases, directory / "gold.json")
    return out


def write_all(directory: Path = DATASETS_DIR) -> dict[str, Dataset]:
    """Build and write the datasets; the regression set is created empty if missing."""
    built = build_all(directory)
    for name, dataset in built.items():
        write_dataset(dataset, directory / f"{name}.json")
    regression = directory / "regression.json"
    if not regression.exists():
        write_dataset(
            Dataset(
                name="regression",
                kind="consultations",
                version=1,
                description=REGRESSION_DESCRIPTION,
            ),
            regression,
        )
    return built


REGRESSION_DESCRIPTION = (
    "Consultations a clinician's review showed the system got wrong (or right, against a "
    "reviewer), adjudicated and promoted by `utimesh eval promote`; only ever appended to."
)
