"""Throughput and latency of triage: the pure rules engine, and AssessPatient over gRPC.

Run from the repository root with ``python -m tests.bench.bench_triage`` (``make bench``).
It prints a table, writes ``bench-results/triage.json`` and takes about 20 s.

Input: the sample patients shipped with the package (``utimesh/cli/samples/patients.json``),
each assessed with the profile it names. They cover treatment, no-antibiotic and referral paths.

Engine (in this process, one thread, hence one core). Each figure cycles over the samples for a
fixed wall-clock budget after a short warm-up; the clock is read once per pass over the samples.

* ``assess``: ``TriageEngine.assess`` on intakes parsed beforehand (the engine alone);
* ``parse + assess``: ``parse_intake`` from the JSON dicts, then ``assess``;
* ``servicer handler``: what the server does per AssessPatient minus the gRPC stack: decode
  the request bytes, ``TriageServicer.AssessPatient`` (proto -> domain, input checks, engine,
  domain -> proto), encode the response. Its rate bounds the gRPC figure from above.

gRPC. The service runs in its own process (``utimesh serve triage`` via ``service_process``)
on a free loopback port and is used only once it reports SERVING. The client is grpc.aio in this
process: one channel (transparent retries off, so that no failure is hidden), requests built
beforehand, and N tasks that each issue AssessPatient back to back, every call with a deadline.
For each concurrency N there is a warm-up, then a measurement window: a call counts if it
completes inside the window; req/s = counted calls / window; p50/p99 are client-observed
latencies of the counted calls. Server and client CPU use over the window come from /proc and
``time.process_time`` and show which side is saturated; "other CPU" is what the rest of the
machine used meanwhile, and a point where it exceeds a quarter of a core is marked noisy (Linux
only; elsewhere these columns show "-"). Every reply's decision is compared
with the engine's decision computed locally; a wrong decision counts as an error. A point with
any error (of any call, warm-up included) is reported FAILED and the script exits 1.

Reference row: grpc.health.v1 ``Health/Check`` on the same server at concurrency 16, the cost of
a unary call through the grpc.aio stack with an empty handler (the service interceptor skips
health), i.e. the framework's ceiling on this machine.

Targets (PASS/MISS only; a MISS does not change the exit code, machines are noisy):
engine >= 20,000 assessments/s; AssessPatient >= 3,000 req/s at concurrency 16 with p99 < 20 ms.
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
from google.protobuf.internal import api_implementation
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.triage.servicer import SERVICE_NAME, TriageServicer
from utimesh.cli.procs import service_process
from utimesh.codec.clinical import decision_to_proto, intake_to_proto
from utimesh.rules import Intake, TriageEngine, load_knowledge, parse_intake
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench-results" / "triage.json"

CALL_DEADLINE_S = 2.0  # every RPC; far above any healthy latency, so a timeout is an error
CONCURRENCIES = (1, 16, 64)
REFERENCE_CONCURRENCY = 16
# No transparent retries: a call that fails must be seen and counted.
CHANNEL_OPTIONS = (("grpc.enable_retries", 0),)
# Above this, other processes took enough CPU during a window to distort it (2-core machines).
NOISY_OTHER_CPU_PCT = 25.0

ENGINE_TARGET_PER_S = 20_000.0
GRPC_TARGET_CONCURRENCY = 16
GRPC_TARGET_PER_S = 3_000.0
GRPC_TARGET_P99_MS = 20.0


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    case_id: str
    profile: str
    patient: dict[str, Any]
    intake: Intake
    request: tpb.AssessPatientRequest
    expected_decision: int  # utimesh.clinical.v1.Decision, from the local engine


def load_samples(engine: TriageEngine) -> list[Sample]:
    """The packaged sample patients with their request protos and expected decisions."""
    text = (resources.files("utimesh.cli") / "samples" / "patients.json").read_text()
    samples = []
    for case in json.loads(text):
        intake = parse_intake(case["patient"])
        profile = str(case["profile"])
        samples.append(
            Sample(
                case_id=str(case["id"]),
                profile=profile,
                patient=case["patient"],
                intake=intake,
                request=tpb.AssessPatientRequest(intake=intake_to_proto(intake), profile=profile),
                expected_decision=decision_to_proto(engine.assess(intake, profile).decision),
            )
        )
    if not samples:
        raise SystemExit("no sample patients found")
    return samples


# --- engine -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineResult:
    name: str
    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds

    @property
    def mean_us(self) -> float:
        return self.seconds / self.operations * 1e6


def run_bounded(
    name: str, one_pass: Callable[[], int], seconds: float, warmup: float
) -> EngineResult:
    """Call `one_pass` (which does and returns some operations) for `warmup`, then `seconds`."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        one_pass()
    operations = 0
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        operations += one_pass()
    return EngineResult(name, operations, now - start)


