"""The `utimesh` command line as a person uses it: real processes, real files, real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CASES, REPO
from tests.factories import patient

UTIMESH = [sys.executable, "-m", "utimesh.cli"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UTIMESH, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )


def test_help_everywhere() -> None:
    for args in ([], ["triage"], ["serve"], ["serve", "triage"], ["ruleset"], ["demo"]):
        result = run(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_triage_one_patient_prints_the_case_format(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(patient(history__allergies=["Macrobid"])))
    result = run("triage", str(path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["decision"] == "recommend_treatment" and out["profile"] == "CA-ON"
    assert out["regimen"] == {
        "agent": "SXT",
        "drug": "trimethoprim-sulfamethoxazole",
        "dose": [
            {"ingredient": "trimethoprim", "amount": 160, "unit": "mg"},
            {"ingredient": "sulfamethoxazole", "amount": 800, "unit": "mg"},
        ],
        "dose_form": "tablet (double strength)",
        "route": "PO",
        "frequency": "BID",
        "duration": {"amount": 3, "unit": "days"},
    }
    assert out["excluded"] == [
        {
            "agent": "NIT",
            "drug": "nitrofurantoin monohydrate/macrocrystals",
            "reasons": [
                {
                    "rule_id": "RX-NIT-01",
                    "title": out["excluded"][0]["reasons"][0]["title"],
                    "detail": "allergy: Nitrofurantoin allergy (excludes NIT)",
                }
            ],
        }
    ]
    assert out["rules_fired"] == ["SX-001", "RX-NIT-01", "RX-SEL-SXT", "FU-001", "FU-002"]


def test_triage_a_list_from_stdin_with_profile_flag() -> None:
    patients = [patient(), patient(egfr_ml_min=45, age=50)]
    result = run("triage", "-", "--profile", "CA-AB", stdin=json.dumps(patients))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [r["decision"] for r in out] == ["recommend_treatment", "recommend_treatment"]
    assert out[1]["warnings"] == ["W-NIT-RENAL"] and out[1]["profile"] == "CA-AB"


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(patient()))
    result = run("triage", str(path), "--profile", "CA-XX")
    assert result.returncode == 2
    assert "unknown profile 'CA-XX'" in result.stderr


def test_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    result = run("triage", str(path))
    assert result.returncode == 2 and "is not valid JSON" in result.stderr


@pytest.fixture(scope="module")
def triage_server() -> Any:
    """A real `utimesh serve triage` process on a free port."""
    import asyncio

    from utimesh.cli.procs import free_port, wait_serving

    port = free_port()
    proc = subprocess.Popen(
        [*UTIMESH, "serve", "triage", "--port", str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        asyncio.run(
            wait_serving(
                f"127.0.0.1:{port}",
                "utimesh.triage.v1.TriageService",
                30,
                lambda: proc.poll() is not None,
            )
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert [e["msg"] for e in events][-2:] == ["draining", "stopped"]


@pytest.mark.skipif(not CASES, reason="development cases not available")
def test_server_and_in_process_agree_on_every_case(triage_server: str, tmp_path: Path) -> None:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(CASES))
    local = run("triage", str(path))
    remote = run("triage", str(path), "--server", triage_server)
    assert local.returncode == remote.returncode == 0, local.stderr + remote.stderr
    assert json.loads(local.stdout) == json.loads(remote.stdout)


def test_server_rejection_is_reported_per_patient(triage_server: str) -> None:
    result = run(
        "triage", "-", "--server", triage_server, stdin=json.dumps([patient(), patient(age=130)])
    )
    assert result.returncode == 1
    ok, bad = json.loads(result.stdout)
    assert ok["decision"] == "recommend_treatment"
    assert bad["error"]["reason"] == "INVALID_INTAKE"
    assert bad["error"]["field_violations"][0]["field"] == "intake.age"


def test_consult_starts_local_services_and_prints_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(patient(history__allergies=["Macrobid"])))
    result = run("consult", str(path), "--json")
    assert result.returncode == 0, result.stderr
    c = json.loads(result.stdout)
    assert (c["decision"], c["outcome"]) == ("DECISION_RECOMMEND_TREATMENT", "OUTCOME_AGREED")
    assert c["regimen"]["agent"] == "AGENT_TRIMETHOPRIM_SULFAMETHOXAZOLE"
    assert [e["actor"] for e in c["transcript"]][:3] == ["triage", "doctor", "triage"]
    assert "DRAFT for prescriber sign-off" in c["notice"]
