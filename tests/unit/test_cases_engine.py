"""Every development case through the pure engine: decision, regimen, rules and warnings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import case_params
from tests.expectations import mismatches
from utimesh.rules import TriageEngine, parse_intake


@pytest.mark.parametrize("case", case_params())
def test_development_case(engine: TriageEngine, case: dict[str, Any]) -> None:
    assessment = engine.assess(parse_intake(case["patient"]), case["profile"])
    problems = mismatches(assessment, case["expected"])
    assert not problems, f"{case['id']} ({case['description']}): " + "; ".join(problems)
