"""`utimesh queue` and `utimesh operation`: queued consultations of a running stack, through the
REST edge. `queue FILE` starts one consultation per patient (POST /v1/consultations:start) and
follows the operations to the end with a live table; `operation NAME` shows one, or cancels it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.live import Live
from rich.table import Table

from utimesh.cli.inputs import read_patients
from utimesh.cli.rest import STATE_OPT, URL_OPT, edge_client, fail
from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake

_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}
_POLL_S = 0.25


def _op_name(name: str) -> str:
    return name if name.startswith("operations/") else f"operations/{name}"


def _state(op: dict[str, Any]) -> str:
    state: str = op.get("metadata", {}).get("state", "OPERATION_STATE_UNSPECIFIED")
    return state.removeprefix("OPERATION_STATE_").lower()


def _row(label: str, op: dict[str, Any]) -> tuple[str, ...]:
    meta = op.get("metadata", {})
    state = _state(op)
    style = _STYLE.get(state, "")
    why = op.get("error", {}).get("message", "") or meta.get("last_error", "")
    return (
        label,
        op["name"],
        f"[{style}]{state}[/]" if style else state,
        meta.get("stage", ""),
        f"{meta.get('attempts', 0)}/{meta.get('max_attempts', 0)}",
        meta.get("consultation", "") or why,
    )


def _table(rows: list[tuple[str, ...]]) -> Table:
    table = Table(title="Queued consultations (every result is a DRAFT for prescriber sign-off)")
    for column in ("Patient", "Operation", "State", "Stage", "Attempts", "Consultation / why"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


@click.command()
@click.argument("file")
@click.option(
    "--profile",
    default=None,
    help="Jurisdiction profile, e.g. CA-ON (default: the file's, else CA-ON).",
)
@click.option(
    "--patient-id",
    default=None,
    help="The patient's identifier (one patient only): memory is merged and updated.",
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Follow the operations to the end."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to follow them.",
)
@URL_OPT
@STATE_OPT
def queue(
    file: str,
    profile: str | None,
    patient_id: str | None,
    wait: bool,
    timeout_s: float,
    url: str | None,
    state_dir: Path | None,
) -> None:
    """Queue a consultation for each patient in FILE (JSON: one patient, a list, or cases.json
    entries; "-" reads stdin) and follow them: state, stage and attempts per operation, then the
    consultation or why it failed. Exit code 1 if any did not succeed."""
    items, _ = read_patients(file)
    if patient_id and len(items) != 1:
        raise click.BadParameter("--patient-id needs a file with exactly one patient")
    console = Console()
    ops: list[tuple[str, dict[str, Any]]] = []
    try:
        with edge_client(url, state_dir, "clinician") as client:
            for item in items:
                intake = intake_to_proto(parse_intake(item.patient))
                body: dict[str, Any] = {
                    "intake": MessageToDict(intake, preserving_proto_field_name=True),
                    "profile": profile or item.profile or "",
                    "request_id": str(uuid.uuid4()),
                }
                if patient_id:
                    body["patient_id"] = patient_id
                response = client.post("/v1/consultations:start", json=body)
                if response.status_code != 200:
                    fail(response)
                ops.append((item.label, response.json()))
            if not wait:
                for label, op in ops:
                    click.echo(f"{label}\t{op['name']}")
                return
            deadline = time.monotonic() + timeout_s
            with Live(_table([_row(lb, op) for lb, op in ops]), console=console) as live:
                while not all(op.get("done") for _, op in ops) and time.monotonic() < deadline:
                    time.sleep(_POLL_S)
                    for i, (label, op) in enumerate(ops):
                        if not op.get("done"):
                            got = client.get(f"/v1/{op['name']}")
                            if got.status_code == 200:
                                ops[i] = (label, got.json())
                    live.update(_table([_row(lb, op) for lb, op in ops]))
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the edge: {exc}") from None
    for label, op in ops:  # plain lines too: for scripts, and terminals too narrow for the table
        meta = op.get("metadata", {})
        end = meta.get("consultation") or op.get("error", {}).get("message", "")
        click.echo(f"{label}\t{op['name']}\t{_state(op)}\t{end}")
    pending = [op["name"] for _, op in ops if not op.get("done")]
    if pending:
        click.echo(f"still running after {timeout_s:g} s: {', '.join(pending)}", err=True)
    if pending or any(_state(op) != "succeeded" for _, op in ops):
        raise SystemExit(1)


@click.command()
@click.argument("name")
@click.option("--cancel", is_flag=True, help="Cancel it (a queued or retrying job ends at once).")
@click.option("--json", "as_json", is_flag=True, help="Print the operation as JSON.")
@URL_OPT
@STATE_OPT
def operation(
    name: str, cancel: bool, as_json: bool, url: str | None, state_dir: Path | None
) -> None:
    """Show operation NAME (an id or operations/ID): state, stage, attempts, last error, and the
    consultation once it succeeded; --cancel cancels it first."""
    path = f"/v1/{_op_name(name)}"
    try:
        with edge_client(url, state_dir, "clinician") as client:
            if cancel:
                response = client.post(f"{path}:cancel", json={})
                if response.status_code != 200:
                    fail(response)
            response = client.get(path)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the edge: {exc}") from None
    if response.status_code != 200:
        fail(response)
    op = response.json()
    if as_json:
        click.echo(json.dumps(op, indent=2))
        return
    meta = op.get("metadata", {})
    click.echo(f"{op['name']}: {_state(op)} (done: {str(op.get('done', False)).lower()})")
    click.echo(
        f"  stage {meta.get('stage') or '-'}; attempts {meta.get('attempts', 0)}/{meta.get('max_attempts', 0)}"
    )
    if meta.get("last_error"):
        click.echo(f"  last error: {meta['last_error']}")
    if op.get("error"):
        click.echo(f"  error {op['error'].get('code')}: {op['error'].get('message')}")
    if meta.get("consultation"):
        click.echo(
            f"  consultation: {meta['consultation']}  (utimesh report {meta['consultation']})"
        )
