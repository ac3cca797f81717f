"""Composition root of the evidence service: load the knowledge and the corpus, build the
indexes (BM25, and dense embeddings when installed) once, then serve.

Everything slow happens here, before the server accepts calls: after start a call does only
in-memory work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.evidence.adapters.dense import load_dense_embedder
from services.evidence.domain.corpus import Corpus, load_corpus
from services.evidence.domain.ports import Embedder
from services.evidence.domain.retrieval import Retriever
from services.evidence.domain.text import Normaliser
from services.evidence.servicer import DOMAIN, SERVICE_NAME, EvidenceServicer
from utimesh.evidence.v1 import evidence_pb2_grpc
from utimesh.kit.logging import configure_logging
from utimesh.kit.server import ServiceSpec, serve
from utimesh.kit.settings import ServiceSettings
from utimesh.rules import Knowledge, load_knowledge

DEFAULT_PORT = 50054

log = logging.getLogger("utimesh.evidence")


class EvidenceSettings(ServiceSettings):
    """Environment: UTIMESH_EVIDENCE_HOST, _PORT, _GRACE_SECONDS, _MAX_BUDGET_SECONDS,
    _LOG_LEVEL, _DENSE, _CORPUS_PATH, _ONLINE_SEARCH."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_EVIDENCE_", extra="ignore", frozen=True)
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="0 = any free port")
    max_budget_seconds: float = 5.0  # in-memory retrieval: milliseconds per call
    # "auto": dense embeddings when the `dense` extra is installed; "on": required; "off": BM25.
    dense: Literal["auto", "on", "off"] = "auto"
    # Another corpus file (same schema); default: the one shipped with the service.
    corpus_path: Path | None = None
    # Online search provider. Only "disabled" exists in this build (see domain/ports.py).
    online_search: Literal["disabled"] = "disabled"


def build_retriever(
    knowledge: Knowledge, corpus_path: Path | None = None, embedder: Embedder | None = None
) -> tuple[Corpus, Retriever]:
    """Load and check the corpus against the shared knowledge and index it (slow: call at
    start). Raises CorpusError on a bad corpus."""
    ruleset = knowledge.ruleset()
    corpus = load_corpus(ruleset, corpus_path)
    groups = {name: g.terms for name, g in ruleset.dictionaries.groups.items()}
    return corpus, Retriever(corpus, Normaliser(groups), embedder)


def build_spec(corpus: Corpus, retriever: Retriever) -> ServiceSpec:
    servicer = EvidenceServicer(corpus, retriever)

    def register(server: grpc.aio.Server) -> None:
        evidence_pb2_grpc.add_EvidenceServiceServicer_to_server(servicer, server)

    return ServiceSpec(
        name="evidence", service_names=(SERVICE_NAME,), register=register, domain=DOMAIN
    )


def run(settings: EvidenceSettings, on_started: Callable[[int], None] | None = None) -> None:
    configure_logging("evidence", settings.log_level)
    # Fail fast on inconsistent knowledge or corpus, before binding the port.
    corpus, retriever = build_retriever(
        load_knowledge(), settings.corpus_path, load_dense_embedder(settings.dense)
    )
    log.info(
        "corpus indexed",
        extra={
            "fields": {
                "corpus_version": corpus.version,
                "passages": len(corpus.passages),
                "retrieval_mode": retriever.mode,
            }
        },
    )
    asyncio.run(serve(build_spec(corpus, retriever), settings, on_started))
