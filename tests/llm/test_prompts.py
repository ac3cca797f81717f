"""Versioned prompt files: picking versions, hashing, rendering."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from utimesh.llm.prompts import available_versions, load_prompt

PROMPTS = Path(__file__).parent / "prompts"


def test_latest_version_by_default() -> None:
    prompt = load_prompt("example", directory=PROMPTS)
    assert (prompt.name, prompt.version, prompt.id) == ("example", 2, "example.v2")
    assert prompt.sha256 == hashlib.sha256((PROMPTS / "example.v2.md").read_bytes()).hexdigest()


def test_pinned_version() -> None:
    prompt = load_prompt("example", version=1, directory=PROMPTS)
    assert prompt.id == "example.v1"
    assert "version one" in prompt.text
    assert available_versions("example", PROMPTS) == [1, 2]


def test_versions_sort_as_numbers(tmp_path: Path) -> None:
    for version in (2, 10, 9):
        (tmp_path / f"review.v{version}.md").write_text(f"v{version}")
    (tmp_path / "review.v01.md").write_text("a leading zero is not a version")
    (tmp_path / "review-extra.v99.md").write_text("another prompt")
    assert load_prompt("review", directory=tmp_path).version == 10


def test_missing_prompt_or_version() -> None:
    with pytest.raises(FileNotFoundError, match="no prompt 'absent'"):
        load_prompt("absent", directory=PROMPTS)
    with pytest.raises(FileNotFoundError, match=r"has no version 7; has \[1, 2\]"):
        load_prompt("example", version=7, directory=PROMPTS)
    with pytest.raises(ValueError, match="bad prompt name"):
        load_prompt("../example", directory=PROMPTS)


def test_render_fills_named_values_only() -> None:
    prompt = load_prompt("example", directory=PROMPTS)
    rendered = prompt.render(topic="{cystitis}", audience="a pharmacist")
    assert rendered.startswith(
        "You are a test prompt, version two. Summarise {cystitis} for a pharmacist."
    )
    # A JSON example keeps its braces; {{ }} are literal braces; values are never re-read.
    assert '{"summary": "..."}' in rendered
    assert "literal braces: {topic}." in rendered


def test_render_without_a_needed_value_fails() -> None:
    prompt = load_prompt("example", directory=PROMPTS)
    with pytest.raises(KeyError, match="audience"):
        prompt.render(topic="x")


def test_packaged_prompt_folder_is_readable() -> None:
    # Other engineers' prompts live there; the loader must find the folder in the package.
    assert available_versions("no-such-prompt") == []
