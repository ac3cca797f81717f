"""`utimesh mcp`: serve utimesh to an MCP client (an assistant) over stdio, via the REST edge.

    utimesh mcp --url https://edge.example             # token from $UTIMESH_TOKEN
    utimesh mcp --dev-role clinician --state-dir DIR   # local stack: mint dev tokens

An MCP client starts it as a subprocess and speaks JSON-RPC on its stdin/stdout; diagnostics
go to stderr. Until the command is registered in the `utimesh` group, run it as
`python -m utimesh.cli.mcp_cmd`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from utimesh.cli.token import ROLES


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command(name="mcp")
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The utimesh REST edge (gateway). Use https:// for anything but loopback.",
)
@click.option(
    "--token-env",
    default="UTIMESH_TOKEN",
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the bearer token from the identity provider.",
)
@click.option(
    "--dev-role",
    "dev_roles",
    multiple=True,
    type=click.Choice(ROLES),
    help="Instead of a token: mint dev tokens with this role (repeat for several) with the "
    "local dev issuer. Local stacks only.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --dev-role: the edge's state dir holding the dev key pair (default: "
    "$UTIMESH_EDGE_STATE_DIR, else $XDG_STATE_HOME/utimesh/edge).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1, max=600),
    default=120.0,
    show_default=True,
    help="Seconds to wait for a consultation or an answer from the edge.",
)
@click.pass_context
def mcp(
    ctx: click.Context,
    url: str,
    token_env: str,
    dev_roles: tuple[str, ...],
    state_dir: Path | None,
    timeout_s: float,
) -> None:
    """Serve the consult_patient, ask_consultation and get_report tools to an MCP client on
    stdin/stdout, calling the REST edge with a bearer token.

    Every result is a DRAFT for prescriber sign-off. Patient data is sent to the edge as given:
    it must carry no identifiers."""
    from utimesh.assist import DevTokens, StaticToken, TokenSource, serve_stdio

    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise click.BadParameter("must be http(s)://host[:port]", param_hint="--url")
    tokens: TokenSource
    if dev_roles:
        if ctx.get_parameter_source("token_env") is ParameterSource.COMMANDLINE:
            raise click.UsageError("--token-env and --dev-role exclude each other")
        from gateway.settings import default_state_dir

        tokens = DevTokens(state_dir or default_state_dir(), dev_roles)
    else:
        if state_dir is not None:
            raise click.UsageError("--state-dir only applies with --dev-role")
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise click.UsageError(
                f"no bearer token: set ${token_env} to a token from the identity provider, "
                "or use --dev-role ROLE with a local dev edge"
            )
        tokens = StaticToken(value)
    if urlsplit(url).scheme == "http" and not _loopback(url):
        click.echo(
            f"warning: sending the bearer token over plain http to {url}; use https", err=True
        )
    asyncio.run(serve_stdio(url, tokens, timeout_s=timeout_s))


if __name__ == "__main__":
    mcp(prog_name="utimesh mcp")
