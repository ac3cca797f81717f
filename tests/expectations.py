"""Comparing an assessment with a development case's `expected`, naming the rules involved."""

from __future__ import annotations

from typing import Any

from utimesh.rules import Assessment, regimen_to_json


def mismatches(a: Assessment, expected: dict[str, Any]) -> list[str]:
    """Human-readable differences; empty when the assessment meets the case."""
    out: list[str] = []
    if a.decision.value != expected["decision"]:
        out.append(
            f"decision {a.decision.value} != expected {expected['decision']} (rules fired: {', '.join(a.rule_ids)})"
        )
    got = regimen_to_json(a.regimen) if a.regimen else None
    if got != expected["regimen"]:
        out.append(f"regimen {got} != expected {expected['regimen']}")
    fired = set(a.rule_ids)
    out += [
        f"{r} must fire but did not" for r in expected["rules_that_must_fire"] if r not in fired
    ]
    out += [
        f"{r} must not fire but did" for r in expected["rules_that_must_not_fire"] if r in fired
    ]
    if set(a.warning_ids) != set(expected["warnings"]):
        out.append(f"warnings {sorted(a.warning_ids)} != expected {sorted(expected['warnings'])}")
    return out
