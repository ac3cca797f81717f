"""Throughput and latency of whole consultations through the mesh, offline and with a model.

Run from the repository root with ``python -m tests.bench.bench_consult`` (``make bench``).
It prints a table, writes ``bench-results/consult.json`` and takes about 40 s. Loopback only.

Input: the sample patients shipped with the package (``utimesh/cli/samples/patients.json``),
each with the profile it names, cycled in order. Requests are built beforehand; each call gets a
fresh ``request_id`` (a copy of the prepared request with the id set), so that no consultation
can be answered from an idempotency cache.

Mesh. triage, doctor, pharmacist and consult run as separate processes
(``local_consult_services``, i.e. ``utimesh serve NAME`` each, plaintext on free loopback ports;
any other service it starts is run and measured too) and are used once consult is SERVING.
The client is grpc.aio in this process: one channel to consult (transparent retries off), N
tasks that each issue CreateConsultation back to back, every call with a deadline. Per
concurrency N: a warm-up, then a measurement window; a call counts if it completes inside the
window; consultations/s = counted calls / window; p50/p99 are client-observed latencies of the
counted calls. Inside the mesh, one offline
deliberation is 3 RPCs when triage decides not to treat (AssessPatient, ProposePlan, ReviewPlan)
and 5 when it treats (+ ValidatePlan before the review and again to finalise); consult then
grounds the claims (evidence) and renders the report (report) when those services run.

CPU (Linux only; elsewhere "-"): user + system time of the service processes over the
window from /proc, as % of one core and per counted consultation, also split by service; the
client's CPU (``time.process_time``); and "other CPU", the rest of the machine meanwhile (a
point where it exceeds a quarter of a core is marked noisy).

1. Offline: doctor and pharmacist use their offline rules (no model), concurrency 16 and 64.
   Every reply is checked: decision equal to the local engine's, outcome AGREED when triage
   treats and NOT_TREATED otherwise, reviewed by all (no missing review), request id echoed.

2. With a model answering after a fixed delay D (50 ms). A fake OpenAI-compatible server
   (``tests/fakes/openai_server.py``) answers every chat completion after D with a valid
   structured answer: the doctor picks triage's first eligible option (or none when triage does
   not treat), the pharmacist approves. It runs in its own process, started by this script: in
   this process it would share the client's event loop and GIL, and its HTTP work would show up
   as mesh latency; its CPU is measured and reported apart ("model CPU"). The services are
   started with UTIMESH_LLM_{DOCTOR,PHARMACIST}_{PROVIDER,BASE_URL,MODEL} pointing at it. Each
   consultation must agree (or not treat) in round 1 with exactly 2 model calls, which are
   sequential (doctor proposes, then pharmacist reviews). Reported at concurrency 1 and 16:
   overhead = latency - model calls x D per consultation (its p50 and p99), i.e. the mesh's own
   cost: gRPC hops, orchestration, prompt building, the model client and its HTTP round trips.
   Reference row: one doctor model call made directly from this process with
   ``OpenAICompatibleLLM.generate`` (concurrency 1): its latency - D is the model client's own
   share of the overhead, per call.

A point with any error (of any call, warm-up included: an RPC error, a wrong decision, an
unexpected outcome) is reported FAILED and the script exits 1.

Target (PASS/MISS only; a MISS does not change the exit code, machines are noisy):
offline >= 100 consultations/s, at each measured concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import grpc

from mesh.stack import GRPC_NAMES as SERVICES
from services.doctor.domain.model_io import DoctorModelOutput, user_message
from tests.bench.bench_triage import (
    CHANNEL_OPTIONS,
    NOISY_OTHER_CPU_PCT,
    environment,
    machine_busy_seconds,
    percentile,
    process_cpu_seconds,
)
from tests.fakes.openai_server import ErrorReply, FakeOpenAI, ReplyLike, delayed, reply
from utimesh.agents.models import CaseContext
from utimesh.cli.procs import local_consult_services
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import decision_to_proto, intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.llm import ModelProfile, OpenAICompatibleLLM, load_prompt
from utimesh.rules import TriageEngine, load_knowledge, parse_intake

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench-results" / "consult.json"

CALL_DEADLINE_S = 5.0  # every RPC; far above any healthy latency, so a timeout is an error
OFFLINE_CONCURRENCIES = (16, 64)
MODEL_CONCURRENCIES = (1, 16)
MODEL_DELAY_S = 0.050
MODEL_CALLS_ROUND_1 = 2  # doctor proposes, pharmacist reviews: sequential
DOCTOR_MODEL = "bench-doctor"
PHARMACIST_MODEL = "bench-pharmacist"
FAKE_SERVER_FLAG = "--fake-model-server"  # internal: this script as the fake model's process

TARGET_PER_S = 100.0


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    case_id: str
    context: CaseContext  # intake and the local engine's assessment
    request: cpb.CreateConsultationRequest  # without request_id
    expected_decision: int  # utimesh.clinical.v1.Decision
    expected_outcome: int  # utimesh.consult.v1.Outcome


def load_samples(engine: TriageEngine) -> list[Sample]:
    """The packaged sample patients with their requests and expected results."""
    text = (resources.files("utimesh.cli") / "samples" / "patients.json").read_text()
    samples = []
    for case in json.loads(text):
        intake = parse_intake(case["patient"])
        profile = str(case["profile"])
        assessment = engine.assess(intake, profile)
        decision = decision_to_proto(assessment.decision)
        samples.append(
            Sample(
                case_id=str(case["id"]),
                context=CaseContext(intake=intake, triage=assessment),
                request=cpb.CreateConsultationRequest(
                    intake=intake_to_proto(intake), profile=profile
                ),
                expected_decision=decision,
                expected_outcome=cpb.OUTCOME_AGREED
                if decision == pb.DECISION_RECOMMEND_TREATMENT
                else cpb.OUTCOME_NOT_TREATED,
            )
        )
    if not samples:
        raise SystemExit("no sample patients found")
    return samples


# --- the fake model (its own process) -----------------------------------------------------------


def doctor_answer(user: str) -> dict[str, Any]:
    """A valid doctor answer for the case in `user` (doctor_propose's JSON message): triage's
    first eligible option when it treats, no regimen otherwise; claims cite the rules fired."""
    case = json.loads(user)
    triage = case["triage"]
    regimen = None
    if triage["decision"] == "recommend_treatment" and case["options"]:
        option = case["options"][0]
        regimen = {
            "option": option["option"],
            "drug": option["drug"],
            "dose": option["dose"],
            "dose_form": option["dose_form"],
            "route": option["route"],
            "frequency": option["frequency"],
            "duration_amount": option["duration"]["amount"],
            "duration_unit": option["duration"]["unit"],
        }
    rule_ids = [hit["rule_id"] for hit in triage["rules_fired"]]
    return {
        "summary": "Adult patient with urinary symptoms; see the triage result.",
        "differential": [
            {"condition": "Acute cystitis", "likelihood": "likely", "reasons": ["symptoms"]}
        ],
        "regimen": regimen,
        "rationale": "Follows the triage decision and its first eligible option.",
        "claims": [
            {
                "text": "The triage rules support this plan.",
                "kind": "diagnosis",
                "rule_ids": rule_ids[:3],
                "facts": ["symptoms.dysuria"],
            }
        ],
        "referral_rationale": "",
        "safety_netting": ["Return if fever, flank pain or no improvement in 48 hours."],
        "concern_responses": [],
    }


PHARMACIST_ANSWER: dict[str, Any] = {
    "verdict": "approve",
    "concerns": [],
    "monitoring": [],
    "counselling": ["Complete the course."],
}


def model_responder(delay_s: float) -> Callable[[dict[str, Any]], ReplyLike]:
    def respond(request: dict[str, Any]) -> ReplyLike:
        if request["model"] == DOCTOR_MODEL:
            return delayed(delay_s, reply(doctor_answer(request["messages"][-1]["content"])))
        if request["model"] == PHARMACIST_MODEL:
            return delayed(delay_s, reply(PHARMACIST_ANSWER))
        return ErrorReply(404, f"unknown model {request['model']!r}")

    return respond


async def serve_fake_model(delay_s: float) -> None:
    """The fake model's process: print the base URL, answer until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with FakeOpenAI(models=(DOCTOR_MODEL, PHARMACIST_MODEL)) as fake:
        fake.responder = model_responder(delay_s)

        async def forget_requests() -> None:  # the fake records every request; keep it small
            while True:
                await asyncio.sleep(1.0)
                fake.requests.clear()
                fake.headers.clear()

        trim = asyncio.create_task(forget_requests())
        print(fake.base_url, flush=True)
        await stop.wait()
        trim.cancel()


@dataclass(frozen=True)
class FakeModel:
    base_url: str
    pid: int


@contextlib.asynccontextmanager
async def fake_model_process(delay_s: float, limit_s: float = 20.0) -> AsyncIterator[FakeModel]:
    """Run this script as the fake model server in a child process; yield its URL and pid."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.bench_consult",
        FAKE_SERVER_FLAG,
        "--delay",
        str(delay_s),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), limit_s)
        base_url = line.decode().strip()
        if not base_url.startswith("http://"):
            raise RuntimeError(f"the fake model server did not start (said {base_url!r})")
        yield FakeModel(base_url, proc.pid)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def model_environment(base_url: str) -> dict[str, str]:
    """UTIMESH_LLM_* overrides pointing doctor and pharmacist at the fake model."""
    env = {}
    for agent, model in (("DOCTOR", DOCTOR_MODEL), ("PHARMACIST", PHARMACIST_MODEL)):
        env[f"UTIMESH_LLM_{agent}_PROVIDER"] = "openai-compatible"
        env[f"UTIMESH_LLM_{agent}_BASE_URL"] = base_url
        env[f"UTIMESH_LLM_{agent}_MODEL"] = model
    return env


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ (children started meanwhile inherit them), then restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# --- CPU --------------------------------------------------------------------------------------


def find_service_pids() -> dict[str, int]:
    """Our `utimesh serve NAME` children by service name, from /proc (empty without /proc)."""
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    found: dict[str, int] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != me or "serve" not in argv:
            continue
        position = argv.index("serve") + 1
        if position < len(argv) and argv[position] in SERVICES:
            found[argv[position]] = int(entry)
    return {name: found[name] for name in SERVICES if name in found}


@dataclass
class _Snapshot:
    wall: float
    services: dict[str, float | None]
    model: float | None
    client: float
    machine_busy: float | None


def _snapshot(pids: Mapping[str, int], model_pid: int | None) -> _Snapshot:
    return _Snapshot(
        time.perf_counter(),
        {name: process_cpu_seconds(pid) for name, pid in pids.items()},
        process_cpu_seconds(model_pid),
        time.process_time(),
        machine_busy_seconds(),
    )


# --- load -------------------------------------------------------------------------------------


Check = Callable[[Sample, cpb.Consultation, str], str | None]  # -> error label, None if right


def check_offline(sample: Sample, c: cpb.Consultation, request_id: str) -> str | None:
    if c.request_id != request_id:
        return "WRONG_REQUEST_ID"
    if c.decision != sample.expected_decision:
        return "WRONG_DECISION"
    if c.outcome != sample.expected_outcome:
        return cpb.Outcome.Name(c.outcome)
    if c.needs_prescriber_review or c.missing_reviews:
        return "NOT_FULLY_REVIEWED"
    return None


def check_with_model(sample: Sample, c: cpb.Consultation, request_id: str) -> str | None:
    if (problem := check_offline(sample, c, request_id)) is not None:
        return problem
    if c.rounds != 1:
        return f"ROUNDS_{c.rounds}"
    if c.usage.model_calls != MODEL_CALLS_ROUND_1:
        return f"MODEL_CALLS_{c.usage.model_calls}"
    return None


@dataclass
class Point:
    scenario: str  # "offline" | "model"
    concurrency: int
    window_s: float
    calls: int = 0  # completed successfully inside the window
    errors: dict[str, int] = field(default_factory=dict)  # label -> count, whole run
    per_second: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    outcomes: dict[str, int] = field(default_factory=dict)  # of the counted calls
    # Model scenario: model calls per counted consultation and latency - calls x D.
    model_delay_ms: float | None = None
    model_calls_per_consultation: float | None = None
    overhead_p50_ms: float | None = None
    overhead_p99_ms: float | None = None
    # CPU over the window, % of one core; per consultation in ms.
    server_cpu_pct: float | None = None  # the service processes together
    server_cpu_ms_per_consultation: float | None = None
    server_cpu_ms_by_service: dict[str, float] = field(default_factory=dict)
    model_cpu_pct: float | None = None  # the fake model's process
    client_cpu_pct: float | None = None
    other_cpu_pct: float | None = None

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.calls == 0

    @property
    def noisy(self) -> bool:
        return self.other_cpu_pct is not None and self.other_cpu_pct > NOISY_OTHER_CPU_PCT


async def run_point(
    scenario: str,
    stub: consult_pb2_grpc.ConsultationServiceStub,
    samples: Sequence[Sample],
    check: Check,
    concurrency: int,
    *,
    warmup: float,
    window: float,
    pids: Mapping[str, int],
    model_pid: int | None = None,
    model_delay_s: float | None = None,
) -> Point:
    """`concurrency` closed-loop callers for `warmup` + `window` seconds; stats of the window."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    overheads: list[float] = []
    model_calls = 0
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    start = time.perf_counter() + warmup
    end = start + window
    snapshots: list[_Snapshot] = []
    # CPU counters are read at the window edges by timer callbacks, while the load keeps running.
    loop.call_later(warmup, lambda: snapshots.append(_snapshot(pids, model_pid)))
    loop.call_later(warmup + window, lambda: snapshots.append(_snapshot(pids, model_pid)))
    serial = iter(range(sys.maxsize))

    async def caller(offset: int) -> None:
        nonlocal model_calls
        n = len(samples)
        i = offset
        while (started := time.perf_counter()) < end:
            sample = samples[i % n]
            i += 1
            request = cpb.CreateConsultationRequest()
            request.CopyFrom(sample.request)
            request.request_id = f"bench-{scenario}-{concurrency}-{next(serial)}"
            try:
                response = await stub.CreateConsultation(request, timeout=CALL_DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            finished = time.perf_counter()
            c = response.consultation
            if (problem := check(sample, c, request.request_id)) is not None:
                errors[problem] += 1
            elif start <= finished < end:
                latency = finished - started
                latencies.append(latency)
                outcomes[cpb.Outcome.Name(c.outcome).removeprefix("OUTCOME_")] += 1
                if model_delay_s is not None:
                    model_calls += c.usage.model_calls
                    overheads.append(latency - c.usage.model_calls * model_delay_s)

    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    # The end-of-window callback is due before the last caller's loop condition fails.
    if len(snapshots) < 2:
        snapshots.append(_snapshot(pids, model_pid))
    latencies.sort()
    overheads.sort()
    point = Point(
        scenario=scenario,
        concurrency=concurrency,
        window_s=window,
        calls=len(latencies),
        errors=dict(errors),
        per_second=len(latencies) / window,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        max_ms=latencies[-1] * 1e3 if latencies else math.nan,
        outcomes=dict(sorted(outcomes.items())),
    )
    if model_delay_s is not None:
        point.model_delay_ms = model_delay_s * 1e3
        if latencies:
            point.model_calls_per_consultation = model_calls / len(latencies)
            point.overhead_p50_ms = percentile(overheads, 0.50) * 1e3
            point.overhead_p99_ms = percentile(overheads, 0.99) * 1e3
    _cpu(point, snapshots[0], snapshots[-1])
    return point


def _cpu(point: Point, first: _Snapshot, last: _Snapshot) -> None:
    wall = last.wall - first.wall
    if wall <= 0:
        return
    point.client_cpu_pct = (last.client - first.client) / wall * 100
    used = {
        name: after - before
        for name, after in last.services.items()
        if after is not None and (before := first.services.get(name)) is not None
    }
    if not used or len(used) != len(first.services):
        return  # a service could not be measured: no partial sums
    server = sum(used.values())
    point.server_cpu_pct = server / wall * 100
    if point.calls:
        # CPU over the window scaled to the window's length, per counted consultation.
        scale = point.window_s / wall / point.calls * 1e3
        point.server_cpu_ms_per_consultation = server * scale
        point.server_cpu_ms_by_service = {n: round(ms * scale, 3) for n, ms in used.items()}
    model = 0.0
    if first.model is not None and last.model is not None:
        model = last.model - first.model
        point.model_cpu_pct = model / wall * 100
    if first.machine_busy is not None and last.machine_busy is not None:
        busy = (last.machine_busy - first.machine_busy) / wall * 100
        point.other_cpu_pct = max(
            0.0, busy - point.server_cpu_pct - model / wall * 100 - point.client_cpu_pct
        )


# --- scenarios --------------------------------------------------------------------------------


async def bench_offline(samples: Sequence[Sample], warmup: float, window: float) -> list[Point]:
    async with local_consult_services() as target:
        pids = find_service_pids()
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = consult_pb2_grpc.ConsultationServiceStub(channel)
            return [
                await run_point(
                    "offline",
                    stub,
                    samples,
                    check_offline,
                    c,
                    warmup=warmup,
                    window=window,
                    pids=pids,
                )
                for c in OFFLINE_CONCURRENCIES
            ]


@dataclass(frozen=True)
class ModelCallReference:
    """One doctor model call from this process, straight to the fake model (no mesh)."""

    calls: int
    delay_ms: float
    p50_ms: float
    p99_ms: float

    @property
    def overhead_p50_ms(self) -> float:
        return self.p50_ms - self.delay_ms


async def model_call_reference(
    samples: Sequence[Sample], base_url: str, delay_s: float, seconds: float
) -> ModelCallReference:
    """`OpenAICompatibleLLM.generate` as the doctor service calls it, back to back."""
    prompt = load_prompt("doctor_propose")
    profile = ModelProfile(provider="openai-compatible", model=DOCTOR_MODEL, base_url=base_url)
    messages = [user_message(s.context) for s in samples]
    latencies: list[float] = []
    llm = OpenAICompatibleLLM(environ={})
    try:
        end = time.perf_counter() + seconds
        i = 0
        while (started := time.perf_counter()) < end:
            await llm.generate(
                system=prompt.text,
                user=messages[i % len(messages)],
                output_type=DoctorModelOutput,
                profile=profile,
                deadline_s=CALL_DEADLINE_S,
                prompt_version=prompt.id,
            )
            if i >= 2:  # the first calls open the HTTP connection and build the schema
                latencies.append(time.perf_counter() - started)
            i += 1
    finally:
        await llm.aclose()
    latencies.sort()
    return ModelCallReference(
        len(latencies),
        delay_s * 1e3,
        percentile(latencies, 0.5) * 1e3,
        percentile(latencies, 0.99) * 1e3,
    )


async def bench_with_model(
    samples: Sequence[Sample], delay_s: float, warmup: float, window: float
) -> tuple[list[Point], ModelCallReference | None]:
    async with fake_model_process(delay_s) as fake:
        # The services read the overrides at start; nothing in this process reads them.
        with patched_environ(model_environment(fake.base_url)):
            async with local_consult_services() as target:
                pids = find_service_pids()
                async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
                    stub = consult_pb2_grpc.ConsultationServiceStub(channel)
                    points = [
                        await run_point(
                            "model",
                            stub,
                            samples,
                            check_with_model,
                            c,
                            warmup=warmup,
                            window=window,
                            pids=pids,
                            model_pid=fake.pid,
                            model_delay_s=delay_s,
                        )
                        for c in MODEL_CONCURRENCIES
                    ]
        reference = await model_call_reference(samples, fake.base_url, delay_s, 1.5)
    return points, reference


# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetCheck:
    name: str
    value: float
    target: str
    met: bool


def check_targets(offline: Sequence[Point]) -> list[TargetCheck]:
    return [
        TargetCheck(
            f"offline consultations/s at concurrency {p.concurrency}",
            p.per_second,
            f">= {TARGET_PER_S:,.0f}",
            not p.failed and p.per_second >= TARGET_PER_S,
        )
        for p in offline
    ]


def _opt(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, fmt) + suffix


def _status(p: Point) -> str:
    if p.failed:
        return "FAILED " + (
            ", ".join(f"{k}={v}" for k, v in sorted(p.errors.items())) or "no calls"
        )
    return "ok, noisy" if p.noisy else "ok"


def _processes(points: Sequence[Point]) -> str:
    """ "triage + doctor + ... in N processes", from the processes measured."""
    names = next(
        (list(p.server_cpu_ms_by_service) for p in points if p.server_cpu_ms_by_service), []
    )
    if not names:
        return "each service in its own process"
    return f"{' + '.join(names)} in {len(names)} processes"


def _by_service(p: Point) -> str:
    if not p.server_cpu_ms_by_service:
        return "-"
    return ", ".join(f"{n} {ms:.2f}" for n, ms in p.server_cpu_ms_by_service.items())


def render(
    meta: dict[str, Any],
    offline: Sequence[Point],
    model: Sequence[Point],
    reference: ModelCallReference | None,
    checks: Sequence[TargetCheck],
) -> str:
    lines = [
        f"utimesh consult benchmark - Python {meta['python']}, grpcio {meta['grpcio']}, "
        f"protobuf {meta['protobuf']} ({meta['protobuf_impl']}), {meta['cpus']} CPUs, "
        f"{meta['samples']} sample patients",
        "",
        f"Offline consultations over gRPC, {_processes(offline)} "
        f"({meta['warmup_s']:g} s warm-up, {meta['offline_window_s']:g} s window, "
        f"deadline {CALL_DEADLINE_S:g} s)",
        f"  {'conc':>5}{'cons/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>8}"
        f"{'srv CPU':>9}{'srv ms/cons':>12}{'cli CPU':>9}{'other CPU':>10}  status",
    ]
    for p in offline:
        lines.append(
            f"  {p.concurrency:>5}{p.per_second:>8,.0f}{p.p50_ms:>8.2f}{p.p99_ms:>8.2f}"
            f"{p.max_ms:>8.2f}{sum(p.errors.values()):>8}{_opt(p.server_cpu_pct, '.0f', '%'):>9}"
            f"{_opt(p.server_cpu_ms_per_consultation, '.2f'):>12}"
            f"{_opt(p.client_cpu_pct, '.0f', '%'):>9}{_opt(p.other_cpu_pct, '.0f', '%'):>10}"
            f"  {_status(p)}"
        )
    for p in offline:
        lines.append(f"  conc {p.concurrency}: server CPU ms/consultation: {_by_service(p)}")
    if offline:
        outcomes = ", ".join(f"{k} {v}" for k, v in offline[0].outcomes.items())
        lines.append(f"  outcomes (conc {offline[0].concurrency}): {outcomes}")
    delay_ms = meta["model_delay_ms"]
    lines += [
        "",
        f"With a model answering after D = {delay_ms:g} ms (fake OpenAI-compatible server in its "
        f"own process; {meta['warmup_s']:g} s warm-up, {meta['model_window_s']:g} s window)",
        f"  {'conc':>5}{'cons/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'calls':>7}{'ovh p50':>9}"
        f"{'ovh p99':>9}{'errors':>8}{'srv CPU':>9}{'srv ms/cons':>12}{'model CPU':>10}"
        f"{'cli CPU':>9}{'other CPU':>10}  status",
    ]
    for p in model:
        lines.append(
            f"  {p.concurrency:>5}{p.per_second:>8,.1f}{p.p50_ms:>8.1f}{p.p99_ms:>8.1f}"
            f"{_opt(p.model_calls_per_consultation, '.2f'):>7}"
            f"{_opt(p.overhead_p50_ms, '.1f'):>9}{_opt(p.overhead_p99_ms, '.1f'):>9}"
            f"{sum(p.errors.values()):>8}{_opt(p.server_cpu_pct, '.0f', '%'):>9}"
            f"{_opt(p.server_cpu_ms_per_consultation, '.2f'):>12}"
            f"{_opt(p.model_cpu_pct, '.0f', '%'):>10}{_opt(p.client_cpu_pct, '.0f', '%'):>9}"
            f"{_opt(p.other_cpu_pct, '.0f', '%'):>10}  {_status(p)}"
        )
    for p in model:
        lines.append(f"  conc {p.concurrency}: server CPU ms/consultation: {_by_service(p)}")
    lines.append(
        "  calls = model calls per consultation (sequential); ovh = latency - calls x D, "
        "the mesh's own cost per consultation"
    )
    if reference is not None:
        lines.append(
            f"  reference: one doctor model call from this process (OpenAICompatibleLLM.generate,"
            f" conc 1, {reference.calls} calls): p50 {reference.p50_ms:.1f} ms = D + "
            f"{reference.overhead_p50_ms:.1f} ms, p99 {reference.p99_ms:.1f} ms"
        )
    if any(p.noisy for p in (*offline, *model)):
        lines.append(
            f"  noisy: other processes used > {NOISY_OTHER_CPU_PCT:g}% of a core during the window;"
            " rates are low and latencies high for reasons outside utimesh."
            " Re-run on a quiet machine."
        )
    lines += ["", "Targets"]
    lines += [
        f"  {'PASS' if c.met else 'MISS'}  {c.name:<42}{c.value:>10,.2f}  (target {c.target})"
        for c in checks
    ]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _point_json(p: Point) -> dict[str, Any]:
    return {
        **{k: _finite(v) for k, v in asdict(p).items()},
        "failed": p.failed,
        "noisy": p.noisy,
    }


def write_json(
    path: Path,
    meta: dict[str, Any],
    offline: Sequence[Point],
    model: Sequence[Point],
    reference: ModelCallReference | None,
    checks: Sequence[TargetCheck],
) -> None:
    document = {
        "meta": meta,
        "offline": [_point_json(p) for p in offline],
        "model": [_point_json(p) for p in model],
        "model_call_reference": (
            {**asdict(reference), "overhead_p50_ms": reference.overhead_p50_ms}
            if reference is not None
            else None
        ),
        "targets": [asdict(c) for c in checks],
        "ok": not any(p.failed for p in (*offline, *model)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


async def bench(
    samples: Sequence[Sample], args: argparse.Namespace
) -> tuple[list[Point], list[Point], ModelCallReference | None]:
    # Keep the services' stderr to warnings (failed calls), not their start/stop events.
    for name in SERVICES:
        os.environ.setdefault(f"UTIMESH_{name.upper()}_LOG_LEVEL", "WARNING")
    print(
        f"offline: starting the services; concurrency "
        f"{', '.join(map(str, OFFLINE_CONCURRENCIES))} ...",
        flush=True,
    )
    offline = await bench_offline(samples, args.warmup, args.window)
    print(
        f"model: fake model (D = {args.model_delay * 1e3:g} ms) and the services; concurrency "
        f"{', '.join(map(str, MODEL_CONCURRENCIES))} ...",
        flush=True,
    )
    model, reference = await bench_with_model(
        samples, args.model_delay, args.warmup, args.model_window
    )
    return offline, model, reference


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up per point (default 0.5)")
    parser.add_argument(
        "--window", type=float, default=3.0, help="offline window per point (default 3)"
    )
    parser.add_argument(
        "--model-window", type=float, default=4.0, help="model window per point (default 4)"
    )
    parser.add_argument(
        "--model-delay",
        type=float,
        default=MODEL_DELAY_S,
        help=f"the fake model's answer delay D in seconds (default {MODEL_DELAY_S:g})",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})"
    )
    parser.add_argument(FAKE_SERVER_FLAG, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=MODEL_DELAY_S, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fake_model_server:
        asyncio.run(serve_fake_model(args.delay))
        return 0

    samples = load_samples(TriageEngine(load_knowledge()))
    meta = {
        **environment(len(samples), args.warmup),
        "offline_window_s": args.window,
        "model_window_s": args.model_window,
        "model_delay_ms": args.model_delay * 1e3,
        "call_deadline_s": CALL_DEADLINE_S,
    }
    offline, model, reference = asyncio.run(bench(samples, args))
    checks = check_targets(offline)

    print()
    print(render(meta, offline, model, reference, checks))
    write_json(args.out, meta, offline, model, reference, checks)
    print(f"\nresults written to {args.out}")
    failed = [p for p in (*offline, *model) if p.failed]
    if failed:
        print(f"FAILED: {len(failed)} point(s) had errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
