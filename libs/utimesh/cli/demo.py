"""`utimesh demo`: start the triage service, assess the sample patients through it, show a table."""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import click
from rich.console import Console
from rich.table import Table

from utimesh.cli.procs import service_process
from utimesh.codec.clinical import intake_to_proto
from utimesh.codec.triage import assessment_from_proto
from utimesh.kit.channels import insecure_channel
from utimesh.rules import parse_intake
from utimesh.rules.model import Assessment
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc

TRIAGE = "utimesh.triage.v1.TriageService"
_COLOURS = {"recommend_treatment": "green", "no_antibiotics": "cyan", "refer": "yellow"}


def sample_patients() -> list[dict[str, object]]:
    data = resources.files("utimesh.cli") / "samples" / "patients.json"
    return list(json.loads(data.read_text()))


def _regimen_text(a: Assessment) -> str:
    r = a.regimen
    if r is None:
        return "-"
    dose = " + ".join(f"{d.amount:g} {d.unit}" for d in r.dose)
    return f"{r.drug} {dose} {r.route} {r.frequency} x {r.duration.amount} {r.duration.unit}"


async def _run(console: Console) -> int:
    samples = sample_patients()
    console.print(
        f"[bold]utimesh demo[/] - starting the triage service and assessing {len(samples)} sample patients"
    )
    async with service_process("triage", TRIAGE) as target:
        console.print(f"triage service SERVING at {target}")
        channel = insecure_channel(target)
        stub = triage_pb2_grpc.TriageServiceStub(channel)
        table = Table(title="Triage through gRPC (drafts for prescriber sign-off)", show_lines=True)
        for column in ("Patient", "Profile", "Decision", "Regimen", "Rules fired", "Warnings"):
            table.add_column(column, overflow="fold")
        try:
            for case in samples:
                request = tpb.AssessPatientRequest(
                    intake=intake_to_proto(parse_intake(case["patient"])),  # type: ignore[arg-type]
                    profile=str(case["profile"]),
                )
                a = assessment_from_proto(await stub.AssessPatient(request, timeout=5.0))
                colour = _COLOURS[a.decision.value]
                table.add_row(
                    f"{case['id']}\n{case['description']}",
                    f"{a.profile} {a.profile_version}",
                    f"[{colour}]{a.decision.value}[/]",
                    _regimen_text(a),
                    ", ".join(a.rule_ids),
                    ", ".join(a.warning_ids) or "-",
                )
        finally:
            await channel.close()
    console.print(table)
    console.print("triage service stopped (drained on SIGTERM)")
    return 0


@click.command()
def demo() -> None:
    """Start the triage service, assess the sample patients through it, print a table."""
    raise SystemExit(asyncio.run(_run(Console(width=160))))
