"""Model profiles: the packaged defaults, a config file, environment overrides, fail-fast
validation and masked display."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utimesh.llm import ConfigError, LLMSettings, ModelProfile, load_llm_settings, masked

AGENTS = ("doctor", "pharmacist", "evidence", "report")
SECRET = "sk-live-DO-NOT-PRINT-1234"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_packaged_default_runs_every_agent_offline() -> None:
    settings = load_llm_settings(environ={})
    for agent in AGENTS:
        profile = settings.for_agent(agent)
        assert (profile.provider, profile.model) == ("offline", "offline-rules")
    assert "packaged" in settings.source


def test_file_profiles_and_default_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [agents.default]
        provider = "openai-compatible"
        model = "cheap-model"
        timeout_s = 5.0

        [agents.doctor]
        provider = "openai-compatible"
        model = "reasoning-model"
        base_url = "http://127.0.0.1:8080/v1/"
        retries = 1
        input_cost_per_1k = 0.5
        """,
    )
    settings = load_llm_settings(path, environ={})
    doctor = settings.for_agent("doctor")
    assert doctor.model == "reasoning-model"
    assert doctor.base_url == "http://127.0.0.1:8080/v1"  # trailing slash normalised
    assert doctor.retries == 1
    assert doctor.timeout_s == 20.0  # an agent entry does not inherit from "default"
    # Standard agents missing from the file inherit the "default" entry...
    assert settings.for_agent("report").model == "cheap-model"
    assert settings.for_agent("report").timeout_s == 5.0
    # ...and so does any agent nobody configured.
    assert settings.for_agent("triage-explainer").model == "cheap-model"


def test_unknown_agent_without_default_entry_gets_builtin_offline_profile() -> None:
    settings = LLMSettings(agents={"doctor": ModelProfile(model="x")})
    assert settings.for_agent("nobody") == ModelProfile()


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[agents.doctor]\nmodel = "from-env-path"\n')
    settings = load_llm_settings(environ={"UTIMESH_LLM_CONFIG": str(path)})
    assert settings.for_agent("doctor").model == "from-env-path"
    assert settings.source == str(path)


def test_environment_overrides_agent_and_all(tmp_path: Path) -> None:
    env = {
        "UTIMESH_LLM_ALL_PROVIDER": "openai-compatible",
        "UTIMESH_LLM_ALL_BASE_URL": "http://127.0.0.1:9000/v1",
        "UTIMESH_LLM_ALL_MODEL": "shared-model",
        "UTIMESH_LLM_DOCTOR_MODEL": "gpt-4.1",
        "UTIMESH_LLM_DOCTOR_BASE_URL": "",  # empty: OpenAI's own endpoint
        "UTIMESH_LLM_PHARMACIST_MAX_OUTPUT_TOKENS": "2048",
        "UTIMESH_LLM_PHARMACIST_API_KEY_ENV": "PHARMACIST_KEY",
        "UTIMESH_LLM_EVIDENCE_TEMPERATURE": "0.3",
        "UTIMESH_LLM_CACHE_TTL_S": "60",  # another component's knob: not ours, ignored
    }
    settings = load_llm_settings(environ=env)
    doctor = settings.for_agent("doctor")
    assert (doctor.provider, doctor.model, doctor.base_url) == (
        "openai-compatible",
        "gpt-4.1",
        None,
    )
    pharmacist = settings.for_agent("pharmacist")
    assert pharmacist.model == "shared-model"
    assert pharmacist.max_output_tokens == 2048
    assert pharmacist.api_key_env == "PHARMACIST_KEY"
    assert pharmacist.base_url == "http://127.0.0.1:9000/v1"
    assert settings.for_agent("evidence").temperature == 0.3
    # ALL reaches agents that nobody configured, too.
    assert settings.for_agent("someone-new").provider == "openai-compatible"


