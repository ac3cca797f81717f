"""`utimesh consult`: run consultations through the consult service, with live progress."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.table import Table

from utimesh.cli.inputs import PatientInput, read_patients
from utimesh.cli.procs import local_consult_services
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.channels import insecure_channel
from utimesh.kit.status import error_details
from utimesh.rules import parse_intake

_OUTCOME_STYLE = {
    "OUTCOME_AGREED": "green",
    "OUTCOME_NOT_TREATED": "cyan",
    "OUTCOME_ESCALATED": "red",
    "OUTCOME_UNREVIEWED": "yellow",
}


def regimen_line(r: pb.Regimen) -> str:
    dose = " + ".join(f"{d.ingredient} {d.amount:g} {d.unit}" for d in r.dose)
    freq = pb.Frequency.Name(r.frequency).removeprefix("FREQUENCY_").lower().replace("_", " ")
    unit = pb.DurationUnit.Name(r.duration.unit).removeprefix("DURATION_UNIT_").lower()
    return f"{r.drug}: {dose} by mouth, {freq}, {r.duration.amount} {unit}"


def render(console: Console, label: str, c: cpb.Consultation) -> None:
    """A readable summary: decision, plan, deliberation, concerns, notice."""
    outcome = cpb.Outcome.Name(c.outcome)
    style = _OUTCOME_STYLE.get(outcome, "white")
    console.rule(f"[bold]{label}[/] {c.name}")
    console.print(
        f"[bold]Decision:[/] {pb.Decision.Name(c.decision).removeprefix('DECISION_').lower()}"
        f"   [bold]Outcome:[/] [{style}]{outcome.removeprefix('OUTCOME_').lower()}[/]"
        + (
            f" ({cpb.EscalationReason.Name(c.escalation_reason).removeprefix('ESCALATION_REASON_').lower()})"
            if c.escalation_reason
            else ""
        )
        + f"   [bold]Rounds:[/] {c.rounds}"
    )
    console.print(
        f"[bold]Plan:[/] {regimen_line(c.regimen) if c.HasField('regimen') else 'no prescription'}"
    )
    if c.assessment.referral_rationale:
        console.print(f"[bold]Why:[/] {c.assessment.referral_rationale}")
    elif c.assessment.rationale:
        console.print(f"[bold]Why:[/] {c.assessment.rationale}")
    table = Table(
        "round", "actor", "action", "summary", "model", show_header=True, header_style="bold"
    )
    for e in c.transcript:
        model = (
            f"{e.run.model}"
            + (f" ({e.run.input_tokens}+{e.run.output_tokens} tok)" if e.run.input_tokens else "")
            if e.HasField("run")
            else ""
        )
        table.add_row(str(e.round), e.actor, e.action, e.summary, model)
    console.print(table)
    for concern in c.review.concerns:
        console.print(f"  concern [{concern.source}] {concern.code}: {concern.text}")
    if c.review.monitoring:
        console.print("[bold]Monitoring:[/] " + "; ".join(c.review.monitoring))
    if c.missing_reviews:
        console.print(f"[yellow]Missing reviews: {', '.join(c.missing_reviews)}[/]")
    console.print(f"[bold]{c.notice}[/]")


async def _one(
    stub: consult_pb2_grpc.ConsultationServiceStub,
    item: PatientInput,
    profile: str | None,
    rounds: int,
    deadline_s: float,
    console: Console | None,
) -> cpb.Consultation:
    request = cpb.StreamConsultationRequest(
        intake=intake_to_proto(parse_intake(item.patient)),
        profile=profile or item.profile or "",
        max_rounds=rounds,
    )
    result: cpb.Consultation | None = None
    async for message in stub.StreamConsultation(request, timeout=deadline_s):
        if message.HasField("progress") and console is not None:
            p = message.progress
            mark = {"started": "…", "done": "✓", "failed": "✗"}.get(p.status, "·")
            console.print(
                f"  {mark} [dim]{p.elapsed_ms:8.1f} ms[/] {p.step}{f' r{p.round}' if p.round else ''}: {p.message}"
            )
        elif message.HasField("consultation"):
            result = message.consultation
    if result is None:
        raise RuntimeError("the stream ended without a consultation")
    return result


@contextlib.asynccontextmanager
async def _target(server: str | None, console: Console | None) -> AsyncIterator[str]:
    if server:
        yield server
        return
    log_dir = Path(tempfile.mkdtemp(prefix="utimesh-logs-"))
    if console:
        console.print(
            f"[dim]starting local services: triage, doctor, pharmacist, consult (logs in {log_dir}) …[/]"
        )
    async with local_consult_services(log_dir=log_dir) as target:
        yield target


async def _run(
    file: str,
    profile: str | None,
    server: str | None,
    rounds: int,
    as_json: bool,
    deadline_s: float,
) -> int:
    items, is_list = read_patients(file)
    console = None if as_json else Console()
    out: list[dict[str, Any]] = []
    failures = 0
    async with _target(server, console) as target:
        channel = insecure_channel(target)
        stub = consult_pb2_grpc.ConsultationServiceStub(channel)
        try:
            for item in items:
                if console:
                    console.print(f"[bold]Consultation for {item.label}[/]")
                try:
                    c = await _one(stub, item, profile, rounds, deadline_s, console)
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    d = error_details(exc)
                    err = d.as_json()
                    out.append({"error": err})
                    if console:
                        console.print(
                            f"[red]{d.code.name} {d.reason}: {d.message}[/] {err['field_violations']}"
                        )
                    continue
                out.append(MessageToDict(c, preserving_proto_field_name=True))
                if console:
                    render(console, item.label, c)
        finally:
            await channel.close()
    if as_json:
        click.echo(json.dumps(out if is_list else out[0], indent=2))
    return 1 if failures else 0


@click.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option(
    "--profile",
    help="Jurisdiction profile (CA-ON default, CA-AB). Overrides a profile given in the file.",
)
@click.option(
    "--server",
    metavar="HOST:PORT",
    help="A running consult service. Default: start local services for this run.",
)
@click.option(
    "--rounds",
    type=click.IntRange(0, 5),
    default=0,
    help="Deliberation rounds (0 = the service default, 3).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the consultation(s) as JSON instead of a summary.",
)
@click.option(
    "--timeout", default=120.0, show_default=True, help="Deadline per consultation, in seconds."
)
def consult(
    file: str, profile: str | None, server: str | None, rounds: int, as_json: bool, timeout: float
) -> None:
    """Run a consultation for the patient(s) in FILE ("-" for stdin), showing each step live.

    Every result is a draft for prescriber sign-off. Exit code 1 when any consultation failed.
    """
    sys.exit(asyncio.run(_run(file, profile, server, rounds, as_json, timeout)))
