"""Connection pools to the PostgreSQL system of record (asyncpg).

Every connection of a pool carries an `application_name` (visible in `pg_stat_activity`), a
statement timeout, an idle-in-transaction timeout and the UTC time zone, so one stuck query or
forgotten transaction cannot hold a connection or its locks for ever."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

_T = TypeVar("_T")

#: What the data functions accept: a plain connection or one acquired from a pool.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy
#: A pool of connections yielding `asyncpg.Record` rows.
Pool: TypeAlias = asyncpg.Pool


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str = "utimesh",
    statement_timeout_s: float = 30.0,
    idle_in_transaction_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
) -> Pool:
    """Open a pool to `dsn` (a `postgresql://` URL) with `min_size` connections ready.

    `statement_timeout_s` bounds every statement on the server (0 disables it); code that needs
    longer (migrations) raises it with `SET LOCAL` inside its own transaction. Raises OSError or
    an asyncpg error when the server cannot be reached within `connect_timeout_s`."""
    if max_size < 1 or not 0 <= min_size <= max_size:
        raise ValueError(
            f"need 0 <= min_size <= max_size and max_size > 0, got {min_size}/{max_size}"
        )
    settings = {
        "application_name": application_name,
        "statement_timeout": str(int(statement_timeout_s * 1000)),
        "idle_in_transaction_session_timeout": str(int(idle_in_transaction_timeout_s * 1000)),
        "timezone": "UTC",
    }
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings=settings,
        timeout=connect_timeout_s,
    )


async def connect(
    dsn: str, *, application_name: str = "utimesh-cli", connect_timeout_s: float = 10.0
) -> asyncpg.Connection:
    """One connection (for command-line tools), with the same session settings as a pool's."""
    return await asyncpg.connect(
        dsn,
        server_settings={"application_name": application_name, "timezone": "UTC"},
        timeout=connect_timeout_s,
    )


async def on_connection(
    dsn: str, application_name: str, work: Callable[[asyncpg.Connection], Awaitable[_T]]
) -> _T:
    """Run `work` on one connection (command-line tools), closed afterwards whatever happens."""
    conn = await connect(dsn, application_name=application_name)
    try:
        return await work(conn)
    finally:
        await conn.close()


def redact_dsn(dsn: str) -> str:
    """`dsn` with any password replaced by `***`, fit for logs and error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
