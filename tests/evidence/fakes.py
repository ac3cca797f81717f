"""A first-party fake of the `Embedder` port: deterministic bag-of-words vectors (hashed terms),
so that the hybrid path (fusion, modes, threading) is tested without torch."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from utimesh.rules.matching import tokens

DIMENSIONS = 64


class HashingEmbedder:
    """Each token adds 1 to a dimension chosen by its hash; vectors are normalised."""

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    @property
    def name(self) -> str:
        return "hashing-fake"

    def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        self.calls += 1
        self.texts += len(texts)
        out: list[list[float]] = []
        for text in texts:
            v = [0.0] * DIMENSIONS
            for t in tokens(text):
                v[int(hashlib.sha256(t.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out
