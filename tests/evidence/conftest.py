"""Fixtures of the evidence tests: the shipped corpus and a small fixture corpus, each indexed
once per session (BM25 only: the dense path has its own tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.evidence.domain.corpus import Corpus, load_corpus
from services.evidence.domain.retrieval import Retriever
from services.evidence.domain.text import Normaliser
from utimesh.rules import Knowledge, Ruleset

HERE = Path(__file__).resolve().parent
FIXTURE_CORPUS = HERE / "fixtures" / "passages.toml"
QUERIES = HERE / "queries.toml"


def normaliser(ruleset: Ruleset) -> Normaliser:
    return Normaliser({name: g.terms for name, g in ruleset.dictionaries.groups.items()})


@pytest.fixture(scope="session")
def ruleset(knowledge: Knowledge) -> Ruleset:
    return knowledge.ruleset()


@pytest.fixture(scope="session")
def corpus(ruleset: Ruleset) -> Corpus:
    return load_corpus(ruleset)


@pytest.fixture(scope="session")
def retriever(corpus: Corpus, ruleset: Ruleset) -> Retriever:
    return Retriever(corpus, normaliser(ruleset))


@pytest.fixture(scope="session")
def small_corpus(ruleset: Ruleset) -> Corpus:
    return load_corpus(ruleset, FIXTURE_CORPUS)


@pytest.fixture(scope="session")
def small(small_corpus: Corpus, ruleset: Ruleset) -> Retriever:
    return Retriever(small_corpus, normaliser(ruleset))
