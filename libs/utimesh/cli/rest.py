"""`utimesh report` and `utimesh ask`: read a consultation of a running stack through the REST
edge (the only door clients have), with a token from $UTIMESH_TOKEN or the local dev issuer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from mesh.stack import StackSettings

URL_OPT = click.option(
    "--url",
    default=None,
    help="REST edge URL (default: the local stack's, from UTIMESH_BASE_PORT).",
)
STATE_OPT = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local stack state dir, for a dev token when UTIMESH_TOKEN is not set.",
)


def edge_client(url: str | None, state_dir: Path | None, role: str) -> httpx.Client:
    """An HTTP client of the REST edge with a bearer token ($UTIMESH_TOKEN, else a dev token)."""
    settings = StackSettings()
    base = url or f"http://127.0.0.1:{settings.base_port}"
    token = os.environ.get("UTIMESH_TOKEN")
    if not token:
        from gateway.jwt_dev import mint

        token = mint("cli", [role], 300, state_dir=(state_dir or settings.state_dir) / "edge")
    return httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30)


def _name(consultation: str) -> str:
    return (
        consultation
        if consultation.startswith("consultations/")
        else f"consultations/{consultation}"
    )


def fail(response: httpx.Response) -> NoReturn:
    """Print the HTTP error (its JSON body) and exit 1."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    click.echo(
        f"HTTP {response.status_code}: {json.dumps(body) if not isinstance(body, str) else body}",
        err=True,
    )
    sys.exit(1)


@click.command()
@click.argument("consultation")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the markdown here.",
)
@URL_OPT
@STATE_OPT
def report(consultation: str, out: Path | None, url: str | None, state_dir: Path | None) -> None:
    """Print (or write with --out) the markdown report of CONSULTATION (an id or consultations/ID)."""
    try:
        with edge_client(url, state_dir, "clinician") as client:
            response = client.get(f"/v1/{_name(consultation)}")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the edge: {exc}") from None
    if response.status_code != 200:
        fail(response)
    markdown = response.json()["consultation"].get("report_markdown", "")
    if not markdown:
        raise click.ClickException(
            "this consultation has no report (the report service was unavailable)"
        )
    if out:
        out.write_text(markdown)
        click.echo(f"report written to {out}")
    else:
        click.echo(markdown)


@click.command()
@click.argument("consultation")
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
@URL_OPT
@STATE_OPT
def ask(
    consultation: str, question: str, as_json: bool, url: str | None, state_dir: Path | None
) -> None:
    """Ask QUESTION about CONSULTATION; the answer cites report sections and evidence passages,
    or says plainly why it cannot answer."""
    try:
        with edge_client(url, state_dir, "clinician") as client:
            response = client.post(f"/v1/{_name(consultation)}:ask", json={"question": question})
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the edge: {exc}") from None
    if response.status_code != 200:
        fail(response)
    answer = response.json()
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"[{answer.get('kind')}] {answer.get('answer')}")
    for key, label in (
        ("section_ids", "sections"),
        ("passage_ids", "passages"),
        ("rule_ids", "rules"),
    ):
        if answer.get(key):
            click.echo(f"  {label}: {', '.join(answer[key])}")
