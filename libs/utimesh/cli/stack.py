"""`utimesh up`, `utimesh status`, `utimesh down`: the whole system on one machine."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mesh.stack import MAX_WORKERS, Stack, StackSettings, process_alive, read_status

_STATE_OPT = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the stack keeps data, logs and certificates (env UTIMESH_STATE_DIR, default .state).",
)
_PORT_OPT = click.option(
    "--base-port",
    type=int,
    default=None,
    help="First port of the stack (env UTIMESH_BASE_PORT, default 8080: the REST edge).",
)


class StackError(RuntimeError):
    """The stack did not start or stop as asked."""


def make_stack(state_dir: Path | None = None, base_port: int | None = None) -> Stack:
    overrides = {
        k: v for k, v in {"state_dir": state_dir, "base_port": base_port}.items() if v is not None
    }
    return Stack.from_settings(StackSettings(**overrides))  # type: ignore[arg-type]


def as_recorded(stack: Stack) -> Stack:
    """`stack` with the base port its running supervisor recorded: a running stack is found by
    its state dir alone, and its ports are the ones it started with, whatever the flags say."""
    data = read_status(stack)
    port = data.get("base_port") if data else None
    return dataclasses.replace(stack, base_port=port) if isinstance(port, int) else stack


def supervisor_pid(stack: Stack) -> int | None:
    status = read_status(stack)
    pid = status.get("supervisor_pid") if status else None
    return pid if isinstance(pid, int) and process_alive(pid) else None


def _wait_ready(stack: Stack, pid: int, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = read_status(stack)
        # A part that crashed a moment ago is still "healthy" in the file until the supervisor's
        # next watch pass (0.25 s) notices: require its process to be alive too, or `up` on a
        # running stack returns at once while that part is down.
        if (
            status
            and status.get("ready")
            and all(
                c["state"] == "healthy"
                and isinstance(c.get("pid"), int)
                and process_alive(c["pid"])
                for c in status["components"].values()
            )
        ):
            return True
        if not process_alive(pid):
            return False
        time.sleep(0.2)  # poll the status file the supervisor rewrites on every change
    return False


def start_stack(stack: Stack, *, no_edge: bool = False, wait_s: float = 180.0) -> tuple[int, bool]:
    """Start the stack (or reconcile a running one) and wait until every part is healthy.
    Returns (supervisor pid, whether it was already running). Raises StackError."""
    stack.logs.mkdir(parents=True, exist_ok=True)
    pid = supervisor_pid(stack)
    running = pid is not None
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)  # reconcile now: restart anything down
    else:
        command = [
            sys.executable,
            "-m",
            "mesh.supervisor",
            "--state-dir",
            str(stack.state_dir),
            "--base-port",
            str(stack.base_port),
        ] + (["--no-edge"] if no_edge else [])
        with (stack.logs / "supervisor.log").open("ab") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        pid = proc.pid
    if not _wait_ready(stack, pid, wait_s):
        tail = (stack.logs / "supervisor.log").read_text(errors="replace").splitlines()[-15:]
        raise StackError(
            "the stack did not become healthy; last supervisor log lines:\n" + "\n".join(tail)
        )
    return pid, running


def stop_stack(stack: Stack, wait_s: float = 60.0) -> bool:
    """Stop the stack; False if it was not running. Raises StackError if it does not stop."""
    pid = supervisor_pid(stack)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # the supervisor stops every part in reverse order, then exits
    if process_alive(pid):
        raise StackError(f"supervisor {pid} did not stop within {wait_s:g} s")
    return True


@click.command()
@_STATE_OPT
@_PORT_OPT
@click.option("--no-edge", is_flag=True, help="Do not start the Envoy edge (gRPC only).")
@click.option(
    "--wait",
    "wait_s",
    default=180.0,
    show_default=True,
    help="Seconds to wait for every part to be healthy.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 4),
    default=None,
    help="Job workers for queued consultations (env UTIMESH_WORKERS, default 1).",
)
def up(
    state_dir: Path | None, base_port: int | None, no_edge: bool, wait_s: float, workers: int | None
) -> None:
    """Start the whole stack (PostgreSQL, Redis, the six services, the job workers, the edge)
    and wait for health.

    If the stack is already running, restarts whatever is down and waits again."""
    if workers is not None:
        os.environ["UTIMESH_WORKERS"] = str(workers)  # read by the supervisor it starts
    stack = make_stack(state_dir, base_port)
    click.echo(f"starting the stack (logs in {stack.logs}) ...")
    try:
        pid, running = start_stack(stack, no_edge=no_edge, wait_s=wait_s)
    except StackError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if running:
        stack = as_recorded(stack)  # its real ports, though --base-port was not given
        click.echo(f"the stack was already running (supervisor {pid}); every part is healthy")
    edge_state = stack.state_dir / "edge"
    token = f"utimesh token --role clinician --state-dir {edge_state}"
    click.echo(
        f"\nutimesh is up. REST: {stack.rest_url}   (gRPC consult, mTLS: {stack.target('consult')})"
    )
    click.echo(f"A dev token:   {token}")
    click.echo(
        f"Try:           curl -s -H \"Authorization: Bearer $({token})\" -H 'content-type: application/json' "
        f"-d @request.json {stack.rest_url}/v1/consultations"
    )
    click.echo(
        '               (request.json: {"intake": {...}, "profile": "CA-ON"}; see gateway/openapi.yaml)'
    )
    click.echo(
        f"Status / stop: utimesh status --state-dir {stack.state_dir}   utimesh down --state-dir {stack.state_dir}"
    )


async def _probe(stack: Stack, status: dict[str, object]) -> list[tuple[str, str, str, str, str]]:
    from mesh.components import components

    # Every part the status file may name: as many workers as a stack can have, whatever
    # UTIMESH_WORKERS says in this shell.
    every = dataclasses.replace(stack, workers=MAX_WORKERS)
    parts = {p.name: p for p in components(every, with_edge=True)}
    rows = []
    for name, info in status["components"].items():  # type: ignore[attr-defined]
        part = parts.get(name)
        healthy = await part.healthy() if part else False
        pid = info.get("pid")
        alive = isinstance(pid, int) and process_alive(pid)
        state = (
            "healthy"
            if healthy
            else ("starting" if alive and info["state"] == "starting" else "DOWN")
        )
        rows.append((name, state, str(pid or "-"), str(info["port"]), str(info.get("restarts", 0))))
    return rows


@click.command()
@_STATE_OPT
@_PORT_OPT
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(state_dir: Path | None, base_port: int | None, as_json: bool) -> None:
    """Show each part of the stack and whether it is healthy (probed now). Exit 1 if any is down,
    3 if the stack is not running."""
    stack = make_stack(state_dir, base_port)
    data = read_status(stack)
    if data is None or supervisor_pid(stack) is None:
        click.echo("utimesh is not running" + (" (stale status file)" if data else ""), err=True)
        sys.exit(3)
    stack = as_recorded(stack)  # probe the ports it runs on, not the default 8080
    os.environ.setdefault("UTIMESH_TLS_DIR", str(stack.pki_dir))  # health is asked over mTLS
    rows = asyncio.run(_probe(stack, data))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "rest_url": data["rest_url"],
                    "components": [
                        {"name": r[0], "state": r[1], "pid": r[2], "port": r[3], "restarts": r[4]}
                        for r in rows
                    ],
                },
                indent=1,
            )
        )
    else:
        table = Table(
            "part", "state", "pid", "port", "restarts", title=f"utimesh at {data['rest_url']}"
        )
        for row in rows:
            table.add_row(*row, style="green" if row[1] == "healthy" else "red")
        Console().print(table)
    sys.exit(0 if all(r[1] == "healthy" for r in rows) else 1)


@click.command()
@_STATE_OPT
@_PORT_OPT
@click.option(
    "--wait", "wait_s", default=60.0, show_default=True, help="Seconds to wait for a clean stop."
)
def down(state_dir: Path | None, base_port: int | None, wait_s: float) -> None:
    """Stop the stack cleanly: services drain, the edge and the data stores stop, ports are freed."""
    try:
        stopped = stop_stack(make_stack(state_dir, base_port), wait_s)
    except StackError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo("utimesh is down" if stopped else "utimesh is not running")
