"""The shipped datasets: valid, versioned, with provenance, and in step with their sources
(gold with shared/clinical/cases.json, adversarial and qa with the authored spec)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CASES, CASES_PATH
from utimesh.evaluation import build
from utimesh.evaluation.datasets import (
    NAMES,
    Case,
    Dataset,
    Question,
    load_dataset,
    write_dataset,
)


@pytest.mark.parametrize("name", NAMES)
def test_every_case_has_id_version_and_provenance(name: str) -> None:
    d = load_dataset(name)
    items: list[Case | Question] = [*d.cases, *d.questions]
    assert d.name == name and d.version >= 1
    assert all(i.id and i.version >= 1 and i.provenance.get("source") for i in items)
    assert len({i.id for i in items}) == len(items)


def test_gold_is_every_development_case_with_its_expectations() -> None:
    if not CASES:
        pytest.skip(f"no development cases at {CASES_PATH}")
    gold = load_dataset("gold")
    assert [c.id for c in gold.cases] == [c["id"] for c in CASES]
    for case, source in zip(gold.cases, CASES, strict=True):
        assert case.patient == source["patient"] and case.profile == source["profile"]
        assert case.expected.decision == source["expected"]["decision"]
        assert case.expected.regimen == source["expected"]["regimen"]
        assert (
            list(case.expected.rules_that_must_fire) == source["expected"]["rules_that_must_fire"]
        )


def test_checked_in_datasets_are_what_the_build_command_makes() -> None:
    """Editing a source (cases.json, authored.py) without `utimesh eval datasets build`, or
    editing a dataset file by hand, fails here."""
    built = build.build_all()
    if not CASES:
        assert "gold" not in built
    for name, dataset in built.items():
        on_disk = load_dataset(name)
        assert dataset == on_disk, f"{name}.json is stale: run `utimesh eval datasets build`"


def test_a_changed_case_gets_a_new_version_and_the_dataset_too(tmp_path: Path) -> None:
    cases = json.loads(CASES_PATH.read_text()) if CASES else []
    if not cases:
        pytest.skip(f"no development cases at {CASES_PATH}")
    first = build.build_gold(cases[:3], tmp_path / "gold.json")
    write_dataset(first, tmp_path / "gold.json")
    again = build.build_gold(cases[:3], tmp_path / "gold.json")
    assert again == first  # rebuilding without change changes nothing

    changed = [dict(c) for c in cases[:3]]
    changed[1] = {**changed[1], "description": changed[1]["description"] + " (reworded)"}
    bumped = build.build_gold(changed, tmp_path / "gold.json")
    assert [c.version for c in bumped.cases] == [1, 2, 1]
    assert bumped.version == first.version + 1


def test_a_dataset_rejects_duplicate_ids() -> None:
    gold = load_dataset("adversarial")
    with pytest.raises(ValueError, match="duplicate ids"):
        Dataset.model_validate(
            {**gold.model_dump(mode="json"), "cases": [gold.cases[0].model_dump()] * 2}
        )
