"""The clinical data files: load-time checks, profiles, hashing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.factories import patient
from utimesh.rules import (
    KnowledgeError,
    TriageEngine,
    UnknownProfileError,
    load_knowledge,
    parse_intake,
)
from utimesh.rules.knowledge import default_data_dir


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(default_data_dir(), target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_profiles_and_default() -> None:
    k = load_knowledge()
    assert k.profiles == ("CA-AB", "CA-ON")
    assert k.ruleset().id == "CA-ON"
    assert k.ruleset("CA-AB").params.DRUG_ORDER == ("NIT", "FOS", "SXT", "TMP")


def test_unknown_profile_is_an_error_never_a_default() -> None:
    with pytest.raises(
        UnknownProfileError, match="unknown profile 'CA-QC'; available: CA-AB, CA-ON"
    ):
        TriageEngine(load_knowledge()).assess(parse_intake(patient()), "CA-QC")


def test_hash_is_stable_and_differs_by_profile() -> None:
    a, b = load_knowledge(), load_knowledge()
    assert a.ruleset("CA-ON").content_hash == b.ruleset("CA-ON").content_hash
    assert a.ruleset("CA-ON").content_hash != a.ruleset("CA-AB").content_hash


def test_changing_a_parameter_changes_the_hash_and_the_decision(data_copy: Path) -> None:
    _edit(data_copy / "profiles" / "CA-ON.toml", "RENAL_REFER_BELOW = 60", "RENAL_REFER_BELOW = 45")
    changed = load_knowledge(data_copy)
    assert changed.ruleset("CA-ON").content_hash != load_knowledge().ruleset("CA-ON").content_hash
    intake = parse_intake(patient(egfr_ml_min=50))
    assert "CX-011" in TriageEngine(load_knowledge()).assess(intake).rule_ids
    assert "CX-011" not in TriageEngine(changed).assess(intake).rule_ids


def test_adding_a_profile_is_adding_data(data_copy: Path) -> None:
    text = (data_copy / "profiles" / "CA-AB.toml").read_text()
    (data_copy / "profiles" / "XX-TEST.toml").write_text(
        text.replace('id = "CA-AB"', 'id = "XX-TEST"')
    )
    assert "XX-TEST" in load_knowledge(data_copy).profiles


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "profiles/CA-ON.toml",
            'DRUG_ORDER = ["NIT", "SXT", "TMP", "FOS"]',
            'DRUG_ORDER = ["NIT", "SXT", "SXT", "FOS"]',
            "DRUG_ORDER must hold each agent once",
        ),
        (
            "profiles/CA-ON.toml",
            "NIT_EXCLUDE_BELOW = 30",
            "NIT_EXCLUDE_BELOW = 70",
            "NIT_EXCLUDE_BELOW must be <= NIT_WARN_BELOW",
        ),
        (
            "profiles/CA-ON.toml",
            "NIT_EXCLUDE_BELOW = 30 ",
            "# NIT_EXCLUDE_BELOW removed ",
            "NIT_EXCLUDE_BELOW",
        ),
        (
            "profiles/CA-ON.toml",
            "default = true",
            "default = false",
            "exactly one profile must be the default",
        ),
        (
            "exclusions.toml",
            'egfr_below = "NIT_EXCLUDE_BELOW"',
            'egfr_below = "NIT_EXCLUDE_BELOWW"',
            "unknown parameter NIT_EXCLUDE_BELOWW",
        ),
        (
            "exclusions.toml",
            'allergy_any = ["allergy_fosfomycin"]',
            'allergy_any = ["allergy_fosfomycine"]',
            "unknown group allergy_fosfomycine",
        ),
        (
            "interactions.toml",
            'drugs_all = ["digoxin"]',
            'drugs_all = ["digoxine"]',
            "unknown group digoxine",
        ),
        (
            "interactions.toml",
            'sources = ["OVL"]',
            'sources = ["NOPE"]',
            "cites unknown source NOPE",
        ),
        (
            "regimens.toml",
            'rule_id = "RX-SEL-FOS"',
            'rule_id = "RX-SEL-XYZ"',
            "unknown rule RX-SEL-XYZ",
        ),
    ],
    ids=[
        "duplicate agent in DRUG_ORDER",
        "NIT exclude above warn",
        "missing parameter",
        "no default profile",
        "unknown parameter",
        "unknown allergy group",
        "unknown interaction group",
        "unknown source",
        "unknown regimen rule",
    ],
)
def test_inconsistent_data_fails_at_load(
    data_copy: Path, file: str, old: str, new: str, message: str
) -> None:
    _edit(data_copy / file, old, new)
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(data_copy)
