"""The corpus: it loads, is consistent with the shared knowledge, and covers every sourced rule."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from services.evidence.domain.corpus import (
    EVIDENCE_TYPES,
    Corpus,
    CorpusError,
    default_corpus_path,
    load_corpus,
    parse_corpus,
)
from tests.evidence.conftest import FIXTURE_CORPUS
from utimesh.rules import Ruleset


def fixture_document() -> dict[str, Any]:
    with FIXTURE_CORPUS.open("rb") as fh:
        return tomllib.load(fh)


def test_shipped_corpus_is_package_data() -> None:
    path = default_corpus_path()
    assert path.is_file(), f"{path} is missing: check [tool.setuptools.package-data]"


def test_corpus_loads_with_source_metadata(corpus: Corpus, ruleset: Ruleset) -> None:
    assert corpus.version and corpus.passages
    for p in corpus.passages:
        source = ruleset.sources[p.source_key]
        assert (p.organisation, p.title, p.year, p.url, p.doi) == (
            source.organisation,
            source.title,
            source.year,
            source.url,
            source.doi,
        )
        assert p.evidence_type in EVIDENCE_TYPES
        assert p.text == p.text.strip() and p.section
    assert len({p.id for p in corpus.passages}) == len(corpus.passages)


def test_every_sourced_rule_is_covered_by_one_of_its_own_sources(
    corpus: Corpus, ruleset: Ruleset
) -> None:
    """rules.toml and interactions.toml alike: a rule with sources has a passage of one of them."""
    sourced = [r for r in ruleset.rules.values() if r.sources]
    assert any(r.id.startswith("DDI-") for r in sourced), "interaction rows are part of the check"
    uncovered = corpus.uncovered_rules(ruleset)
    assert uncovered == [], f"rules without a passage of their own sources: {uncovered}"


def test_by_rule_lists_linked_passages_in_file_order(corpus: Corpus) -> None:
    linked = corpus.by_rule("RX-SEL-NIT")
    assert linked and all("RX-SEL-NIT" in p.rule_ids for p in linked)
    order = [p.id for p in corpus.passages if "RX-SEL-NIT" in p.rule_ids]
    assert [p.id for p in linked] == order
    assert corpus.by_rule("NO-SUCH-RULE") == ()


def test_fixture_corpus_loads(small_corpus: Corpus) -> None:
    assert small_corpus.version == "test-1"
    assert small_corpus.by_id("fx-nit-regimen") is not None
    assert small_corpus.rule_sources("RX-SEL-NIT") == ("SK", "BD")


def _mutated(**changes: Any) -> dict[str, Any]:
    doc = fixture_document()
    first = dict(doc["passage"][0])
    first.update(changes)
    doc["passage"] = [first, *doc["passage"][1:]]
    return doc


BAD_CORPORA = [
    ("unknown source key", _mutated(source_key="NOPE"), "unknown source_key 'NOPE'"),
    ("unknown rule id", _mutated(rule_ids=["RX-SEL-NIT", "RX-999"]), "unknown rule id(s) RX-999"),
    ("repeated rule id", _mutated(rule_ids=["RX-SEL-NIT", "RX-SEL-NIT"]), "repeats a rule id"),
    ("unknown field", _mutated(page=12), "page"),
    ("unknown evidence type", _mutated(evidence_type="blog"), "evidence_type"),
    ("bad date", _mutated(date_reviewed="yesterday"), "date_reviewed"),
    ("bad jurisdiction", _mutated(jurisdiction="Ontario"), "jurisdiction"),
    ("empty text", _mutated(text=""), "text"),
    ("padded text", _mutated(text=" Padded. "), "leading or trailing white space"),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [pytest.param(d, e, id=name) for name, d, e in BAD_CORPORA]
)
def test_bad_corpus_fails_at_load_with_a_clear_error(
    ruleset: Ruleset, doc: dict[str, Any], expected: str
) -> None:
    with pytest.raises(CorpusError) as info:
        parse_corpus(doc, ruleset)
    assert expected in str(info.value)


def test_duplicate_passage_id_is_an_error(ruleset: Ruleset) -> None:
    doc = fixture_document()
    doc["passage"] = [*doc["passage"], doc["passage"][0]]
    with pytest.raises(CorpusError, match="passage fx-nit-regimen is defined twice"):
        parse_corpus(doc, ruleset)


def test_every_problem_is_reported_at_once(ruleset: Ruleset) -> None:
    doc = fixture_document()
    doc["passage"][0] = {**doc["passage"][0], "source_key": "NOPE"}
    doc["passage"][1] = {**doc["passage"][1], "rule_ids": ["XX-1"]}
    with pytest.raises(CorpusError) as info:
        parse_corpus(doc, ruleset)
    assert "NOPE" in str(info.value) and "XX-1" in str(info.value)


def test_missing_or_malformed_file_is_a_corpus_error(ruleset: Ruleset, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(ruleset, tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = \n")
    with pytest.raises(CorpusError, match=r"broken\.toml"):
        load_corpus(ruleset, broken)
