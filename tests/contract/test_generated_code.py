"""The checked-in generated contracts match protos/ (nobody edits generated code)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "protos/generate.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_consult_may_carry_rest_mappings() -> None:
    """Internal services stay gRPC-only: no google.api.http outside the consult contract."""
    offenders = [
        p
        for p in (REPO / "protos").rglob("*.proto")
        if "google.api.http" in p.read_text() and "/consult/" not in p.as_posix()
    ]
    assert offenders == []
