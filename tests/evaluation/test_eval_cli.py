"""`utimesh eval` as a person (or CI) runs it: a real process writing the run record, the
report and its plots, storing the record in Postgres, comparing with the previous run, and
exiting 1 when the gate fails."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.conftest import REPO

UTIMESH = [sys.executable, "-m", "utimesh.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UTIMESH, "eval", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "error", "COLUMNS": "200", **(env or {})},
        check=False,
    )


async def stored_runs(url: str) -> list[tuple[str, bool | None, dict[str, object]]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT run_id, gate_passed, summary::text AS s FROM eval_runs ORDER BY run_id"
        )
    finally:
        await conn.close()
    return [(r["run_id"], r["gate_passed"], json.loads(r["s"])) for r in rows]


def test_run_store_compare_and_gate(tmp_path: Path, module_database_url: str) -> None:
    out = tmp_path / "runs"
    env = {"UTIMESH_DATABASE_URL": module_database_url}
    first = run("-d", "adversarial", "-d", "qa", "--gate", "--out", str(out), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "release gate passed" in first.stdout and "baseline: none" in first.stdout
    assert "adversarial" in first.stderr  # progress bars on stderr
    [run_dir] = list(out.iterdir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["gate"] == {"passed": True, "failures": []}
    assert record["datasets"]["adversarial"]["metrics"]["unsafe_recommendations"] == 0
    report = (run_dir / "report.md").read_text()
    assert "Release gate: PASSED" in report and "![" in report
    assert (run_dir / "decisions-adversarial.png").read_bytes()[:4] == b"\x89PNG"
    [(run_id, passed, summary)] = asyncio.run(stored_runs(module_database_url))
    assert run_id == run_dir.name and passed is True
    assert "outcomes" not in json.dumps(summary)  # the summary column holds metrics only

    # A stricter gate (no pharmacist REJECT at all): the same run now fails, against the first.
    strict = tmp_path / "strict.toml"
    strict.write_text("[thresholds.pharmacist_reject_rate]\nmax = 0\n")
    second = run(
        "-d", "adversarial", "--gate", "--gate-config", str(strict), "--out", str(out), env=env
    )
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"baseline: {run_id}" in second.stdout
    assert "release gate FAILED" in second.stdout
    assert "adversarial: pharmacist_reject_rate" in second.stdout and "> maximum 0" in second.stdout
    runs = asyncio.run(stored_runs(module_database_url))
    assert [r[1] for r in runs] == [True, False]

    # The stored record can be gated again later, e.g. with other thresholds.
    newest = sorted(out.iterdir())[-1]
    checked = subprocess.run(
        [*UTIMESH, "eval", "check", str(newest), "--gate-config", str(strict)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert checked.returncode == 1 and "pharmacist_reject_rate" in checked.stdout


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    unknown = run("-d", "no-such-dataset", "--out", str(tmp_path))
    assert unknown.returncode == 2 and "no dataset" in unknown.stderr
    offline_model = run("-d", "qa", "--provider", "openai-compatible", "--out", str(tmp_path))
    assert offline_model.returncode == 2 and "--model" in offline_model.stderr
