"""`utimesh timeline ID`: a patient's memory (episodes, allergies, medications, kidney function,
pregnancy and lactation), each with the visit that recorded it, through the REST edge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import httpx

from utimesh.cli.rest import STATE_OPT, URL_OPT, edge_client, fail


def _name(patient: str) -> str:
    return patient if patient.startswith("patients/") else f"patients/{patient}"


def _facts(title: str, facts: list[dict[str, Any]]) -> None:
    click.echo(f"{title}:")
    if not facts:
        click.echo("  (none on record)")
    for f in facts:
        click.echo(
            f"  {f.get('recorded_on', '?')}  {f.get('field', '')}: {f.get('value', '')}"
            f"  [{f.get('source_consultation', '')}]"
        )


@click.command()
@click.argument("patient")
@click.option("--json", "as_json", is_flag=True, help="Print the whole timeline as JSON.")
@URL_OPT
@STATE_OPT
def timeline(patient: str, as_json: bool, url: str | None, state_dir: Path | None) -> None:
    """Show the memory of PATIENT (an id or patients/ID, the opaque id of a consultation's
    `patient`, never the caller's own identifier)."""
    try:
        with edge_client(url, state_dir, "clinician") as client:
            response = client.get(f"/v1/{_name(patient)}/timeline")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the edge: {exc}") from None
    if response.status_code != 200:
        fail(response)
    body = response.json()
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(body.get("name", _name(patient)))
    episodes = body.get("episodes", [])
    click.echo("episodes:")
    if not episodes:
        click.echo("  (none on record)")
    for e in episodes:
        regimen = e.get("regimen") or {}
        drug = regimen.get("drug", "") if isinstance(regimen, dict) else ""
        end = e.get("treatment_end_date") or "-"
        click.echo(
            f"  onset {e.get('onset_date', '?')}  end {end}  {e.get('decision', '')}"
            f"  {drug or 'no regimen'}  {e.get('outcome', '')}  [{e.get('consultation', '')}]"
        )
    _facts("allergies", body.get("allergies", []))
    _facts("medications", body.get("medications", []))
    _facts("kidney function (eGFR mL/min)", body.get("kidney_function", []))
    _facts("pregnancy / lactation", body.get("pregnancy", []))
