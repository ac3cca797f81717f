"""`utimesh triage` and `utimesh ruleset`."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click
import grpc

from utimesh.cli.inputs import PatientInput, read_patients
from utimesh.codec.clinical import intake_to_proto
from utimesh.codec.triage import assessment_from_proto
from utimesh.kit.channels import insecure_channel
from utimesh.kit.status import error_details
from utimesh.rules import (
    TriageEngine,
    UnknownProfileError,
    assessment_to_json,
    load_knowledge,
    parse_intake,
)
from utimesh.triage.v1 import triage_pb2 as tpb
from utimesh.triage.v1 import triage_pb2_grpc


def _local(items: list[PatientInput], profile: str | None) -> list[dict[str, Any]]:
    engine = TriageEngine(load_knowledge())
    try:
        return [
            assessment_to_json(engine.assess(parse_intake(i.patient), profile or i.profile))
            for i in items
        ]
    except UnknownProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None


async def _remote(
    items: list[PatientInput], profile: str | None, server: str, deadline_s: float
) -> list[dict[str, Any]]:
    channel = insecure_channel(server)
    stub = triage_pb2_grpc.TriageServiceStub(channel)
    limit = asyncio.Semaphore(16)

    async def one(item: PatientInput) -> dict[str, Any]:
        request = tpb.AssessPatientRequest(
            intake=intake_to_proto(parse_intake(item.patient)),
            profile=profile or item.profile or "",
        )
        async with limit:
            try:
                response = await stub.AssessPatient(request, timeout=deadline_s)
            except grpc.aio.AioRpcError as exc:
                return {"error": error_details(exc).as_json()}
        return assessment_to_json(assessment_from_proto(response))

    try:
        return list(await asyncio.gather(*(one(i) for i in items)))
    finally:
        await channel.close()


@click.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False))
@click.option(
    "--profile",
    help="Jurisdiction profile (CA-ON default, CA-AB). Overrides a profile given in the file.",
)
@click.option(
    "--server",
    metavar="HOST:PORT",
    help="Send to a running triage service instead of assessing in-process.",
)
@click.option(
    "--timeout", default=5.0, show_default=True, help="Deadline per call with --server, in seconds."
)
def triage(file: str, profile: str | None, server: str | None, timeout: float) -> None:
    """Assess the patient(s) in FILE ("-" for stdin) and print JSON results.

    FILE holds one patient object, a list of them, or cases.json-style objects with a
    "patient" (and optional "profile"). Prints one result, or a list for a list. Exit code 1 when
    the service rejected any patient (the result then holds an "error" object).
    """
    items, is_list = read_patients(file)
    results = (
        asyncio.run(_remote(items, profile, server, timeout)) if server else _local(items, profile)
    )
    click.echo(json.dumps(results if is_list else results[0], indent=2))
    if any("error" in r for r in results):
        sys.exit(1)


@click.command()
@click.option("--profile", help="Jurisdiction profile (default: the default profile).")
def ruleset(profile: str | None) -> None:
    """Print a profile's parameters, rules and sources as JSON."""
    knowledge = load_knowledge()
    try:
        rs = knowledge.ruleset(profile)
    except UnknownProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from None
    click.echo(
        json.dumps(
            {
                "profile": rs.id,
                "profile_version": rs.version,
                "ruleset_hash": rs.content_hash,
                "available_profiles": list(knowledge.profiles),
                "parameters": dict(rs.params.as_text()),
                "rules": [r.model_dump(mode="json") for r in rs.rules.values()],
                "sources": [s.model_dump(mode="json") for s in rs.sources.values()],
            },
            indent=2,
        )
    )