def bench_engine(
    engine: TriageEngine, samples: Sequence[Sample], seconds: float
) -> list[EngineResult]:
    parsed = [(s.intake, s.profile) for s in samples]
    raw = [(s.patient, s.profile) for s in samples]
    requests = [s.request.SerializeToString() for s in samples]
    servicer = TriageServicer(engine)
    decode = tpb.AssessPatientRequest.FromString
    assess = engine.assess

    def assess_pass() -> int:
        for intake, profile in parsed:
            assess(intake, profile)
        return len(parsed)

    def parse_assess_pass() -> int:
        for patient, profile in raw:
            assess(parse_intake(patient), profile)
        return len(raw)

    async def handler_pass() -> int:
        for data in requests:
            # The servicer does not use its context for AssessPatient.
            reply = await servicer.AssessPatient(decode(data), None)
            reply.SerializeToString()
        return len(requests)

    loop = asyncio.new_event_loop()
    try:
        return [
            run_bounded("assess (pre-parsed intakes)", assess_pass, seconds, 0.2),
            run_bounded("parse + assess (from dicts)", parse_assess_pass, seconds / 2, 0.2),
            run_bounded(
                "servicer handler, no gRPC",
                lambda: loop.run_until_complete(handler_pass()),
                seconds / 2,
                0.2,
            ),
        ]
    finally:
        loop.close()


# --- gRPC -------------------------------------------------------------------------------------


@dataclass
class GrpcPoint:
    rpc: str
    concurrency: int
    window_s: float
    calls: int = 0  # completed successfully inside the window
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count, whole run
    per_second: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    server_cpu_pct: float | None = None  # of one core, over the window
    server_cpu_us_per_call: float | None = None
    client_cpu_pct: float | None = None
    # Everything else running on the machine (other processes), in % of one core: the noise.
    other_cpu_pct: float | None = None

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.calls == 0

    @property
    def noisy(self) -> bool:
        return self.other_cpu_pct is not None and self.other_cpu_pct > NOISY_OTHER_CPU_PCT


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted data, q in [0, 1]."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def find_server_pid() -> int | None:
    """The pid of our `utimesh serve triage` child, from /proc (None where there is no /proc)."""
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
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"serve" in cmdline and b"triage" in cmdline:
            return int(entry)
    return None


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of `pid`, all threads included."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU time spent busy by all processes on the machine (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait; guest time is already in user
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Snapshot:
    wall: float
    server_cpu: float | None
    client_cpu: float
    machine_busy: float | None


def _snapshot(server_pid: int | None) -> _Snapshot:
    return _Snapshot(
        time.perf_counter(),
        process_cpu_seconds(server_pid),
        time.process_time(),
        machine_busy_seconds(),
    )


Call = Callable[[Any, float], Awaitable[Any]]
Accept = Callable[[int, Any], bool]  # (request index, reply) -> reply is right


