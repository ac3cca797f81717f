"""`utimesh demo`: start the services, run the sample consultations through them, show a table."""

from __future__ import annotations

import asyncio
import json
import tempfile
from importlib import resources
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from utimesh.agents.v1 import agents_pb2 as apb
from utimesh.cli.consult import regimen_line
from utimesh.cli.procs import local_consult_services
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.channels import insecure_channel
from utimesh.rules import parse_intake

_COLOURS = {"recommend_treatment": "green", "no_antibiotics": "cyan", "refer": "yellow"}


def sample_patients() -> list[dict[str, object]]:
    data = resources.files("utimesh.cli") / "samples" / "patients.json"
    return list(json.loads(data.read_text()))


async def _run(console: Console, out_dir: Path) -> int:
    samples = sample_patients()
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]utimesh demo[/] - starting triage, doctor, pharmacist and consult; {len(samples)} sample consultations"
    )
    table = Table(
        title="Consultations through gRPC (every result is a DRAFT for prescriber sign-off)",
        show_lines=True,
    )
    for column in ("Patient", "Decision", "Outcome", "Plan", "Rules fired", "Pharmacist", "Rounds"):
        table.add_column(column, overflow="fold")
    failures = 0
    async with local_consult_services(log_dir=log_dir) as target:
        console.print(f"services SERVING; consult at {target}")
        channel = insecure_channel(target)
        stub = consult_pb2_grpc.ConsultationServiceStub(channel)
        try:
            for case in samples:
                request = cpb.CreateConsultationRequest(
                    intake=intake_to_proto(parse_intake(case["patient"])),  # type: ignore[arg-type]
                    profile=str(case["profile"]),
                    request_id=str(case["id"]),
                )
                c = (await stub.CreateConsultation(request, timeout=30)).consultation
                (out_dir / f"{case['id']}.json").write_text(json.dumps(json_view(c), indent=1))
                decision = pb.Decision.Name(c.decision).removeprefix("DECISION_").lower()
                outcome = cpb.Outcome.Name(c.outcome).removeprefix("OUTCOME_").lower()
                failures += outcome in ("escalated", "unreviewed")
                concerns = ", ".join(x.code for x in c.review.concerns) or "no concerns"
                verdict = (
                    apb.Verdict.Name(c.review.verdict) if c.HasField("review") else "VERDICT_NONE"
                )
                table.add_row(
                    f"{case['id']}\n{case['description']}",
                    f"[{_COLOURS[decision]}]{decision}[/]",
                    outcome,
                    regimen_line(c.regimen) if c.HasField("regimen") else "-",
                    ", ".join(h.rule_id for h in c.triage.rules_fired),
                    f"{verdict.removeprefix('VERDICT_').lower()}: {concerns}",
                    str(c.rounds),
                )
        finally:
            await channel.close()
    console.print(table)
    console.print(f"consultations written to {out_dir}/DEMO-*.json; service logs in {log_dir}")
    console.print("services stopped (drained on SIGTERM)")
    return 1 if failures else 0


def json_view(c: cpb.Consultation) -> dict[str, object]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(c, preserving_proto_field_name=True)


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the consultation JSON files and logs (default: a new temporary folder).",
)
def demo(out_dir: Path | None) -> None:
    """Start the services, run the sample consultations through them, print a summary table.

    Exit code 1 if any sample consultation was escalated or left unreviewed (none should be
    with the offline engine)."""
    target = out_dir or Path(tempfile.mkdtemp(prefix="utimesh-demo-"))
    raise SystemExit(asyncio.run(_run(Console(width=170), target)))
