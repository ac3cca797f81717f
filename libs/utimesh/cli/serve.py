"""`utimesh serve SERVICE`: run one service process in the foreground."""

from __future__ import annotations

import click


@click.group()
def serve() -> None:
    """Run one utimesh service in the foreground (SIGTERM drains it gracefully)."""


@serve.command("triage")
@click.option(
    "--host", default=None, help="Address to bind (env UTIMESH_TRIAGE_HOST, default 127.0.0.1)."
)
@click.option(
    "--port",
    type=int,
    default=None,
    help="Port (env UTIMESH_TRIAGE_PORT, default 50051; 0 = any free port).",
)
def serve_triage(host: str | None, port: int | None) -> None:
    """The triage service: deterministic rules over gRPC."""
    from services.triage.main import TriageSettings, run

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    run(TriageSettings(**overrides))  # type: ignore[arg-type]