def test_agent_specific_file_value_loses_to_all_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[agents.doctor]\nmodel = "file-model"\n')
    settings = load_llm_settings(path, environ={"UTIMESH_LLM_ALL_MODEL": "env-model"})
    assert settings.for_agent("doctor").model == "env-model"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param({"UTIMESH_LLM_DOCTOR_TEMPERATURE": "hot"}, "UTIMESH_LLM_DOCTOR_TEMPERATURE", id="not-a-number"),
        pytest.param({"UTIMESH_LLM_DOCTOR_RETRIES": "-1"}, "UTIMESH_LLM_DOCTOR_RETRIES", id="negative-retries"),
        pytest.param({"UTIMESH_LLM_REPORT_REASKS": "50"}, "UTIMESH_LLM_REPORT_REASKS", id="unbounded-reasks"),
        pytest.param({"UTIMESH_LLM_ALL_PROVIDER": "anthropic"}, "UTIMESH_LLM_ALL_PROVIDER", id="unknown-provider"),
        pytest.param({"UTIMESH_LLM_DOCTOR_BASE_URL": "ftp://x"}, "UTIMESH_LLM_DOCTOR_BASE_URL", id="not-http"),
        pytest.param({"UTIMESH_LLM_DOCTOR_TIMEOUT_S": "0"}, "UTIMESH_LLM_DOCTOR_TIMEOUT_S", id="zero-timeout"),
        pytest.param({"UTIMESH_LLM_DOCTRO_MODEL": "x"}, "UTIMESH_LLM_DOCTRO_MODEL", id="misspelt-agent"),
    ],
)  # fmt: skip
def test_bad_environment_values_fail_fast_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_llm_settings(environ=env)
    assert named in str(raised.value)
    assert raised.value.reason == "LLM_CONFIG_INVALID"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param('[agents.doctor]\ntemprature = 0.2\n', "agents.doctor.temprature", id="unknown-key"),
        pytest.param('[agents.doctor]\nmax_output_tokens = 0\n', "agents.doctor.max_output_tokens", id="zero-tokens"),
        pytest.param('[agents.doctor\nmodel = "x"\n', "not valid TOML", id="bad-toml"),
        pytest.param('[llm]\nmodel = "x"\n', "unknown top-level keys", id="wrong-table"),
        pytest.param('[agents.all]\nmodel = "x"\n', "reserved", id="reserved-agent"),
    ],
)  # fmt: skip
def test_bad_file_values_fail_fast_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_llm_settings(write(tmp_path, text), environ={})
    assert named in str(raised.value)


def test_missing_file_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read LLM config"):
        load_llm_settings(tmp_path / "absent.toml", environ={})


def test_a_key_pasted_where_the_variable_name_goes_is_not_echoed() -> None:
    env = {"UTIMESH_LLM_DOCTOR_API_KEY_ENV": SECRET}
    with pytest.raises(ConfigError) as raised:
        load_llm_settings(environ=env)
    assert "UTIMESH_LLM_DOCTOR_API_KEY_ENV" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_masked_shows_whether_the_key_is_set_never_the_key() -> None:
    env = {
        "UTIMESH_LLM_DOCTOR_PROVIDER": "openai-compatible",
        "UTIMESH_LLM_DOCTOR_BASE_URL": "https://alice:hunter2@llm.example.test/v1?api-key=abc",
        "UTIMESH_LLM_PHARMACIST_API_KEY_ENV": "PHARMACIST_KEY",
        "OPENAI_API_KEY": SECRET,
    }
    shown = masked(load_llm_settings(environ=env), env)
    dumped = json.dumps(shown)
    assert SECRET not in dumped
    assert "hunter2" not in dumped
    assert "alice" not in dumped
    assert "abc" not in dumped
    doctor = shown["agents"]["doctor"]
    assert doctor["base_url"] == "https://***@llm.example.test/v1?api-key=***"
    assert (doctor["api_key_env"], doctor["api_key"]) == ("OPENAI_API_KEY", "set")
    pharmacist = shown["agents"]["pharmacist"]
    assert (pharmacist["api_key_env"], pharmacist["api_key"]) == ("PHARMACIST_KEY", "not set")
    assert set(shown["agents"]) >= set(AGENTS)


def test_bad_base_url_credentials_are_masked_in_the_error() -> None:
    env = {"UTIMESH_LLM_DOCTOR_BASE_URL": "ftp://bob:s3cret@host/v1"}
    with pytest.raises(ConfigError) as raised:
        load_llm_settings(environ=env)
    assert "s3cret" not in str(raised.value)
