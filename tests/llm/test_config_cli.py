"""`utimesh config show`: effective LLM settings per agent, secrets masked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from utimesh.cli.config import config

SECRET = "sk-live-secret-value-42"


@pytest.fixture(autouse=True)
def clean_llm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("UTIMESH_LLM_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)


def test_show_json_masks_secrets_and_applies_overrides() -> None:
    env = {
        "OPENAI_API_KEY": SECRET,
        "UTIMESH_LLM_DOCTOR_PROVIDER": "openai-compatible",
        "UTIMESH_LLM_DOCTOR_MODEL": "gpt-4.1",
        "UTIMESH_LLM_REPORT_PROVIDER": "openai-compatible",
        "UTIMESH_LLM_REPORT_BASE_URL": "http://user:pa55word@127.0.0.1:8080/v1",
        "UTIMESH_LLM_REPORT_API_KEY_ENV": "LOCAL_KEY",
    }
    result = CliRunner().invoke(config, ["show", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "pa55word" not in result.output
    agents = json.loads(result.output)["llm"]["agents"]
    assert agents["doctor"]["model"] == "gpt-4.1"
    assert agents["doctor"]["api_key"] == "set"
    assert agents["report"]["base_url"] == "http://***@127.0.0.1:8080/v1"
    assert (agents["report"]["api_key_env"], agents["report"]["api_key"]) == (
        "LOCAL_KEY",
        "not set",
    )
    assert agents["evidence"]["provider"] == "offline"


def test_show_table_by_default() -> None:
    env = {
        "OPENAI_API_KEY": SECRET,
        "UTIMESH_LLM_DOCTOR_PROVIDER": "openai-compatible",
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(config, ["show"], env=env)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    for agent in ("doctor", "pharmacist", "evidence", "report"):
        assert agent in result.output
    assert "OPENAI_API_KEY (set)" in result.output


def test_show_reports_bad_configuration_as_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text("[agents.doctor]\ntimeout_s = -1\n")
    result = CliRunner().invoke(config, ["show", "--llm-config", str(path)])
    assert result.exit_code == 1
    assert "agents.doctor.timeout_s" in result.output
