"""Shared fixtures: the clinical knowledge, the engine and the development cases."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from utimesh.rules import Knowledge, TriageEngine, load_knowledge

REPO = Path(__file__).resolve().parent.parent
CASES_PATH = Path(
    os.environ.get("UTIMESH_CASES", REPO.parent / "shared" / "clinical" / "cases.json")
)


def load_cases() -> list[dict[str, Any]]:
    """The development cases of shared/clinical (beside the repository). CI requires them
    (UTIMESH_REQUIRE_CASES=1); elsewhere the case tests are skipped with a reason."""
    if not CASES_PATH.exists():
        if os.environ.get("UTIMESH_REQUIRE_CASES") == "1":
            raise FileNotFoundError(f"development cases not found at {CASES_PATH}")
        return []
    return list(json.loads(CASES_PATH.read_text()))


CASES = load_cases()


def case_params() -> list[Any]:
    if not CASES:
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(reason=f"no development cases at {CASES_PATH}"),
                id="no-cases",
            )
        ]
    return [pytest.param(c, id=c["id"]) for c in CASES]


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return load_knowledge()


@pytest.fixture(scope="session")
def engine(knowledge: Knowledge) -> TriageEngine:
    return TriageEngine(knowledge)
