"""Throughput of the evidence service and the quality of its retrieval.

Run from the repository root with ``python -m tests.bench.bench_evidence`` (``make bench``).
It prints a table, writes ``bench-results/evidence.json`` and takes about 15 s.

Inputs: the shipped corpus (``services/evidence/corpus/passages.toml``), the labelled queries
of ``tests/evidence/queries.toml`` (search input and quality labels), and the claims the offline
doctor makes for the sample patients shipped with the package (``utimesh/cli/samples``): one
GroundClaims call per patient, i.e. the claims of one consultation.

In process (one thread): ``Retriever.search`` cycling over the queries (page size 5), and
``ground`` cycling over the patients' claim lists, each for a fixed wall-clock budget after a
short warm-up.

gRPC: the service runs in its own process (``utimesh serve evidence`` via ``service_process``,
dense embeddings off so that the figure is the default BM25 service) and is used once it reports
SERVING. 16 client tasks issue calls back to back, each with a deadline; after a warm-up, a call
counts if it completes inside the window. Every reply is checked (hits returned, one grounding
per claim, every grounding labelled); a wrong reply or a failed call is an error, and any error
makes the run FAILED (exit 1).

Retrieval quality: recall@5 (capped: |relevant in top 5| / min(|relevant|, 5)) and MRR over the
labelled queries, with BM25, and also with BM25 + dense embeddings when the `dense` extra is
installed (quality only). Target: recall@5 >= 0.9 with BM25 (PASS/MISS; a MISS does not change
the exit code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import grpc

from services.doctor.domain import offline
from services.evidence.adapters.dense import MiniLMEmbedder, dense_available
from services.evidence.domain.evaluation import RetrievalQuality, evaluate, load_queries
from services.evidence.domain.grounding import ground
from services.evidence.main import build_retriever
from services.evidence.servicer import SERVICE_NAME
from utimesh.agents.models import CaseContext, Claim
from utimesh.cli.procs import service_process
from utimesh.codec.agents import claim_to_proto
from utimesh.evidence.v1 import evidence_pb2 as epb
from utimesh.evidence.v1 import evidence_pb2_grpc
from utimesh.rules import Knowledge, TriageEngine, load_knowledge, parse_intake

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench-results" / "evidence.json"
QUERIES = REPO / "tests" / "evidence" / "queries.toml"

CALL_DEADLINE_S = 5.0
CONCURRENCY = 16
CHANNEL_OPTIONS = (("grpc.enable_retries", 0),)  # a failed call must be seen and counted
RECALL_TARGET = 0.9
K = 5


# --- inputs -----------------------------------------------------------------------------------


def consultation_claims(knowledge: Knowledge) -> list[tuple[str, list[Claim]]]:
    """(profile, offline doctor claims) for each packaged sample patient."""
    engine = TriageEngine(knowledge)
    text = (resources.files("utimesh.cli") / "samples" / "patients.json").read_text()
    out = []
    for case in json.loads(text):
        intake = parse_intake(case["patient"])
        profile = str(case["profile"])
        ctx = CaseContext(intake=intake, triage=engine.assess(intake, profile))
        out.append((profile, list(offline.propose(ctx, knowledge.ruleset(profile)).claims)))
    if not out:
        raise SystemExit("no sample patients found")
    return out


# --- in process -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalResult:
    name: str
    unit: str
    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds

    @property
    def mean_us(self) -> float:
        return self.seconds / self.operations * 1e6


def run_bounded(
    name: str, unit: str, one_pass: Callable[[], int], seconds: float, warmup: float
) -> LocalResult:
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        one_pass()
    operations = 0
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        operations += one_pass()
    return LocalResult(name, unit, operations, now - start)


# --- gRPC -------------------------------------------------------------------------------------


@dataclass
class GrpcPoint:
    rpc: str
    concurrency: int
    window_s: float
    calls: int = 0
    items: int = 0  # hits requested or claims grounded by the counted calls
    errors: dict[str, int] = field(default_factory=dict)
    calls_per_s: float = 0.0
    items_per_s: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.calls == 0


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted data, q in [0, 1]."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


Call = Callable[[Any, float], Awaitable[Any]]


async def run_point(
    rpc: str,
    call: Call,
    requests: Sequence[tuple[Any, int]],
    accept: Callable[[int, Any], bool],
    *,
    warmup: float,
    window: float,
) -> GrpcPoint:
    """CONCURRENCY closed-loop callers for warmup + window seconds; stats of the window."""
    latencies: list[float] = []
    items = 0
    errors: Counter[str] = Counter()
    start = time.perf_counter() + warmup
    end = start + window

    async def caller(offset: int) -> None:
        nonlocal items
        i = offset
        while (started := time.perf_counter()) < end:
            index = i % len(requests)
            i += 1
            request, size = requests[index]
            try:
                reply = await call(request, CALL_DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            finished = time.perf_counter()
            if not accept(index, reply):
                errors["WRONG_REPLY"] += 1
            elif start <= finished < end:
                latencies.append(finished - started)
                items += size

    await asyncio.gather(*(caller(k) for k in range(CONCURRENCY)))
    latencies.sort()
    return GrpcPoint(
        rpc=rpc,
        concurrency=CONCURRENCY,
        window_s=window,
        calls=len(latencies),
        items=items,
        errors=dict(errors),
        calls_per_s=len(latencies) / window,
        items_per_s=items / window,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
    )


async def bench_grpc(
    queries: Sequence[str],
    consultations: Sequence[tuple[str, list[Claim]]],
    corpus_version: str,
    warmup: float,
    window: float,
) -> list[GrpcPoint]:
    env = {"UTIMESH_EVIDENCE_LOG_LEVEL": "WARNING", "UTIMESH_EVIDENCE_DENSE": "off"}
    searches = [(epb.SearchEvidenceRequest(query=q, page_size=K), K) for q in queries]
    groundings = [
        (
            epb.GroundClaimsRequest(
                claims=[claim_to_proto(c) for c in claims], jurisdiction=profile
            ),
            len(claims),
        )
        for profile, claims in consultations
    ]
    async with (
        service_process("evidence", SERVICE_NAME, env=env) as target,
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel,
    ):
        stub = evidence_pb2_grpc.EvidenceServiceStub(channel)

        def search(request: epb.SearchEvidenceRequest, timeout: float) -> Awaitable[Any]:
            return stub.SearchEvidence(request, timeout=timeout)  # type: ignore[no-any-return]

        def ground_call(request: epb.GroundClaimsRequest, timeout: float) -> Awaitable[Any]:
            return stub.GroundClaims(request, timeout=timeout)  # type: ignore[no-any-return]

        def search_ok(index: int, reply: epb.SearchEvidenceResponse) -> bool:
            return bool(reply.hits) and reply.corpus_version == corpus_version

        def ground_ok(index: int, reply: epb.GroundClaimsResponse) -> bool:
            return len(reply.groundings) == groundings[index][1] and all(
                g.support != epb.SUPPORT_LABEL_UNSPECIFIED for g in reply.groundings
            )

        return [
            await run_point(
                "SearchEvidence", search, searches, search_ok, warmup=warmup, window=window
            ),
            await run_point(
                "GroundClaims", ground_call, groundings, ground_ok, warmup=warmup, window=window
            ),
        ]


# --- report -----------------------------------------------------------------------------------


def render(
    meta: dict[str, Any],
    local: Sequence[LocalResult],
    points: Sequence[GrpcPoint],
    quality: RetrievalQuality,
    hybrid: RetrievalQuality | None,
) -> str:
    lines = [
        f"utimesh evidence benchmark - Python {meta['python']}, grpcio {meta['grpcio']}, "
        f"{meta['cpus']} CPUs; corpus {meta['corpus_version']} ({meta['passages']} passages, "
        f"indexed in {meta['index_build_ms']:.0f} ms), {meta['queries']} labelled queries, "
        f"{meta['consultations']} consultations ({meta['claims']} claims)",
        "",
        f"In process, one thread{'':<27}{'ops/s':>10}{'us/op':>9}",
    ]
    lines += [
        f"  {f'{r.name} ({r.unit})':<47}{r.per_second:>10,.0f}{r.mean_us:>9.1f}" for r in local
    ]
    window = points[0].window_s if points else 0.0
    lines += [
        "",
        f"gRPC over loopback, server in its own process (BM25), concurrency {CONCURRENCY}, "
        f"{meta['warmup_s']:g} s warm-up, {window:g} s window",
        f"  {'rpc':<16}{'calls/s':>9}{'items/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}  status",
    ]
    for p in points:
        status = (
            "FAILED " + ", ".join(f"{k}={v}" for k, v in sorted(p.errors.items()))
            if p.failed
            else "ok"
        )
        unit = "hits" if p.rpc == "SearchEvidence" else "claims"
        lines.append(
            f"  {p.rpc:<16}{p.calls_per_s:>9,.0f}{p.items_per_s:>10,.0f}{p.p50_ms:>8.2f}"
            f"{p.p99_ms:>8.2f}{sum(p.errors.values()):>8}  {status} (items = {unit})"
        )
    met = quality.recall_at_k >= RECALL_TARGET
    title = f"Retrieval quality ({meta['queries']} queries)"
    lines += [
        "",
        f"{title:<37}{'bm25':>8}{'bm25+dense':>12}",
        f"  {f'recall@{quality.k}':<35}{quality.recall_at_k:>8.4f}"
        f"{f'{hybrid.recall_at_k:.4f}' if hybrid else 'n/a':>12}",
        f"  {'MRR':<35}{quality.mrr:>8.4f}{f'{hybrid.mrr:.4f}' if hybrid else 'n/a':>12}",
    ]
    if hybrid is None:
        lines.append("  (bm25+dense: the `dense` extra is not installed)")
    lines += [
        "",
        "Targets",
        f"  {'PASS' if met else 'MISS'}  recall@{quality.k} {quality.recall_at_k:.4f}  "
        f"(target >= {RECALL_TARGET:g})",
    ]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--local-seconds", type=float, default=2.0, help="per in-process figure")
    parser.add_argument("--warmup", type=float, default=0.5, help="gRPC warm-up per point")
    parser.add_argument("--window", type=float, default=3.0, help="gRPC window per point")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = parser.parse_args(argv)

    knowledge = load_knowledge()
    started = time.perf_counter()
    corpus, retriever = build_retriever(knowledge)
    build_ms = (time.perf_counter() - started) * 1e3
    labelled = load_queries(QUERIES)
    queries = [q.text for q in labelled]
    consultations = consultation_claims(knowledge)
    n_claims = sum(len(c) for _, c in consultations)

    print(f"quality: {len(labelled)} labelled queries ...", flush=True)
    quality = evaluate(retriever, labelled, K)

    hybrid = None
    if dense_available():
        print("quality: loading all-MiniLM-L6-v2 for the hybrid figures ...", flush=True)
        _, dense_retriever = build_retriever(knowledge, embedder=MiniLMEmbedder())
        hybrid = evaluate(dense_retriever, labelled, K)

    print(f"in process: {args.local_seconds:g} s per figure ...", flush=True)

    def search_pass() -> int:
        for q in queries:
            retriever.search(q, K)
        return len(queries)

    def ground_pass() -> int:
        for profile, claims in consultations:
            ground(claims, corpus, retriever, profile)
        return n_claims

    local = [
        run_bounded("search", "searches", search_pass, args.local_seconds, 0.2),
        run_bounded("ground", "claims", ground_pass, args.local_seconds, 0.2),
    ]

    print(f"gRPC: starting the evidence service, concurrency {CONCURRENCY} ...", flush=True)
    points = asyncio.run(
        bench_grpc(queries, consultations, corpus.version, args.warmup, args.window)
    )

    meta = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "bm25s": metadata.version("bm25s"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "corpus_version": corpus.version,
        "passages": len(corpus.passages),
        "index_build_ms": round(build_ms, 1),
        "retrieval_mode": retriever.mode,
        "queries": len(labelled),
        "consultations": len(consultations),
        "claims": n_claims,
        "warmup_s": args.warmup,
    }
    print()
    print(render(meta, local, points, quality, hybrid))
    document = {
        "meta": meta,
        "in_process": [
            {**asdict(r), "per_second": r.per_second, "mean_us": r.mean_us} for r in local
        ],
        "grpc": [
            {**{k: _finite(v) for k, v in asdict(p).items()}, "failed": p.failed} for p in points
        ],
        "quality": {"k": quality.k, "recall_at_k": quality.recall_at_k, "mrr": quality.mrr},
        "quality_hybrid": (
            {"k": hybrid.k, "recall_at_k": hybrid.recall_at_k, "mrr": hybrid.mrr}
            if hybrid
            else None
        ),
        "targets": [
            {
                "name": f"recall@{K}",
                "value": quality.recall_at_k,
                "target": f">= {RECALL_TARGET:g}",
                "met": quality.recall_at_k >= RECALL_TARGET,
            }
        ],
        "ok": not any(p.failed for p in points),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {args.out}")
    failed = [p for p in points if p.failed]
    if failed:
        print(f"FAILED: {len(failed)} point(s) had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
