"""Versioned prompt files: `<name>.v<N>.md` loaded by name (latest or a pinned version) and
rendered with named values, so every generation can record exactly which prompt it used."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_FILE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]*)\.v(?P<version>[1-9][0-9]*)\.md$")
# str.format-style: {{ and }} are literal braces, {identifier} is a value. Any other brace is
# left alone, so JSON examples in a prompt need no escaping unless they contain {{ or }}.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Prompt:
    """One version of one prompt, with the hash of its exact text for audit records."""

    name: str
    version: int
    text: str
    sha256: str

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    def render(self, **values: str) -> str:
        """The text with each `{name}` replaced by `values[name]` (KeyError when a placeholder
        has no value). Values are inserted verbatim in one pass: braces inside a value (e.g.
        patient free text) are never interpreted."""

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "{{":
                return "{"
            if token == "}}":
                return "}"
            name = match.group(1)
            if name not in values:
                raise KeyError(f"prompt {self.id} needs a value for {{{name}}}")
            return values[name]

        return _PLACEHOLDER.sub(replace, self.text)


def default_directory() -> Traversable:
    """Where the packaged prompts live: utimesh/llm/prompts."""
    return resources.files("utimesh.llm").joinpath("prompts")


def available_versions(name: str, directory: Path | Traversable | None = None) -> list[int]:
    """The versions of `name` in `directory`, oldest first."""
    folder = default_directory() if directory is None else directory
    if not folder.is_dir():
        return []
    versions = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match and match["name"] == name and entry.is_file():
            versions.append(int(match["version"]))
    return sorted(versions)


def load_prompt(
    name: str, version: int | None = None, directory: Path | Traversable | None = None
) -> Prompt:
    """The prompt `<name>.v<version>.md` (the latest version when None) from `directory`
    (default: the packaged utimesh/llm/prompts). Blocking file I/O: load prompts once at
    start, in the composition root."""
    if not _NAME.match(name):
        raise ValueError(f"bad prompt name {name!r}: lowercase letters, digits, '-' and '_'")
    folder = default_directory() if directory is None else directory
    versions = available_versions(name, folder)
    if not versions:
        raise FileNotFoundError(f"no prompt {name!r} (files {name}.v<N>.md) in {folder}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise FileNotFoundError(f"prompt {name!r} has no version {chosen}; has {versions}")
    data = folder.joinpath(f"{name}.v{chosen}.md").read_bytes()
    return Prompt(
        name=name,
        version=chosen,
        text=data.decode("utf-8"),
        sha256=hashlib.sha256(data).hexdigest(),
    )
