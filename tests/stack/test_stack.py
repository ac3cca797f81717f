"""The local stack end to end, driven as a person drives it: `python -m utimesh.cli up / status /
down / token` in subprocesses, REST calls through the Envoy edge with a dev token, and real
crashes (SIGKILL) that the supervisor must notice and repair.

One stack serves the module (its own state dir and a free block of 22 loopback ports). `down`
always runs at the end; after it no process of the stack may be running (a zombie counts as
gone: PID 1 does not reap here) and no port of the stack may be in use. The tests run in file
order and each leaves the stack healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from google.protobuf.json_format import MessageToDict

from mesh.stack import Stack, process_alive, read_status
from tests.conftest import REPO
from tests.factories import patient
from tests.stack.conftest import supervisor_tail
from utimesh.cli.stack import start_stack
from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake

T = TypeVar("T")

UTIMESH = [sys.executable, "-m", "utimesh.cli"]
PARTS = (
    "postgres",
    "redis",
    "triage",
    "doctor",
    "pharmacist",
    "evidence",
    "report",
    "consult",
    "worker-1",
    "edge",
)
# Every port a stack listens on (mesh.stack: edge = base, admin base+1, services +10..+15,
# postgres +20, redis +21). A block of BLOCK ports from the base is probed free before use.
PORT_NAMES = (
    "edge",
    "edge_admin",
    "consult",
    "triage",
    "doctor",
    "pharmacist",
    "evidence",
    "report",
    "worker-1",
    "postgres",
    "redis",
)
BLOCK = 22
PORT_RANGE = (20_000, 32_000)  # below Linux's default ephemeral range (32768-60999)
UP_WAIT_S = 120.0  # `utimesh up --wait`: a cold start takes ~6 s here
RECOVER_S = 60.0  # bound on every wait for a restart
RECONNECT_S = 20.0  # bound on consult reconnecting to a restarted service (see the doctor test)


# --- running the CLI ----------------------------------------------------------------------


def _env(*, warnings_are_errors: bool) -> dict[str, str]:
    """The caller's environment without UTIMESH_* settings: the flags decide everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UTIMESH_")}
    if warnings_are_errors:
        env["PYTHONWARNINGS"] = "error"
    return env


