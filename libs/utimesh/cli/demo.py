"""`utimesh demo`: bring the whole stack up, run the sample consultations through the REST edge
with a dev token, show a table and where the reports are, ask one question, shut down."""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import click
import httpx
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.table import Table

from utimesh.cli.stack import StackError, make_stack, start_stack, stop_stack
from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake

_COLOURS = {"recommend_treatment": "green", "no_antibiotics": "cyan", "refer": "yellow"}
_SPAN = 22  # ports a stack uses above its base port


def sample_patients() -> list[dict[str, Any]]:
    data = resources.files("utimesh.cli") / "samples" / "patients.json"
    return list(json.loads(data.read_text()))


def free_port_block(start: int = 18080, span: int = _SPAN) -> int:
    """A base port whose whole block of loopback ports is free right now."""
    for base in range(start, 60000, 100):
        free = True
        for port in range(base, base + span):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise StackError("no free block of loopback ports")


def rest_body(case: dict[str, Any]) -> dict[str, Any]:
    intake = MessageToDict(
        intake_to_proto(parse_intake(case["patient"])), preserving_proto_field_name=True
    )
    return {"intake": intake, "profile": case["profile"], "request_id": case["id"]}


def _regimen(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    dose = " + ".join(f"{d['ingredient']} {d['amount']:g} {d['unit']}" for d in r["dose"])
    freq = r["frequency"].removeprefix("FREQUENCY_").lower().replace("_", " ")
    return f"{r['drug']}: {dose}, {freq}, {r['duration']['amount']} {r['duration']['unit'].removeprefix('DURATION_UNIT_').lower()}"


async def _consult_all(console: Console, url: str, token: str, out_dir: Path) -> int:
    samples = sample_patients()
    table = Table(
        title="Consultations through the REST edge (every result is a DRAFT for prescriber sign-off)",
        show_lines=True,
    )
    for column in ("Patient", "Decision", "Outcome", "Plan", "Rules fired", "Pharmacist", "Report"):
        table.add_column(column, overflow="fold")
    failures = 0
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        first_name = ""
        for case in samples:
            response = await client.post("/v1/consultations", json=rest_body(case))
            if response.status_code != 200:
                failures += 1
                table.add_row(
                    case["id"],
                    f"[red]HTTP {response.status_code}[/]",
                    response.text[:200],
                    "",
                    "",
                    "",
                    "",
                )
                continue
            c = response.json()["consultation"]
            first_name = first_name or c["name"]
            report = out_dir / f"{case['id']}.md"
            report.write_text(c["report_markdown"])
            (out_dir / f"{case['id']}.json").write_text(json.dumps(c, indent=1))
            decision = c["decision"].removeprefix("DECISION_").lower()
            outcome = c["outcome"].removeprefix("OUTCOME_").lower()
            failures += outcome in ("escalated", "unreviewed")
            concerns = (
                ", ".join(x["code"] for x in c["review"].get("concerns", [])) or "no concerns"
            )
            verdict = c["review"]["verdict"].removeprefix("VERDICT_").lower()
            table.add_row(
                f"{case['id']}\n{case['description']}",
                f"[{_COLOURS[decision]}]{decision}[/]",
                outcome,
                _regimen(c.get("regimen")),
                ", ".join(h["rule_id"] for h in c["triage"]["rules_fired"]),
                f"{verdict}: {concerns}",
                str(report),
            )
        console.print(table)
        if first_name:
            question = "Why this antibiotic?"
            answer = (
                await client.post(f"/v1/{first_name}:ask", json={"question": question})
            ).json()
            console.print(
                f"[bold]Q:[/] {question}  ({first_name})\n[bold]A ({answer.get('kind')}):[/] {answer.get('answer')}"
            )
            console.print(
                f"   cites passages {', '.join(answer.get('passage_ids', [])) or '-'}; rules "
                f"{', '.join(answer.get('rule_ids', [])) or '-'}"
            )
        if samples:
            failures += await _queued(console, client, samples[0])
    return failures


async def _queued(console: Console, client: httpx.AsyncClient, case: dict[str, Any]) -> int:
    """One consultation queued (POST :start) and followed to the end through its operation;
    a stack worker runs it. 1 if it does not succeed within a minute."""
    started = time.monotonic()
    # Its own request id: with the sample's, the worker would (rightly) return the consultation
    # that request already created.
    body = {**rest_body(case), "request_id": f"{case['id']}-queued"}
    response = await client.post("/v1/consultations:start", json=body)
    if response.status_code != 200:
        console.print(
            f"[red]queued consultation refused: HTTP {response.status_code}[/] {response.text[:200]}"
        )
        return 1
    op = response.json()
    while not op["done"] and time.monotonic() - started < 60:
        await asyncio.sleep(0.1)
        op = (await client.get(f"/v1/{op['name']}")).json()
    meta = op.get("metadata", {})
    state = meta.get("state", "?").removeprefix("OPERATION_STATE_").lower()
    console.print(
        f"[bold]Queued:[/] {case['id']} as {op['name']} -> {state} after "
        f"{meta.get('attempts', 0)} attempt(s), {(time.monotonic() - started) * 1000:.0f} ms; "
        f"consultation {meta.get('consultation') or '-'}"
    )
    return 0 if state == "succeeded" else 1


def _run(console: Console, out_dir: Path) -> int:
    from gateway.jwt_dev import mint

    stack = make_stack(out_dir / "state", free_port_block())
    console.print(
        f"[bold]utimesh demo[/] - starting the stack (Postgres, Redis, 6 services with mTLS, a job worker, Envoy edge) "
        f"at {stack.rest_url}; logs in {stack.logs}"
    )
    try:
        start_stack(stack)
        console.print(
            "every part healthy; sending the sample consultations through the REST edge with a dev token"
        )
        token = mint("demo-clinician", ["clinician"], 900, state_dir=stack.state_dir / "edge")
        failures = asyncio.run(_consult_all(console, stack.rest_url, token, out_dir))
    finally:
        stop_stack(stack)
        console.print("stack stopped (services drained, edge and data stores stopped)")
    console.print(f"reports and consultations written to {out_dir}")
    return 1 if failures else 0


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the reports, consultation JSON, state and logs (default: a new temporary folder).",
)
def demo(out_dir: Path | None) -> None:
    """Bring the stack up, run the sample consultations through the REST edge, print a table.

    Exit code 1 if any request failed or any sample consultation was escalated or left
    unreviewed (none should be with the offline engine)."""
    target = out_dir or Path(tempfile.mkdtemp(prefix="utimesh-demo-"))
    target.mkdir(parents=True, exist_ok=True)
    raise SystemExit(_run(Console(width=170), target))
