"""Settings, the composition root, the optional dense adapter and the online-search seam."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.evidence.adapters.dense import DenseUnavailable, dense_available, load_dense_embedder
from services.evidence.adapters.online import DisabledOnlineSearch
from services.evidence.domain.corpus import CorpusError
from services.evidence.domain.ports import OnlineSearch
from services.evidence.main import DEFAULT_PORT, EvidenceSettings, build_retriever, build_spec
from services.evidence.servicer import DOMAIN, SERVICE_NAME
from tests.evidence.conftest import FIXTURE_CORPUS
from tests.evidence.fakes import HashingEmbedder
from utimesh.rules import Knowledge


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EvidenceSettings().port == DEFAULT_PORT == 50054
    assert EvidenceSettings().dense == "auto"
    monkeypatch.setenv("UTIMESH_EVIDENCE_PORT", "6000")
    monkeypatch.setenv("UTIMESH_EVIDENCE_DENSE", "off")
    monkeypatch.setenv("UTIMESH_EVIDENCE_CORPUS_PATH", str(FIXTURE_CORPUS))
    settings = EvidenceSettings()
    assert (settings.port, settings.dense, settings.corpus_path) == (6000, "off", FIXTURE_CORPUS)


@pytest.mark.parametrize(
    ("name", "value"),
    [("DENSE", "maybe"), ("ONLINE_SEARCH", "google"), ("PORT", "70000")],
)
def test_bad_settings_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"UTIMESH_EVIDENCE_{name}", value)
    with pytest.raises(ValidationError):
        EvidenceSettings()


def test_build_retriever_and_spec(knowledge: Knowledge) -> None:
    corpus, retriever = build_retriever(knowledge, FIXTURE_CORPUS)
    assert corpus.version == "test-1" and retriever.mode == "bm25"
    spec = build_spec(corpus, retriever)
    assert (spec.name, tuple(spec.service_names), spec.domain) == (
        "evidence",
        (SERVICE_NAME,),
        DOMAIN,
    )
    _, hybrid = build_retriever(knowledge, FIXTURE_CORPUS, HashingEmbedder())
    assert hybrid.mode == "bm25+dense"


def test_bad_corpus_path_fails_at_build(knowledge: Knowledge, tmp_path: object) -> None:
    with pytest.raises(CorpusError):
        build_retriever(knowledge, FIXTURE_CORPUS.with_name("absent.toml"))


def test_dense_off_means_no_embedder() -> None:
    assert load_dense_embedder("off") is None


@pytest.mark.skipif(dense_available(), reason="the dense extra is installed here")
def test_dense_without_the_extra() -> None:
    assert load_dense_embedder("auto") is None
    with pytest.raises(DenseUnavailable):
        load_dense_embedder("on")


async def test_online_search_is_disabled_and_does_nothing() -> None:
    online: OnlineSearch = DisabledOnlineSearch()
    assert online.enabled is False
    assert await online.search("nitrofurantoin", limit=5, deadline_s=1.0) == []
