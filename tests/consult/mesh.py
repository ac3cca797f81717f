"""The in-process mesh of the tests: the one `utimesh eval` uses (utimesh.evaluation.mesh)."""

from __future__ import annotations

from utimesh.evaluation.mesh import (
    DEAD,
    OFFLINE,
    Mesh,
    evidence_spec,
    report_spec,
    running_mesh,
)

__all__ = ["DEAD", "OFFLINE", "Mesh", "evidence_spec", "report_spec", "running_mesh"]