async def run_point(
    rpc: str,
    call: Call,
    requests: Sequence[Any],
    accept: Accept,
    concurrency: int,
    *,
    warmup: float,
    window: float,
    server_pid: int | None,
) -> GrpcPoint:
    """`concurrency` closed-loop callers for `warmup` + `window` seconds; stats of the window."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter() + warmup
    end = start + window
    snapshots: list[_Snapshot] = []
    # CPU counters are read at the window edges by timer callbacks, while the load keeps running.
    loop.call_later(warmup, lambda: snapshots.append(_snapshot(server_pid)))
    loop.call_later(warmup + window, lambda: snapshots.append(_snapshot(server_pid)))

    async def caller(offset: int) -> None:
        n = len(requests)
        i = offset
        while (started := time.perf_counter()) < end:
            index = i % n
            i += 1
            try:
                reply = await call(requests[index], CALL_DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            finished = time.perf_counter()
            if not accept(index, reply):
                errors["WRONG_REPLY"] += 1
            elif start <= finished < end:
                latencies.append(finished - started)

    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    # The end-of-window callback is due before the last caller's loop condition fails.
    if len(snapshots) < 2:
        snapshots.append(_snapshot(server_pid))
    latencies.sort()
    point = GrpcPoint(
        rpc=rpc,
        concurrency=concurrency,
        window_s=window,
        calls=len(latencies),
        errors=dict(errors),
        per_second=len(latencies) / window,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        max_ms=latencies[-1] * 1e3 if latencies else math.nan,
    )
    first, last = snapshots[0], snapshots[-1]
    wall = last.wall - first.wall
    if wall > 0:
        point.client_cpu_pct = (last.client_cpu - first.client_cpu) / wall * 100
        if first.server_cpu is not None and last.server_cpu is not None:
            server_cpu = last.server_cpu - first.server_cpu
            point.server_cpu_pct = server_cpu / wall * 100
            if point.calls:
                point.server_cpu_us_per_call = server_cpu / wall * window / point.calls * 1e6
            if first.machine_busy is not None and last.machine_busy is not None:
                busy = (last.machine_busy - first.machine_busy) / wall * 100
                point.other_cpu_pct = max(0.0, busy - point.server_cpu_pct - point.client_cpu_pct)
    return point


async def bench_grpc(samples: Sequence[Sample], warmup: float, window: float) -> list[GrpcPoint]:
    # Keep the server's stderr to warnings (failed calls), not its start/stop events.
    os.environ.setdefault("UTIMESH_TRIAGE_LOG_LEVEL", "WARNING")
    requests = [s.request for s in samples]
    expected = [s.expected_decision for s in samples]
    async with service_process("triage", SERVICE_NAME) as target:
        server_pid = find_server_pid()
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            triage = triage_pb2_grpc.TriageServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            def assess(request: tpb.AssessPatientRequest, timeout: float) -> Awaitable[Any]:
                return triage.AssessPatient(request, timeout=timeout)  # type: ignore[no-any-return]

            def check(request: health_pb2.HealthCheckRequest, timeout: float) -> Awaitable[Any]:
                return health.Check(request, timeout=timeout)  # type: ignore[no-any-return]

            def right_decision(index: int, reply: tpb.AssessPatientResponse) -> bool:
                return reply.decision == expected[index]

            def serving(index: int, reply: health_pb2.HealthCheckResponse) -> bool:
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            points = [
                await run_point(
                    "AssessPatient",
                    assess,
                    requests,
                    right_decision,
                    c,
                    warmup=warmup,
                    window=window,
                    server_pid=server_pid,
                )
                for c in CONCURRENCIES
            ]
            points.append(
                await run_point(
                    "Health/Check (reference)",
                    check,
                    [health_pb2.HealthCheckRequest(service=SERVICE_NAME)],
                    serving,
                    REFERENCE_CONCURRENCY,
                    warmup=warmup,
                    window=window,
                    server_pid=server_pid,
                )
            )
    return points


# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetCheck:
    name: str
    value: float
    target: str
    met: bool


def check_targets(engine: Sequence[EngineResult], points: Sequence[GrpcPoint]) -> list[TargetCheck]:
    checks = [
        TargetCheck(
            "engine assessments/s",
            engine[0].per_second,
            f">= {ENGINE_TARGET_PER_S:,.0f}",
            engine[0].per_second >= ENGINE_TARGET_PER_S,
        )
    ]
    point = next(
        p for p in points if p.rpc == "AssessPatient" and p.concurrency == GRPC_TARGET_CONCURRENCY
    )
    ok = not point.failed
    checks.append(
        TargetCheck(
            f"gRPC req/s at concurrency {point.concurrency}",
            point.per_second,
            f">= {GRPC_TARGET_PER_S:,.0f}",
            ok and point.per_second >= GRPC_TARGET_PER_S,
        )
    )
    checks.append(
        TargetCheck(
            f"gRPC p99 ms at concurrency {point.concurrency}",
            point.p99_ms,
            f"< {GRPC_TARGET_P99_MS:g}",
            ok and point.p99_ms < GRPC_TARGET_P99_MS,
        )
    )
    return checks


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(
    meta: dict[str, Any],
    engine: Sequence[EngineResult],
    points: Sequence[GrpcPoint],
    checks: Sequence[TargetCheck],
) -> str:
    lines = [
        f"utimesh triage benchmark - Python {meta['python']}, grpcio {meta['grpcio']}, "
        f"protobuf {meta['protobuf']} ({meta['protobuf_impl']}), {meta['cpus']} CPUs, "
        f"{meta['samples']} sample patients",
        "",
        f"Engine, one core{'':<28}{'ops/s':>10}{'us/op':>9}",
    ]
    lines += [f"  {r.name:<42}{r.per_second:>10,.0f}{r.mean_us:>9.1f}" for r in engine]
    window = points[0].window_s if points else 0.0
    lines += [
        "",
        f"gRPC over loopback, server in its own process ({meta['warmup_s']:g} s warm-up, {window:g} s window, "
        f"deadline {CALL_DEADLINE_S:g} s)",
        f"  {'rpc':<26}{'conc':>5}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>8}"
        f"{'srv CPU':>9}{'srv us/req':>11}{'cli CPU':>9}{'other CPU':>10}  status",
    ]
    for p in points:
        errors = sum(p.errors.values())
        status = (
            "FAILED " + ", ".join(f"{k}={v}" for k, v in sorted(p.errors.items()))
            if p.failed
            else "ok, noisy"
            if p.noisy
            else "ok"
        )
        lines.append(
            f"  {p.rpc:<26}{p.concurrency:>5}{p.per_second:>9,.0f}{p.p50_ms:>8.2f}{p.p99_ms:>8.2f}"
            f"{p.max_ms:>8.2f}{errors:>8}{_opt(p.server_cpu_pct, '.0f') + '%':>9}"
            f"{_opt(p.server_cpu_us_per_call, '.0f'):>11}{_opt(p.client_cpu_pct, '.0f') + '%':>9}"
            f"{_opt(p.other_cpu_pct, '.0f') + '%':>10}  {status}"
        )
    if any(p.noisy for p in points):
        lines.append(
            f"  noisy: other processes used > {NOISY_OTHER_CPU_PCT:g}% of a core during the window;"
            " rates are low and latencies high for reasons outside utimesh. Re-run on a quiet machine."
        )
    lines += ["", "Targets"]
    lines += [
        f"  {'PASS' if c.met else 'MISS'}  {c.name:<34}{c.value:>10,.2f}  (target {c.target})"
        for c in checks
    ]
    return "\n".join(lines)


def environment(samples: int, warmup: float) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
        "protobuf_impl": api_implementation.Type(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "samples": samples,
        "warmup_s": warmup,
    }


def _finite(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(
    path: Path,
    meta: dict[str, Any],
    engine: Sequence[EngineResult],
    points: Sequence[GrpcPoint],
    checks: Sequence[TargetCheck],
) -> None:
    document = {
        "meta": meta,
        "engine": [
            {
                "name": r.name,
                "operations": r.operations,
                "seconds": r.seconds,
                "per_second": r.per_second,
                "mean_us": r.mean_us,
            }
            for r in engine
        ],
        "grpc": [
            {**{k: _finite(v) for k, v in asdict(p).items()}, "failed": p.failed, "noisy": p.noisy}
            for p in points
        ],
        "targets": [asdict(c) for c in checks],
        "ok": not any(p.failed for p in points),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--engine-seconds", type=float, default=2.0, help="engine budget (default 2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="gRPC warm-up per point (default 0.5)"
    )
    parser.add_argument(
        "--window", type=float, default=3.0, help="gRPC window per point (default 3)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)

    engine = TriageEngine(load_knowledge())
    samples = load_samples(engine)
    meta = environment(len(samples), args.warmup)
    print(f"engine: {len(samples)} sample patients, {args.engine_seconds:g} s ...", flush=True)
    engine_results = bench_engine(engine, samples, args.engine_seconds)
    print(
        f"gRPC: starting the triage service, concurrency {', '.join(map(str, CONCURRENCIES))} ...",
        flush=True,
    )
    points = asyncio.run(bench_grpc(samples, args.warmup, args.window))
    checks = check_targets(engine_results, points)

    print()
    print(render(meta, engine_results, points, checks))
    write_json(args.out, meta, engine_results, points, checks)
    print(f"\nresults written to {args.out}")
    failed = [p for p in points if p.failed]
    if failed:
        print(f"FAILED: {len(failed)} point(s) had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
