"""The curated evidence corpus: load `corpus/passages.toml`, check it against the shared rule
catalogue and source list, and join each passage with its source's metadata.

Loading is explicit (`load_corpus()`), never at import time. Every inconsistency (unknown
source key or rule id, duplicate passage id, bad date, unknown evidence type) fails at load with
every problem listed, so that a bad corpus never starts serving.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from utimesh.rules.knowledge import Ruleset

EvidenceType = Literal["guideline", "label", "protocol", "study", "overlay"]
EVIDENCE_TYPES: tuple[str, ...] = ("guideline", "label", "protocol", "study", "overlay")
INTERNATIONAL = "International"
# "International", a country ("CA", "US", "UK") or a country and region ("CA-ON").
JURISDICTION = re.compile(r"^(?:International|[A-Z]{2}(?:-[A-Z]{2,3})?)$")


class CorpusError(ValueError):
    """The corpus file is malformed or inconsistent with the shared knowledge."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassageEntry(_Strict):
    """One `[[passage]]` table as written in the file."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$", max_length=120)
    source_key: str = Field(min_length=1)
    section: str = Field(min_length=1)
    jurisdiction: str = Field(pattern=JURISDICTION.pattern)
    evidence_type: EvidenceType
    date_reviewed: date
    rule_ids: tuple[str, ...] = ()
    text: str = Field(min_length=1)


class CorpusFile(_Strict):
    version: str = Field(min_length=1)
    reviewed: date
    passage: tuple[PassageEntry, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Passage:
    """A passage joined with its source's metadata (organisation, title, year, url, doi)."""

    id: str
    source_key: str
    organisation: str
    title: str
    year: int
    section: str
    url: str
    doi: str
    jurisdiction: str
    evidence_type: str
    date_reviewed: str  # ISO date
    text: str
    rule_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleRef:
    """What the corpus keeps of a catalogue rule: its title and its source keys, in order."""

    title: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """The loaded corpus: passages in file order, looked up by id and by rule."""

    version: str
    reviewed: str
    passages: tuple[Passage, ...]
    _by_id: Mapping[str, Passage] = field(repr=False)
    _by_rule: Mapping[str, tuple[Passage, ...]] = field(repr=False)
    _rules: Mapping[str, RuleRef] = field(repr=False)

    @classmethod
    def of(
        cls,
        version: str,
        reviewed: str,
        passages: tuple[Passage, ...],
        rules: Mapping[str, RuleRef],
    ) -> Corpus:
        by_rule: dict[str, list[Passage]] = {}
        for p in passages:
            for rule_id in p.rule_ids:
                by_rule.setdefault(rule_id, []).append(p)
        return cls(
            version=version,
            reviewed=reviewed,
            passages=passages,
            _by_id={p.id: p for p in passages},
            _by_rule={r: tuple(ps) for r, ps in by_rule.items()},
            _rules=dict(rules),
        )

    def by_id(self, passage_id: str) -> Passage | None:
        return self._by_id.get(passage_id)

    def by_rule(self, rule_id: str) -> tuple[Passage, ...]:
        """Passages that support `rule_id`, in file order (empty for an unknown rule)."""
        return self._by_rule.get(rule_id, ())

    def rule_sources(self, rule_id: str) -> tuple[str, ...]:
        """The source keys the rule catalogue gives for `rule_id`, in its order."""
        ref = self._rules.get(rule_id)
        return ref.sources if ref else ()

    def rule_title(self, rule_id: str) -> str:
        ref = self._rules.get(rule_id)
        return ref.title if ref else ""

    def uncovered_rules(self, ruleset: Ruleset) -> list[str]:
        """Rules with sources that no passage of one of their own sources supports."""
        return [
            rule.id
            for rule in ruleset.rules.values()
            if rule.sources and not any(p.source_key in rule.sources for p in self.by_rule(rule.id))
        ]


def default_corpus_path() -> Path:
    return Path(str(resources.files("services.evidence") / "corpus" / "passages.toml"))


def parse_corpus(raw: Mapping[str, object], ruleset: Ruleset, name: str = "corpus") -> Corpus:
    """Validate a parsed corpus document against the rule catalogue and the sources."""
    try:
        doc = CorpusFile.model_validate(raw)
    except ValidationError as exc:
        raise CorpusError(f"{name}: {exc}") from exc
    problems: list[str] = []
    seen: set[str] = set()
    passages: list[Passage] = []
    for entry in doc.passage:
        if entry.id in seen:
            problems.append(f"passage {entry.id} is defined twice")
        seen.add(entry.id)
        source = ruleset.sources.get(entry.source_key)
        if source is None:
            problems.append(f"passage {entry.id} names unknown source_key {entry.source_key!r}")
        unknown = [r for r in entry.rule_ids if r not in ruleset.rules]
        if unknown:
            problems.append(f"passage {entry.id} names unknown rule id(s) {', '.join(unknown)}")
        if len(set(entry.rule_ids)) != len(entry.rule_ids):
            problems.append(f"passage {entry.id} repeats a rule id")
        if entry.text != entry.text.strip():
            problems.append(f"passage {entry.id}: text has leading or trailing white space")
        if source is None:
            continue
        passages.append(
            Passage(
                id=entry.id,
                source_key=entry.source_key,
                organisation=source.organisation,
                title=source.title,
                year=source.year,
                section=entry.section,
                url=source.url,
                doi=source.doi,
                jurisdiction=entry.jurisdiction,
                evidence_type=entry.evidence_type,
                date_reviewed=entry.date_reviewed.isoformat(),
                text=entry.text,
                rule_ids=entry.rule_ids,
            )
        )
    if problems:
        raise CorpusError(f"{name}: " + "; ".join(problems))
    rules = {r.id: RuleRef(r.title, r.sources) for r in ruleset.rules.values()}
    return Corpus.of(doc.version, doc.reviewed.isoformat(), tuple(passages), rules)


def load_corpus(ruleset: Ruleset, path: Path | None = None) -> Corpus:
    """Read and check the corpus file (default: the one shipped with the service)."""
    source = path or default_corpus_path()
    try:
        with source.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise CorpusError(f"corpus file not found: {source}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CorpusError(f"{source.name}: {exc}") from exc
    return parse_corpus(raw, ruleset, source.name)
