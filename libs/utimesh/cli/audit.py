"""`utimesh audit verify` and `utimesh audit list`: check and read the hash-chained audit log.

Exit codes of `verify`: 0 the chain is intact, 1 it is broken (the first broken seq and the
reason are printed), 2 the database could not be read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.table import Table

from mesh.stack import Stack, StackSettings
from utimesh.db import audit as audit_log
from utimesh.db.pool import on_connection, redact_dsn

_T = TypeVar("_T")

_DB_OPT = click.option(
    "--database-url",
    envvar="UTIMESH_DATABASE_URL",
    default=None,
    help="PostgreSQL URL (env UTIMESH_DATABASE_URL; default: the local stack's database).",
)


class DatabaseUnreadable(click.ClickException):
    """The database could not be reached or has no audit tables (exit code 2)."""

    exit_code = 2


def _database_url(given: str | None) -> str:
    if given:
        return given
    return Stack.from_settings(StackSettings()).service_env()["UTIMESH_DATABASE_URL"]


def _run(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
    try:
        return asyncio.run(on_connection(dsn, "utimesh-audit", work))
    except audit_log.AuditSchemaMissing as exc:
        raise DatabaseUnreadable(f"{exc} ({redact_dsn(dsn)})") from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnreadable(
            f"cannot read the audit log at {redact_dsn(dsn)}: {type(exc).__name__}: {exc}"
        ) from None


@click.group()
def audit() -> None:
    """Check and read the tamper-evident audit log."""


@audit.command()
@_DB_OPT
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(database_url: str | None, as_json: bool) -> None:
    """Walk the whole hash chain; exit 0 when intact, 1 at the first broken event."""
    dsn = _database_url(database_url)
    result = _run(dsn, audit_log.verify)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "checked": result.checked,
                    "head_seq": result.head_seq,
                    "first_broken_seq": result.first_broken_seq,
                    "reason": result.reason,
                }
            )
        )
    elif result.ok:
        click.echo(f"audit chain intact: {result.checked} events (head seq {result.head_seq})")
    else:
        click.echo(
            f"audit chain BROKEN at seq {result.first_broken_seq}: {result.reason} "
            f"({result.checked} events checked out before it)",
            err=True,
        )
    if not result.ok:
        raise SystemExit(1)


@audit.command(name="list")
@_DB_OPT
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Events."
)
@click.option("--resource", default=None, help="Only events about this resource name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def list_(database_url: str | None, limit: int, resource: str | None, as_json: bool) -> None:
    """Show the latest audit events, newest first."""
    dsn = _database_url(database_url)

    async def work(conn: asyncpg.Connection) -> list[audit_log.AuditEvent]:
        return await audit_log.list_events(conn, limit=limit, resource=resource)

    events = _run(dsn, work)
    if as_json:
        for event in events:
            click.echo(json.dumps(_as_dict(event)))
        return
    table = Table(title=f"audit events (latest {len(events)})")
    for column in ("seq", "at", "actor", "action", "resource", "request id", "payload", "hash"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(
            str(e.seq),
            e.at.isoformat(timespec="seconds"),
            e.actor,
            e.action,
            e.resource,
            e.request_id or "-",
            audit_log.canonical_json(e.payload),
            e.hash[:12],
        )
    Console().print(table)


def _as_dict(event: audit_log.AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "id": str(event.id),
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "resource": event.resource,
        "request_id": event.request_id,
        "payload": dict(event.payload),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
