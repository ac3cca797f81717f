"""`utimesh token`: print a development JWT that the local edge gateway accepts."""

from __future__ import annotations

from pathlib import Path

import click

# Kept in step with gateway.policy.ROLES (checked by tests/gateway/test_jwt_dev.py); written out
# here so that `utimesh --help` does not import the gateway.
ROLES = ("clinician", "pharmacist", "prescriber", "auditor", "operator")


@click.command()
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(ROLES),
    help="A role claim; repeat for several.",
)
@click.option("--sub", default="dev-user", show_default=True, help="The token's subject.")
@click.option(
    "--ttl",
    type=click.IntRange(min=1, max=7 * 24 * 3600),
    default=3600,
    show_default=True,
    help="Lifetime in seconds.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The edge's state dir holding the dev key pair (default: $UTIMESH_EDGE_STATE_DIR, "
    "else $XDG_STATE_HOME/utimesh/edge).",
)
@click.option("--audience", default=None, help="Override the audience (testing a refusal).")
def token(
    roles: tuple[str, ...], sub: str, ttl: int, state_dir: Path | None, audience: str | None
) -> None:
    """Print a dev RS256 JWT for the local edge, creating the dev key pair if absent.

    Use it as `curl -H "Authorization: Bearer $(utimesh token --role clinician)" ...`.
    For local development only: production tokens come from the identity provider."""
    from gateway.jwt_dev import DEV_AUDIENCE, ensure_dev_issuer
    from gateway.settings import default_state_dir

    issuer = ensure_dev_issuer(state_dir or default_state_dir())
    click.echo(issuer.mint(sub, list(dict.fromkeys(roles)), ttl, audience=audience or DEV_AUDIENCE))