def utimesh(
    *args: str, timeout: float = 60.0, warnings_are_errors: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UTIMESH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=_env(warnings_are_errors=warnings_are_errors),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _where(stack: Stack) -> tuple[str, ...]:
    return ("--state-dir", str(stack.state_dir), "--base-port", str(stack.base_port))


def explain(stack: Stack, result: subprocess.CompletedProcess[str] | None = None) -> str:
    """What a failure message needs: the command's output and the supervisor's last lines."""
    parts = []
    if result is not None:
        parts.append(
            f"$ {' '.join(result.args[2:])}\nexit {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    parts.append(f"--- supervisor log tail\n{supervisor_tail(stack.logs)}")
    return "\n".join(parts)


def up(stack: Stack, *extra: str) -> subprocess.CompletedProcess[str]:
    # Not PYTHONWARNINGS=error here: the long-lived supervisor and every service inherit it.
    return utimesh(
        "up",
        *_where(stack),
        "--wait",
        str(UP_WAIT_S),
        *extra,
        timeout=UP_WAIT_S + 30,
        warnings_are_errors=False,
    )


def status(stack: Stack) -> tuple[int, dict[str, dict[str, Any]], subprocess.CompletedProcess[str]]:
    """`utimesh status --json`: (exit code, parts by name, the process)."""
    result = utimesh("status", "--json", *_where(stack))
    if result.returncode == 3:
        return 3, {}, result
    assert result.returncode in (0, 1), explain(stack, result)
    parts = {c["name"]: c for c in json.loads(result.stdout)["components"]}
    return result.returncode, parts, result


def recorded(stack: Stack) -> dict[str, Any]:
    """The supervisor's own status file (`<state>/stack.json`)."""
    data = read_status(stack)
    assert data is not None, explain(stack)
    return data


def wait_until(stack: Stack, what: str, probe: Callable[[], T | None], limit_s: float) -> T:
    """Poll `probe` until it returns a value (not None); fail after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {limit_s:g} s\n{explain(stack)}")
        time.sleep(0.2)  # poll interval


# --- ports ----------------------------------------------------------------------------------


def _bindable(port: int, *, reuse: bool) -> bool:
    with socket.socket() as s:
        if reuse:  # as a restarted server binds: TIME_WAIT leftovers do not count as in use
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(avoid: tuple[int, ...] = ()) -> int:
    """A base port whose whole block base..base+21 is free now and overlaps no `avoid` block."""
    for _ in range(500):
        base = random.randrange(PORT_RANGE[0], PORT_RANGE[1] - BLOCK)
        if any(abs(base - other) < BLOCK for other in avoid):
            continue
        if all(_bindable(base + i, reuse=False) for i in range(BLOCK)):
            return base
    pytest.fail(f"no free block of {BLOCK} ports in {PORT_RANGE}")


def new_stack(avoid: tuple[int, ...] = ()) -> Stack:
    """A stack layout: a fresh state dir and a free port block.

    Not under pytest's tmp_path: any pytest session that starts (another run on this machine)
    resets /tmp/pytest-of-<user> to mode 0700, and PostgreSQL, which runs as the "pgserver"
    user when we are root, must traverse every parent of its data dir (pgserver opens them up
    once, at init). `bring_down` removes the directory once the stack is verifiably gone."""
    state = Path(tempfile.mkdtemp(prefix="utimesh-stack-")).resolve() / "state"
    return Stack(state, free_port_block(avoid))


def stack_ports(stack: Stack) -> list[int]:
    return [stack.port(name) for name in PORT_NAMES]


# --- bringing a stack down and checking it is gone ----------------------------------------


def _pids(stack: Stack) -> list[int]:
    data = read_status(stack)
    if data is None:
        return []
    pids = [data.get("supervisor_pid"), *(c.get("pid") for c in data["components"].values())]
    return [p for p in pids if isinstance(p, int)]


def bring_down(stack: Stack) -> None:
    """`utimesh down`, then: every process of the stack gone (or a zombie), every port free,
    no status file, `status` says not running. Kills leftovers (by pid) if a check fails."""
    pids = _pids(stack)
    if pids:  # never leave a supervisor frozen by a failed test: SIGTERM would wait forever
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGCONT)
    result = utimesh("down", *_where(stack), timeout=120)
    try:
        assert result.returncode == 0, explain(stack, result)
        alive = [p for p in pids if process_alive(p)]
        assert not alive, f"still running after down: {alive}\n{explain(stack, result)}"
        busy = [p for p in stack_ports(stack) if not _bindable(p, reuse=True)]
        assert not busy, f"ports still in use after down: {busy}\n{explain(stack, result)}"
        assert not stack.status_file.exists()
        code, _, after = status(stack)
        assert code == 3, explain(stack, after)
    except AssertionError:
        for pid in pids:  # only processes this stack started
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        raise
    shutil.rmtree(stack.state_dir.parent)


# --- REST through the edge -----------------------------------------------------------------


def request_body(**overrides: Any) -> dict[str, Any]:
    """POST /v1/consultations: a treatable patient as proto JSON with proto field names."""
    intake = intake_to_proto(parse_intake(patient(**overrides)))
    return {
        "intake": MessageToDict(intake, preserving_proto_field_name=True),
        "profile": "CA-ON",
    }


async def _post(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.post(url, json=body, headers={"authorization": f"Bearer {token}"}) as response,
    ):
        text = await response.text()
        try:
            payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            payload = {"_text": text}
        return response.status, payload


@dataclass
class Running:
    stack: Stack
    token: str = ""

    def consult(self) -> dict[str, Any]:
        """One consultation through the REST edge; asserts 200 and returns the consultation."""
        code, body = asyncio.run(
            _post(f"{self.stack.rest_url}/v1/consultations", request_body(), self.token)
        )
        assert code == 200, f"{code} {body}\n{explain(self.stack)}"
        consultation: dict[str, Any] = body["consultation"]
        return consultation


def assert_fully_reviewed(c: dict[str, Any]) -> None:
    assert c["decision"] == "DECISION_RECOMMEND_TREATMENT"
    assert c["outcome"] == "OUTCOME_AGREED"
    assert c["regimen"]["drug"]
    assert c["report_markdown"] and c["report_sha256"]
    assert c["missing_reviews"] == []
    assert c["needs_prescriber_review"] is False


# --- the stack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(
    stack_log_dirs: list[Path],
) -> Iterator[Running]:
    stack = new_stack()
    stack_log_dirs.append(stack.logs)
    try:
        result = up(stack)
        assert result.returncode == 0, explain(stack, result)
        token = utimesh(
            "token", "--role", "clinician", "--state-dir", str(stack.state_dir / "edge")
        )
        assert token.returncode == 0, explain(stack, token)
        yield Running(stack, token.stdout.strip())
    finally:
        bring_down(stack)
        stack_log_dirs.remove(stack.logs)


def test_status_shows_every_part_healthy(running: Running) -> None:
    code, parts, result = status(running.stack)
    assert code == 0, explain(running.stack, result)
    assert list(parts) == list(PARTS)  # in start order
    assert {name: p["state"] for name, p in parts.items()} == dict.fromkeys(PARTS, "healthy")
    assert json.loads(result.stdout)["rest_url"] == running.stack.rest_url
    for name, part in parts.items():
        port = running.stack.port(name)
        assert int(part["port"]) == port
        assert process_alive(int(part["pid"])), name


async def _get(url: str, token: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url, headers={"authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, json.loads(await response.text() or "{}")


def test_a_queued_consultation_through_the_edge_and_a_worker(running: Running) -> None:
    """POST /v1/consultations:start answers at once with an operation; the stack's worker runs
    it; GET /v1/operations/{id} shows it done with the consultation as its response."""
    url = running.stack.rest_url
    code, op = asyncio.run(_post(f"{url}/v1/consultations:start", request_body(), running.token))
    assert code == 200, f"{code} {op}\n{explain(running.stack)}"
    assert op["name"].startswith("operations/") and op["done"] is False
    assert op["metadata"]["@type"].endswith("utimesh.consult.v1.ConsultationOperationMetadata")
    deadline = time.monotonic() + 60
    while True:
        code, got = asyncio.run(_get(f"{url}/v1/{op['name']}", running.token))
        assert code == 200, f"{code} {got}"
        if got["done"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got["done"], f"not done in 60 s: {got}\n{explain(running.stack)}"
    assert got["metadata"]["state"] == "OPERATION_STATE_SUCCEEDED"
    c = got["response"]
    assert c["@type"].endswith("utimesh.consult.v1.Consultation")
    assert_fully_reviewed(c)
    code, listed = asyncio.run(_get(f"{url}/v1/operations?filter=done%3Dtrue", running.token))
    assert code == 200 and op["name"] in [o["name"] for o in listed["operations"]]


def test_utimesh_queue_and_operation_from_the_command_line(
    running: Running, tmp_path: Path
) -> None:
    """What an operator types: queue two patients, watch them finish, look one up."""
    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps([patient(), patient(red_flags__fever=True)]))
    where = ("--url", running.stack.rest_url, "--state-dir", str(running.stack.state_dir))
    queued = utimesh("queue", str(patients), *where, "--timeout", "60")
    assert queued.returncode == 0, queued.stdout + queued.stderr + explain(running.stack)
    names = re.findall(r"operations/[0-9a-f-]{36}", queued.stdout)
    assert len(set(names)) == 2 and queued.stdout.count("succeeded") >= 2
    shown = utimesh("operation", names[0], *where)
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and "consultation: consultations/" in shown.stdout
    # Cancelling a finished operation changes nothing; an unknown one is a 404.
    again = utimesh("operation", names[0], "--cancel", *where)
    assert again.returncode == 0 and "succeeded" in again.stdout
    unknown = utimesh("operation", "00000000-0000-0000-0000-000000000000", *where)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr


def test_consultation_round_trip_through_the_edge(running: Running) -> None:
    c = running.consult()
    assert c["name"].startswith("consultations/")
    assert_fully_reviewed(c)
    assert c["decision"] == c["triage"]["decision"]
    actors = {e["actor"] for e in c["transcript"]}
    assert {"triage", "doctor", "pharmacist", "evidence"} <= actors


def test_killed_doctor_degrades_the_consultation_then_is_restarted(running: Running) -> None:
    stack = running.stack
    doctor = recorded(stack)["components"]["doctor"]
    os.kill(doctor["pid"], signal.SIGKILL)
    # At once: the supervisor waits 1 s (its first backoff) before it restarts anything.
    c = running.consult()
    assert "doctor" in c["missing_reviews"], c["transcript"]
    assert c["needs_prescriber_review"] is True
    assert c["outcome"] == "OUTCOME_UNREVIEWED"
    assert c["decision"] == c["triage"]["decision"] == "DECISION_RECOMMEND_TREATMENT"
    assert c["regimen"] == c["triage"]["regimen"]  # triage's own plan, reviewed as is
    assert not [e for e in c["transcript"] if e["actor"] == "doctor"]
    assert any(
        e["actor"] == "consult" and e["action"] == "degrade" and "doctor" in e["summary"]
        for e in c["transcript"]
    )
    assert c["report_markdown"]  # the other steps still ran

    def restarted() -> dict[str, Any] | None:
        _, parts, _ = status(stack)
        part = parts.get("doctor")
        ok = (
            part is not None
            and part["state"] == "healthy"
            and int(part["restarts"]) >= 1
            and int(part["pid"]) != doctor["pid"]
        )
        return parts if ok else None

    parts = wait_until(stack, "the supervisor restarting the doctor", restarted, RECOVER_S)
    assert all(p["state"] == "healthy" for p in parts.values()), parts
    assert not process_alive(doctor["pid"])

    # Consult's channel to the doctor reconnects on gRPC's own backoff (1 s, x1.6, jittered;
    # utimesh.kit.channels sets no reconnect options), and with waitForReady off a call made
    # while it backs off fails at once: for a few seconds after the doctor is healthy again
    # consultations may still lack its review. Wait for that, bounded, and allow nothing else.
    def reviewed() -> dict[str, Any] | None:
        c = running.consult()
        if c["missing_reviews"] == ["doctor"]:
            return None
        return c

    assert_fully_reviewed(wait_until(stack, "a fully reviewed consultation", reviewed, RECONNECT_S))


def test_killed_edge_is_reported_down_and_up_brings_it_back(running: Running) -> None:
    stack = running.stack
    before = recorded(stack)
    supervisor, edge_pid = before["supervisor_pid"], before["components"]["edge"]["pid"]
    restarts = before["components"]["edge"]["restarts"]
    # Freeze the supervisor while the edge is dead, so its own restart (1 s backoff, then
    # ~1.3 s for Envoy) cannot race the `status` below on a slow machine: what status must
    # report is fixed, not timing-dependent. The kill is real; only the repair waits.
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(edge_pid, signal.SIGKILL)
        wait_until(
            stack, "the edge to die", lambda: True if not process_alive(edge_pid) else None, 10
        )
        code, parts, result = status(stack)
        assert code == 1, explain(stack, result)
        assert parts["edge"]["state"] != "healthy", parts["edge"]
        others = {n: p["state"] for n, p in parts.items() if n != "edge"}
        assert others == dict.fromkeys(others, "healthy")
    finally:
        os.kill(supervisor, signal.SIGCONT)

    result = up(stack)  # signals the running supervisor to reconcile now, and waits
    assert result.returncode == 0, explain(stack, result)
    assert recorded(stack)["supervisor_pid"] == supervisor
    code, parts, result = status(stack)
    assert code == 0, explain(stack, result)
    assert parts["edge"]["state"] == "healthy"
    assert int(parts["edge"]["restarts"]) == restarts + 1
    assert int(parts["edge"]["pid"]) != edge_pid
    assert_fully_reviewed(running.consult())


def test_two_stacks_side_by_side(running: Running, stack_log_dirs: list[Path]) -> None:
    first = running.stack
    first_before = recorded(first)
    second = new_stack(avoid=(first.base_port,))
    stack_log_dirs.append(second.logs)
    try:
        result = up(second, "--no-edge", "--workers", "2")
        assert result.returncode == 0, explain(second, result)
        code1, parts1, result1 = status(first)
        code2, parts2, result2 = status(second)  # probed without UTIMESH_WORKERS set
        assert code1 == 0, explain(first, result1)
        assert code2 == 0, explain(second, result2)
        with_two_workers = [p for p in PARTS if p != "edge"]
        with_two_workers.insert(with_two_workers.index("worker-1") + 1, "worker-2")
        assert list(parts2) == with_two_workers
        assert all(p["state"] == "healthy" for p in [*parts1.values(), *parts2.values()])
        assert {p["port"] for p in parts1.values()}.isdisjoint(p["port"] for p in parts2.values())
        assert {p["pid"] for p in parts1.values()}.isdisjoint(p["pid"] for p in parts2.values())
        assert recorded(second)["supervisor_pid"] != first_before["supervisor_pid"]
    finally:
        bring_down(second)
        stack_log_dirs.remove(second.logs)

    # The first stack did not notice: same processes, all healthy, still serving REST.
    first_after = recorded(first)
    assert first_after["supervisor_pid"] == first_before["supervisor_pid"]
    assert {n: c["pid"] for n, c in first_after["components"].items()} == {
        n: c["pid"] for n, c in first_before["components"].items()
    }
    code, _, result = status(first)
    assert code == 0, explain(first, result)
    assert_fully_reviewed(running.consult())


def test_up_on_a_running_stack_is_idempotent(running: Running) -> None:
    stack = running.stack
    before = recorded(stack)
    result = up(stack)
    assert result.returncode == 0, explain(stack, result)
    after = recorded(stack)
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert process_alive(after["supervisor_pid"])
    assert {n: c["pid"] for n, c in after["components"].items()} == {
        n: c["pid"] for n, c in before["components"].items()
    }
    code, _, result = status(stack)
    assert code == 0, explain(stack, result)


def test_a_running_stack_is_found_by_its_state_dir_alone(running: Running) -> None:
    """Without --base-port (default 8080), `status` probes and `up` prints the ports the
    running stack recorded, not the default ones."""
    stack = running.stack
    where = ("--state-dir", str(stack.state_dir))
    result = utimesh("status", "--json", *where)
    assert result.returncode == 0, explain(stack, result)
    parts = json.loads(result.stdout)["components"]
    assert [p["state"] for p in parts] == ["healthy"] * len(PARTS)
    result = utimesh("up", *where, timeout=UP_WAIT_S)
    assert result.returncode == 0, explain(stack, result)
    assert stack.rest_url in result.stdout
    assert "127.0.0.1:8080" not in result.stdout


def test_up_right_after_a_crash_waits_for_the_repair(running: Running) -> None:
    """`up` must not trust the status file while the supervisor has not yet noticed a crash
    (it looks every 0.25 s): it returns once the part is really back."""
    stack = running.stack
    edge_pid = recorded(stack)["components"]["edge"]["pid"]
    os.kill(edge_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(edge_pid):  # SIGKILL lands asynchronously: milliseconds, polled tightly
        assert time.monotonic() < deadline, "the edge did not die"
        time.sleep(0.002)
    start_stack(stack, wait_s=RECOVER_S)  # what `utimesh up` runs, without its start-up time
    edge = recorded(stack)["components"]["edge"]
    assert edge["pid"] != edge_pid and process_alive(edge["pid"]), edge
    code, parts, result = status(stack)
    assert code == 0, explain(stack, result)
    assert parts["edge"]["state"] == "healthy"
    assert_fully_reviewed(running.consult())
