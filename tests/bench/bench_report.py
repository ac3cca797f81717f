"""Throughput of the report service: rendering and answering in this process, and RenderReport
over gRPC.

Run from the repository root with ``python -m tests.bench.bench_report`` (``make bench``).
It prints a table, writes ``bench-results/report.json`` and takes about 10 s. Loopback only.

Input: the sample patients shipped with the package (``utimesh/cli/samples/patients.json``),
each with the profile it names, run once through the in-process mesh (``tests/consult/mesh.py``,
offline agents), then given test evidence groundings (``tests/report/support.py``: one cited
passage per claim, one flagged claim) so that every report has a full evidence table whether or
not the evidence service ran. Questions: a fixed list covering every intent of the answerer
(why, why not, evidence search, dose, interactions, follow-up, refusals), asked of every
consultation.

In process (one thread, one core), each for a fixed wall-clock budget after a short warm-up:

* ``render``: ``render(consultation, corpus_version)``, the markdown, its SHA-256 and sections;
* ``answer (report rendered beforehand)``: ``answer(...)`` alone;
* ``AnswerQuestion handler, no gRPC``: what the server does per AnswerQuestion minus the gRPC
  stack: decode the request bytes, render, answer, encode the response.

gRPC. The service runs in its own process (``utimesh serve report`` via ``service_process``) on
a free loopback port and is used once it reports SERVING. The client is grpc.aio in this
process: one channel (transparent retries off), requests built beforehand, N tasks that each
issue RenderReport back to back with a deadline; after a warm-up, a call counts if it completes
inside the window; req/s = counted calls / window; p50/p99 are client-observed latencies. Every
reply's SHA-256 is compared with the local render's: a different report is an error. A point
with any error is reported FAILED and the script exits 1. Server CPU comes from /proc (Linux).

Targets (PASS/MISS only; a MISS does not change the exit code, machines are noisy):
render >= 1,000 reports/s in process; RenderReport >= 300 req/s at concurrency 16.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import grpc

from services.report.domain.answer import Vocabulary, answer
from services.report.domain.render import render
from services.report.servicer import SERVICE_NAME, ReportServicer
from tests.bench.bench_triage import (
    CHANNEL_OPTIONS,
    EngineResult,
    GrpcPoint,
    environment,
    run_bounded,
    run_point,
)
from tests.consult.mesh import running_mesh
from tests.report.support import with_groundings
from utimesh.cli.procs import service_process
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.report.v1 import report_pb2 as rpb
from utimesh.report.v1 import report_pb2_grpc
from utimesh.rules import Knowledge, load_knowledge, parse_intake

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench-results" / "report.json"
CORPUS = "bench-corpus"
CONCURRENCIES = (1, 16)
TARGET_CONCURRENCY = 16
RENDER_TARGET_PER_S = 1_000.0
GRPC_TARGET_PER_S = 300.0

QUESTIONS = (
    "Why this antibiotic?",
    "Why not trimethoprim?",
    "Why not nitrofurantoin?",
    "Which source says five days?",
    "What is the dose?",
    "How long is the course?",
    "Does it interact with lisinopril?",
    "When should she come back?",
    "Why was she referred?",
    "What should I monitor?",
    "Which rules fired?",
    "Was this fully reviewed?",
    "What if she is pregnant?",
    "Can I give ciprofloxacin instead?",
    "What's the weather tomorrow?",
)


async def consultations(knowledge: Knowledge) -> list[cpb.Consultation]:
    """The packaged sample patients through the in-process mesh, with test groundings."""
    text = (resources.files("utimesh.cli") / "samples" / "patients.json").read_text()
    out = []
    async with running_mesh(knowledge) as mesh:
        for case in json.loads(text):
            request = cpb.CreateConsultationRequest(
                intake=intake_to_proto(parse_intake(case["patient"])), profile=case["profile"]
            )
            reply = await mesh.consult.CreateConsultation(request, timeout=30)
            out.append(with_groundings(reply.consultation))
    if not out:
        raise SystemExit("no sample patients found")
    return out


def bench_in_process(
    knowledge: Knowledge, items: Sequence[cpb.Consultation], seconds: float
) -> list[EngineResult]:
    vocabulary = Vocabulary.from_knowledge(knowledge)
    rendered = [render(c, CORPUS) for c in items]
    pairs = [(c, r, q) for c, r in zip(items, rendered, strict=True) for q in QUESTIONS]
    requests = [
        rpb.AnswerQuestionRequest(consultation=c, question=q).SerializeToString()
        for c in items
        for q in QUESTIONS
    ]
    servicer = ReportServicer(knowledge)
    decode = rpb.AnswerQuestionRequest.FromString

    def render_pass() -> int:
        for c in items:
            render(c, CORPUS)
        return len(items)

    def answer_pass() -> int:
        for c, r, q in pairs:
            answer(c, r, q, vocabulary=vocabulary)
        return len(pairs)

    async def handler_pass() -> int:
        for data in requests:
            # The servicer uses its context only when a model is configured.
            reply = await servicer.AnswerQuestion(decode(data), None)
            reply.SerializeToString()
        return len(requests)

    loop = asyncio.new_event_loop()
    try:
        return [
            run_bounded("render", render_pass, seconds, 0.2),
            run_bounded("answer (report rendered beforehand)", answer_pass, seconds, 0.2),
            run_bounded(
                "AnswerQuestion handler, no gRPC",
                lambda: loop.run_until_complete(handler_pass()),
                seconds / 2,
                0.2,
            ),
        ]
    finally:
        loop.close()


def find_server_pid() -> int | None:
    """The pid of our `utimesh serve report` child, from /proc (None where there is none)."""
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me and b"report" in cmdline:
            return int(entry)
    return None


async def bench_grpc(
    items: Sequence[cpb.Consultation], warmup: float, window: float
) -> list[GrpcPoint]:
    os.environ.setdefault("UTIMESH_REPORT_LOG_LEVEL", "WARNING")
    requests = [rpb.RenderReportRequest(consultation=c, corpus_version=CORPUS) for c in items]
    expected = [render(c, CORPUS).sha256 for c in items]
    async with service_process("report", SERVICE_NAME) as target:
        server_pid = find_server_pid()
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = report_pb2_grpc.ReportServiceStub(channel)

            def call(request: rpb.RenderReportRequest, timeout: float) -> Awaitable[Any]:
                return stub.RenderReport(request, timeout=timeout)  # type: ignore[no-any-return]

            def same_report(index: int, reply: rpb.RenderReportResponse) -> bool:
                return reply.sha256 == expected[index]

            return [
                await run_point(
                    "RenderReport",
                    call,
                    requests,
                    same_report,
                    c,
                    warmup=warmup,
                    window=window,
                    server_pid=server_pid,
                )
                for c in CONCURRENCIES
            ]


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(
    meta: dict[str, Any],
    local: Sequence[EngineResult],
    points: Sequence[GrpcPoint],
    checks: Sequence[tuple[str, float, str, bool]],
) -> str:
    lines = [
        f"utimesh report benchmark - Python {meta['python']}, grpcio {meta['grpcio']}, "
        f"protobuf {meta['protobuf']} ({meta['protobuf_impl']}), {meta['cpus']} CPUs, "
        f"{meta['samples']} consultations x {len(QUESTIONS)} questions, "
        f"report {meta['report_bytes_mean']:,.0f} bytes on average",
        "",
        f"In process, one core{'':<25}{'ops/s':>10}{'us/op':>9}",
    ]
    lines += [f"  {r.name:<42}{r.per_second:>10,.0f}{r.mean_us:>9.1f}" for r in local]
    lines += [
        "",
        f"gRPC over loopback, server in its own process ({meta['warmup_s']:g} s warm-up, "
        f"{meta['window_s']:g} s window)",
        f"  {'rpc':<16}{'conc':>5}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'errors':>8}{'srv CPU':>9}{'srv us/req':>11}  status",
    ]
    for p in points:
        status = (
            "FAILED " + ", ".join(f"{k}={v}" for k, v in sorted(p.errors.items()))
            if p.failed
            else "ok"
        )
        lines.append(
            f"  {p.rpc:<16}{p.concurrency:>5}{p.per_second:>9,.0f}{p.p50_ms:>8.2f}"
            f"{p.p99_ms:>8.2f}{p.max_ms:>8.2f}{sum(p.errors.values()):>8}"
            f"{_opt(p.server_cpu_pct, '.0f') + '%':>9}{_opt(p.server_cpu_us_per_call, '.0f'):>11}"
            f"  {status}"
        )
    lines += ["", "Targets"]
    lines += [
        f"  {'PASS' if met else 'MISS'}  {name:<36}{value:>10,.1f}  (target {target})"
        for name, value, target, met in checks
    ]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="in-process budget per row")
    parser.add_argument("--warmup", type=float, default=0.5, help="gRPC warm-up per point")
    parser.add_argument("--window", type=float, default=2.0, help="gRPC window per point")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results")
    args = parser.parse_args(argv)

    knowledge = load_knowledge()
    print("consultations: sample patients through the in-process mesh ...", flush=True)
    items = asyncio.run(consultations(knowledge))
    meta = environment(len(items), args.warmup)
    meta["window_s"] = args.window
    meta["report_bytes_mean"] = sum(len(render(c, CORPUS).markdown) for c in items) / len(items)
    print(f"in process: {args.seconds:g} s per row ...", flush=True)
    local = bench_in_process(knowledge, items, args.seconds)
    print(f"gRPC: RenderReport at concurrency {', '.join(map(str, CONCURRENCIES))} ...", flush=True)
    points = asyncio.run(bench_grpc(items, args.warmup, args.window))
    target_point = next(p for p in points if p.concurrency == TARGET_CONCURRENCY)
    checks = [
        (
            "render reports/s (in process)",
            local[0].per_second,
            f">= {RENDER_TARGET_PER_S:,.0f}",
            local[0].per_second >= RENDER_TARGET_PER_S,
        ),
        (
            f"RenderReport req/s at concurrency {TARGET_CONCURRENCY}",
            target_point.per_second,
            f">= {GRPC_TARGET_PER_S:,.0f}",
            not target_point.failed and target_point.per_second >= GRPC_TARGET_PER_S,
        ),
    ]
    print()
    print(table(meta, local, points, checks))
    document = {
        "meta": meta,
        "in_process": [
            {
                "name": r.name,
                "operations": r.operations,
                "seconds": r.seconds,
                "per_second": r.per_second,
                "mean_us": r.mean_us,
            }
            for r in local
        ],
        "grpc": [
            {**{k: _finite(v) for k, v in asdict(p).items()}, "failed": p.failed} for p in points
        ],
        "targets": [{"name": n, "value": v, "target": t, "met": m} for n, v, t, m in checks],
        "ok": not any(p.failed for p in points),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults written to {args.out}")
    if any(p.failed for p in points):
        print("FAILED: a gRPC point had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
