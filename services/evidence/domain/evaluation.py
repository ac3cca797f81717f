"""Retrieval quality over a labelled query set (`tests/evidence/queries.toml`): recall@k and MRR.

recall@k of one query = |relevant ∩ top k| / min(|relevant|, k) (capped recall: a query with
more relevant passages than k is not penalised for what cannot fit in k hits); the reported
figure is the mean over queries. MRR = mean over queries of 1 / rank of the first relevant hit
(0 when none is returned). A query with a jurisdiction is run with that jurisdiction filter.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.evidence.domain.retrieval import Retriever, SearchFilters


class LabelledQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    relevant: tuple[str, ...] = Field(min_length=1)
    jurisdiction: str = ""


class _QueriesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    query: tuple[LabelledQuery, ...]


def load_queries(path: Path) -> tuple[LabelledQuery, ...]:
    with path.open("rb") as fh:
        return _QueriesFile.model_validate(tomllib.load(fh)).query


@dataclass(frozen=True, slots=True)
class QueryResult:
    query: LabelledQuery
    hits: tuple[str, ...]  # passage ids, best first
    recall: float
    reciprocal_rank: float


@dataclass(frozen=True, slots=True)
class RetrievalQuality:
    k: int
    recall_at_k: float
    mrr: float
    results: tuple[QueryResult, ...]

    @property
    def misses(self) -> tuple[QueryResult, ...]:
        """Queries with at least one relevant passage missing from the top k."""
        return tuple(r for r in self.results if r.recall < 1.0)


def evaluate(
    retriever: Retriever, queries: Sequence[LabelledQuery], k: int = 5
) -> RetrievalQuality:
    """Run every query and score the top `k` hits against its labels."""
    results: list[QueryResult] = []
    for q in queries:
        filters = SearchFilters(jurisdictions=(q.jurisdiction,) if q.jurisdiction else ())
        hits = tuple(h.passage.id for h in retriever.search(q.text, k, filters))
        relevant = set(q.relevant)
        found = len(relevant & set(hits))
        first = next((i for i, h in enumerate(hits, start=1) if h in relevant), None)
        results.append(
            QueryResult(q, hits, found / min(len(relevant), k), 1.0 / first if first else 0.0)
        )
    n = len(results) or 1
    return RetrievalQuality(
        k=k,
        recall_at_k=round(sum(r.recall for r in results) / n, 4),
        mrr=round(sum(r.reciprocal_rank for r in results) / n, 4),
        results=tuple(results),
    )
