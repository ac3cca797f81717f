"""The composition root and the servicer's pure helpers: settings, start-up checks, deadlines."""

from __future__ import annotations

from typing import Any

import pytest

from services.pharmacist.main import PharmacistSettings, build_spec
from services.pharmacist.servicer import RESERVE_S, SERVICE_NAME, model_deadline
from utimesh.llm import ConfigError, ModelProfile
from utimesh.pharmacist.v1 import pharmacist_pb2 as ppb
from utimesh.rules import Knowledge


def test_service_name_is_the_proto_service() -> None:
    assert ppb.DESCRIPTOR.services_by_name["PharmacistService"].full_name == SERVICE_NAME


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PharmacistSettings().port == 50053
    monkeypatch.setenv("UTIMESH_PHARMACIST_PORT", "6123")
    monkeypatch.setenv("UTIMESH_PHARMACIST_MAX_BUDGET_SECONDS", "30")
    settings = PharmacistSettings()
    assert (settings.port, settings.max_budget_seconds) == (6123, 30.0)


def test_a_model_profile_without_a_client_fails_at_start(knowledge: Knowledge) -> None:
    with pytest.raises(ConfigError) as info:
        build_spec(knowledge, None, ModelProfile(provider="openai-compatible", model="m"))
    assert info.value.reason == "LLM_CONFIG_INVALID"


@pytest.mark.parametrize(
    ("profile", "remaining", "budget", "expected"),
    [
        ({"timeout_s": 2.0, "retries": 1, "reasks": 1}, None, 60.0, 8.0),
        ({"timeout_s": 20.0}, 5.0, 60.0, 5.0 - RESERVE_S),
        ({"timeout_s": 20.0}, None, 10.0, 10.0 - RESERVE_S),
        ({"timeout_s": 20.0}, 0.1, 60.0, 0.0),
    ],
    ids=["profile bound", "caller deadline", "server budget", "no time left"],
)
def test_model_deadline(
    profile: dict[str, Any], remaining: float | None, budget: float, expected: float
) -> None:
    assert model_deadline(ModelProfile(**profile), remaining, budget) == pytest.approx(expected)
