"""A small schema migration runner.

Migrations are SQL files named `NNNN_name.sql` (four digits, then lower-case words) shipped in
`utimesh/db/migrations/`. `migrate` applies the pending ones in version order, all inside one
transaction that first takes a transaction-scoped advisory lock: two processes starting at once
queue on the lock, and the second finds nothing left to do. Each applied file is recorded in
`schema_migrations` (version, name, checksum, applied_at). A run refuses to start when an
applied file was changed since (checksum mismatch), renamed or removed, or when a pending file
sorts before an applied one: history is only ever appended to, never edited.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from utimesh.db.pool import Conn, Pool

log = logging.getLogger(__name__)

#: Key of the transaction-scoped advisory lock migrations run under ("utimesh" as an integer).
LOCK_KEY = int.from_bytes(b"utimesh", "big")
_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files or the database's migration history are not as they must be."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str
    checksum: str  # SHA-256 (hex) of the file's text with line endings normalised to "\n"

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @classmethod
    def from_text(cls, filename: str, text: str) -> Migration:
        """Parse `filename` (`NNNN_name.sql`); MigrationError if it does not fit."""
        match = _FILENAME.match(filename)
        if match is None:
            raise MigrationError(f"migration file {filename!r} is not named NNNN_name.sql")
        normalised = text.replace("\r\n", "\n")
        return cls(
            version=int(match["version"]),
            name=match["name"],
            sql=normalised,
            checksum=hashlib.sha256(normalised.encode("utf-8")).hexdigest(),
        )


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """One row of `schema_migrations`."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What one `migrate` call did."""

    applied: tuple[Migration, ...]  # applied by this call, in order
    version: int  # the schema version now (0 = none)


def _check_versions(migrations: Iterable[Migration]) -> tuple[Migration, ...]:
    ordered = tuple(sorted(migrations, key=lambda m: m.version))
    for before, after in itertools.pairwise(ordered):
        if before.version == after.version:
            raise MigrationError(
                f"two migrations share version {before.version:04d}: "
                f"{before.filename} and {after.filename}"
            )
    if ordered and ordered[0].version < 1:
        raise MigrationError("migration versions start at 0001")
    return ordered


def load_migrations(directory: Traversable | Path | None = None) -> tuple[Migration, ...]:
    """The migrations in `directory` (default: the packaged ones), in version order.

    Files not ending in `.sql` are ignored; a `.sql` file with a bad name is an error. This reads
    files: call it from a thread (as `migrate` does) when an event loop is running."""
    root = directory if directory is not None else resources.files("utimesh.db") / "migrations"
    found = [
        Migration.from_text(entry.name, entry.read_text(encoding="utf-8"))
        for entry in root.iterdir()
        if entry.is_file() and entry.name.endswith(".sql")
    ]
    return _check_versions(found)


async def applied_migrations(conn: Conn) -> list[AppliedMigration]:
    """The rows of `schema_migrations` in version order (empty when the table does not exist)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    )
    return [AppliedMigration(r["version"], r["name"], r["checksum"], r["applied_at"]) for r in rows]


def _plan(known: Sequence[Migration], applied: Sequence[AppliedMigration]) -> list[Migration]:
    """The migrations still to apply; MigrationError when the history does not match the files."""
    by_version = {m.version: m for m in known}
    for row in applied:
        mine = by_version.get(row.version)
        label = f"{row.version:04d}_{row.name}.sql"
        if mine is None:
            raise MigrationError(
                f"the database has migration {label} which this code does not have "
                "(was it run by newer code?)"
            )
        if mine.name != row.name:
            raise MigrationError(
                f"migration {row.version:04d} was applied as {label} but is now {mine.filename}"
            )
        if mine.checksum != row.checksum:
            raise MigrationError(
                f"migration {label} was changed after it was applied (checksum "
                f"{row.checksum[:12]}… in the database, {mine.checksum[:12]}… now): "
                "add a new migration instead of editing an applied one"
            )
    done = {row.version for row in applied}
    latest = max(done, default=0)
    pending = [m for m in known if m.version not in done]
    for m in pending:
        if m.version < latest:
            raise MigrationError(
                f"migration {m.filename} is older than the applied {latest:04d}: "
                "renumber it after the latest applied migration"
            )
    return pending


async def migrate(
    target: Conn | Pool,
    migrations: Sequence[Migration] | None = None,
    *,
    timeout_s: float = 300.0,
) -> MigrationResult:
    """Bring the schema up to date: apply every pending migration, in order, in one transaction.

    Safe to call from several processes at once (they queue on an advisory lock) and idempotent.
    `migrations` defaults to the packaged files. `timeout_s` bounds the whole run (the wait for
    the lock included) on the server. Raises MigrationError without changing anything when the
    applied history does not match the files; an error in a migration's SQL rolls back the run.
    """
    if migrations is None:
        known = await asyncio.to_thread(load_migrations)
    else:
        known = _check_versions(migrations)
    if isinstance(target, Pool):
        async with target.acquire() as conn:
            return await _migrate(conn, known, timeout_s)
    return await _migrate(target, known, timeout_s)


async def _migrate(conn: Conn, known: Sequence[Migration], timeout_s: float) -> MigrationResult:
    async with conn.transaction():
        # SET LOCAL takes no bind parameters; the value is an integer we made.
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        pending = _plan(known, await applied_migrations(conn))
        for m in pending:
            log.info("applying migration %s", m.filename)
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.checksum,
            )
        version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
    if pending:
        log.info("schema now at version %04d (%d applied)", version, len(pending))
    return MigrationResult(applied=tuple(pending), version=int(version))
