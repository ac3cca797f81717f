"""The evidence service over real gRPC on a loopback port: search and grounding round trips,
bad requests (status code, ErrorInfo reason and field violations, never message strings),
health, and the real `utimesh serve evidence` process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.evidence.domain.corpus import Corpus
from services.evidence.domain.retrieval import Retriever
from services.evidence.main import build_spec
from services.evidence.servicer import DOMAIN, SERVICE_NAME
from tests.evidence.conftest import normaliser
from tests.evidence.fakes import HashingEmbedder
from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.cli.procs import service_process
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.evidence.v1 import evidence_pb2_grpc
from utimesh.kit.server import RunningServer, start_server
from utimesh.kit.settings import ServiceSettings
from utimesh.kit.status import error_details
from utimesh.rules import Ruleset

pytestmark = pytest.mark.asyncio(loop_scope="module")

Stub = evidence_pb2_grpc.EvidenceServiceStub


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server(corpus: Corpus, retriever: Retriever) -> AsyncIterator[RunningServer]:
    running = await start_server(build_spec(corpus, retriever), ServiceSettings(port=0))
    yield running
    await running.server.stop(None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stub(server: RunningServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Stub(channel)


async def rejected(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return error_details(info.value)


def nit_claim(days: int, claim_id: str = "D1") -> apb.Claim:
    return apb.Claim(
        id=claim_id,
        text=f"nitrofurantoin 100 mg twice daily for {days} days",
        kind=apb.CLAIM_KIND_TREATMENT,
        rule_ids=["RX-SEL-NIT"],
    )


# --- round trips ---------------------------------------------------------------------------------


async def test_search_round_trip(stub: Stub, corpus: Corpus) -> None:
    reply = await stub.SearchEvidence(
        epb.SearchEvidenceRequest(query="macrobid 100 mg twice daily", page_size=3), timeout=5
    )
    assert (reply.corpus_version, reply.retrieval_mode) == (corpus.version, "bm25")
    assert [h.rank for h in reply.hits] == [1, 2, 3]
    top = reply.hits[0].passage
    assert "RX-SEL-NIT" in top.rule_ids and "nitrofurantoin" in top.text.lower()
    source = corpus.by_id(top.id)
    assert source is not None and (top.organisation, top.year) == (source.organisation, source.year)


async def test_search_default_page_size_and_filters(stub: Stub) -> None:
    reply = await stub.SearchEvidence(epb.SearchEvidenceRequest(query="nitrofurantoin"), timeout=5)
    assert len(reply.hits) == 5
    filtered = await stub.SearchEvidence(
        epb.SearchEvidenceRequest(
            query="nitrofurantoin kidney function",
            page_size=50,
            jurisdictions=["CA-AB"],
            evidence_types=["guideline", "overlay"],
        ),
        timeout=5,
    )
    assert filtered.hits
    assert {h.passage.jurisdiction for h in filtered.hits} <= {"CA-AB", "CA", "International"}
    assert {h.passage.evidence_type for h in filtered.hits} <= {"guideline", "overlay"}


async def test_ground_claims_round_trip(stub: Stub, corpus: Corpus) -> None:
    unrelated = apb.Claim(
        id="D3", text="She likes gardening on weekends.", kind=apb.CLAIM_KIND_DIAGNOSIS
    )
    reply = await stub.GroundClaims(
        epb.GroundClaimsRequest(
            claims=[nit_claim(5, "D1"), nit_claim(7, "D2"), unrelated], jurisdiction="CA-ON"
        ),
        timeout=5,
    )
    assert (reply.corpus_version, reply.generated_by) == (corpus.version, "offline-rules")
    supported, contradicted, missing = reply.groundings
    assert [g.claim.id for g in reply.groundings] == ["D1", "D2", "D3"]
    assert supported.support == epb.SUPPORT_LABEL_SUPPORTS and not supported.flagged
    assert len(supported.citations) == 3
    for c in supported.citations:
        assert c.quoted_span in c.passage.text and c.relevance_rationale
    assert contradicted.support == epb.SUPPORT_LABEL_CONTRADICTS and contradicted.flagged
    assert contradicted.citations[0].support == epb.SUPPORT_LABEL_CONTRADICTS
    assert missing.support == epb.SUPPORT_LABEL_NOT_FOUND and missing.flagged
    assert list(missing.citations) == [] and missing.flag_reason


async def test_max_citations_and_empty_claims(stub: Stub) -> None:
    reply = await stub.GroundClaims(
        epb.GroundClaimsRequest(claims=[nit_claim(5)], max_citations=5), timeout=5
    )
    assert len(reply.groundings[0].citations) == 5
    empty = await stub.GroundClaims(epb.GroundClaimsRequest(), timeout=5)
    assert list(empty.groundings) == []


async def test_a_large_batch_is_grounded(stub: Stub) -> None:
    claims = [nit_claim(5 if i % 2 else 7, f"D{i}") for i in range(200)]
    reply = await stub.GroundClaims(epb.GroundClaimsRequest(claims=claims), timeout=10)
    assert len(reply.groundings) == 200
    assert {g.support for g in reply.groundings} == {
        epb.SUPPORT_LABEL_SUPPORTS,
        epb.SUPPORT_LABEL_CONTRADICTS,
    }


async def test_health_reports_serving(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- bad requests ----------------------------------------------------------------------------------

BAD_SEARCHES = [
    ("empty query", epb.SearchEvidenceRequest(query="  "), ["query"]),
    ("page size too big", epb.SearchEvidenceRequest(query="x", page_size=51), ["page_size"]),
    ("negative page size", epb.SearchEvidenceRequest(query="x", page_size=-1), ["page_size"]),
    (
        "unknown evidence type",
        epb.SearchEvidenceRequest(query="x", evidence_types=["label", "blog"]),
        ["evidence_types[1]"],
    ),
    (
        "bad jurisdiction",
        epb.SearchEvidenceRequest(query="x", jurisdictions=["Ontario"]),
        ["jurisdictions[0]"],
    ),
    (
        "several problems",
        epb.SearchEvidenceRequest(query="", page_size=99),
        ["query", "page_size"],
    ),
    ("query too long", epb.SearchEvidenceRequest(query="x" * 2001), ["query"]),
]


@pytest.mark.parametrize(
    ("request_", "fields"), [pytest.param(r, f, id=name) for name, r, f in BAD_SEARCHES]
)
async def test_bad_search_is_invalid_argument(
    stub: Stub, request_: epb.SearchEvidenceRequest, fields: list[str]
) -> None:
    details = await rejected(stub.SearchEvidence(request_, timeout=5))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == ("INVALID_SEARCH", DOMAIN)
    assert [f for f, _ in details.field_violations] == fields


BAD_GROUNDINGS = [
    (
        "max citations too big",
        epb.GroundClaimsRequest(claims=[nit_claim(5)], max_citations=6),
        ["max_citations"],
    ),
    (
        "negative max citations",
        epb.GroundClaimsRequest(claims=[nit_claim(5)], max_citations=-1),
        ["max_citations"],
    ),
    (
        "too many claims",
        epb.GroundClaimsRequest(claims=[nit_claim(5)] * 201),
        ["claims"],
    ),
    (
        "empty claim text",
        epb.GroundClaimsRequest(claims=[nit_claim(5), apb.Claim(id="D2", text=" ")]),
        ["claims[1].text"],
    ),
    (
        "bad jurisdiction",
        epb.GroundClaimsRequest(claims=[nit_claim(5)], jurisdiction="on"),
        ["jurisdiction"],
    ),
]


@pytest.mark.parametrize(
    ("request_", "fields"), [pytest.param(r, f, id=name) for name, r, f in BAD_GROUNDINGS]
)
async def test_bad_grounding_is_invalid_argument(
    stub: Stub, request_: epb.GroundClaimsRequest, fields: list[str]
) -> None:
    details = await rejected(stub.GroundClaims(request_, timeout=5))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.reason, details.domain) == ("INVALID_CLAIMS", DOMAIN)
    assert [f for f, _ in details.field_violations] == fields


# --- the real process ------------------------------------------------------------------------------


async def test_utimesh_serve_evidence_process() -> None:
    async with (
        service_process(
            "evidence", SERVICE_NAME, env={"UTIMESH_EVIDENCE_LOG_LEVEL": "WARNING"}
        ) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        reply = await Stub(channel).SearchEvidence(
            epb.SearchEvidenceRequest(query="fosfomycin single dose", page_size=1), timeout=5
        )
    assert len(reply.hits) == 1 and "fosfomycin" in reply.hits[0].passage.text.lower()


async def test_hybrid_service_runs_retrieval_off_the_loop(
    small_corpus: Corpus, ruleset: Ruleset
) -> None:
    """With an embedder (here the first-party fake) the service reports the hybrid mode and
    answers from a worker thread."""
    retriever = Retriever(small_corpus, normaliser(ruleset), HashingEmbedder())
    running = await start_server(build_spec(small_corpus, retriever), ServiceSettings(port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = Stub(channel)
            reply = await stub.SearchEvidence(
                epb.SearchEvidenceRequest(query="macrobid for five days"), timeout=5
            )
            grounded = await stub.GroundClaims(
                epb.GroundClaimsRequest(claims=[nit_claim(7)]), timeout=5
            )
    finally:
        await running.server.stop(None)
    assert reply.retrieval_mode == "bm25+dense"
    assert reply.hits[0].passage.id == "fx-nit-regimen"
    assert grounded.groundings[0].support == epb.SUPPORT_LABEL_CONTRADICTS
