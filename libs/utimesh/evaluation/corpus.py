"""The evidence corpus as the evaluator reads it: passage id -> text, straight from the TOML file
the evidence service ships (services/evidence/corpus/passages.toml). Citation faithfulness is
checked against this independent read, never against the passage copy a citation carries, so a
service that altered or invented passage text would be caught."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path


def corpus_file() -> Path:
    return Path(str(resources.files("services.evidence") / "corpus" / "passages.toml"))


def load_passages(path: Path | None = None) -> dict[str, str]:
    """Passage id -> text. Reads a file: call it outside the event loop."""
    body = tomllib.loads((path or corpus_file()).read_text(encoding="utf-8"))
    return {p["id"]: p["text"] for p in body.get("passage", [])}


def span_is_verbatim(passages: dict[str, str], passage_id: str, span: str) -> bool:
    """True when `span` occurs, character for character, in the corpus text of `passage_id`."""
    text = passages.get(passage_id)
    return bool(span) and text is not None and span in text


def corpus_version(path: Path | None = None) -> str:
    """The `version` of the corpus file (what consultations report as corpus_version)."""
    body = tomllib.loads((path or corpus_file()).read_text(encoding="utf-8"))
    return str(body.get("version", ""))
