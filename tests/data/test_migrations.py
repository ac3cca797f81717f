"""The migration runner against a real PostgreSQL: applied once, idempotent, refuses edited
history, rolls back a failing run, and two runners at once (connections or processes) are safe."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from utimesh.db.migrations import (
    Migration,
    MigrationError,
    applied_migrations,
    load_migrations,
    migrate,
)

TABLES = ("consultations", "audit_events", "audit_chain_head", "schema_migrations")


@pytest.fixture
async def conn(fresh_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(fresh_url)
    try:
        yield c
    finally:
        await c.close()


def _files(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


def test_packaged_migrations_are_well_formed() -> None:
    found = load_migrations()
    assert found, "no packaged migrations"
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].filename == "0001_consultations_and_audit.sql"
    assert all(len(m.checksum) == 64 for m in found)


@pytest.mark.parametrize(
    "filename", ["1_x.sql", "0001-x.sql", "0001_X.sql", "0001_.sql", "00001_x.sql", "0001_x_.sql"]
)
def test_bad_file_names_are_refused(tmp_path: Path, filename: str) -> None:
    _files(tmp_path, {filename: "SELECT 1;"})
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    _files(tmp_path, {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;", "notes.txt": "x"})
    with pytest.raises(MigrationError, match="share version 0001"):
        load_migrations(tmp_path)


def test_checksum_ignores_line_endings() -> None:
    unix = Migration.from_text("0001_a.sql", "SELECT 1;\nSELECT 2;\n")
    windows = Migration.from_text("0001_a.sql", "SELECT 1;\r\nSELECT 2;\r\n")
    assert unix.checksum == windows.checksum


async def test_applies_once_then_is_idempotent(conn: asyncpg.Connection) -> None:
    first = await migrate(conn)
    packaged = load_migrations()
    assert [m.version for m in first.applied] == [m.version for m in packaged]
    assert first.version == packaged[-1].version
    assert set(TABLES) <= await _tables(conn)
    rows = await applied_migrations(conn)
    assert [(r.version, r.name, r.checksum) for r in rows] == [
        (m.version, m.name, m.checksum) for m in packaged
    ]
    assert all(r.applied_at is not None for r in rows)

    again = await migrate(conn)
    assert again.applied == ()
    assert again.version == first.version
    assert len(await applied_migrations(conn)) == len(packaged)


async def test_new_migrations_are_applied_in_order(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    d = _files(tmp_path, {"0001_a.sql": "CREATE TABLE a (x int);"})
    assert [m.name for m in (await migrate(conn, load_migrations(d))).applied] == ["a"]
    _files(
        tmp_path,
        {
            "0003_c.sql": "ALTER TABLE a ADD COLUMN z int;",
            "0002_b.sql": "ALTER TABLE a ADD COLUMN y int;",
        },
    )
    result = await migrate(conn, load_migrations(d))
    assert [m.name for m in result.applied] == ["b", "c"]
    assert result.version == 3
    columns = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'a' "
        "ORDER BY ordinal_position"
    )
    assert [c["column_name"] for c in columns] == ["x", "y", "z"]


async def test_refuses_a_changed_checksum(conn: asyncpg.Connection, tmp_path: Path) -> None:
    d = _files(tmp_path, {"0001_a.sql": "CREATE TABLE a (x int);"})
    await migrate(conn, load_migrations(d))
    _files(
        tmp_path,
        {"0001_a.sql": "CREATE TABLE a (x bigint);", "0002_b.sql": "CREATE TABLE b (y int);"},
    )
    with pytest.raises(MigrationError, match=r"0001_a\.sql was changed after it was applied"):
        await migrate(conn, load_migrations(d))
    assert "b" not in await _tables(conn), "nothing may be applied once history is wrong"
    assert [r.version for r in await applied_migrations(conn)] == [1]


async def test_refuses_unknown_renamed_or_out_of_order(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    one = Migration.from_text("0001_a.sql", "CREATE TABLE a (x int);")
    two = Migration.from_text("0002_b.sql", "CREATE TABLE b (x int);")
    three = Migration.from_text("0003_c.sql", "CREATE TABLE c (x int);")
    await migrate(conn, [one, three])
    with pytest.raises(MigrationError, match="this code does not have"):
        await migrate(conn, [one])  # older code meeting a newer database
    with pytest.raises(MigrationError, match=r"was applied as 0001_a\.sql but is now"):
        await migrate(conn, [Migration.from_text("0001_z.sql", one.sql), three])
    with pytest.raises(MigrationError, match="older than the applied 0003"):
        await migrate(conn, [one, two, three])


async def test_a_failing_migration_rolls_back_the_whole_run(conn: asyncpg.Connection) -> None:
    good = Migration.from_text("0001_a.sql", "CREATE TABLE a (x int);")
    bad = Migration.from_text("0002_b.sql", "CREATE TABLE b (x no_such_type);")
    with pytest.raises(asyncpg.UndefinedObjectError):
        await migrate(conn, [good, bad])
    assert "a" not in await _tables(conn)
    assert await applied_migrations(conn) == []
    assert (await migrate(conn, [good])).version == 1  # the connection is usable afterwards


async def test_concurrent_runners_do_not_fail(fresh_url: str) -> None:
    conns = [await asyncpg.connect(fresh_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [r for r in results if r.applied]
    assert len(applied) == 1, "exactly one runner applies, the others find nothing to do"
    assert {r.version for r in results} == {load_migrations()[-1].version}


async def test_two_processes_starting_at_once(fresh_url: str) -> None:
    script = (
        "import asyncio, sys\n"
        "from utimesh.db.pool import create_pool\n"
        "from utimesh.db.migrations import migrate\n"
        "async def main():\n"
        "    pool = await create_pool(sys.argv[1], min_size=1, max_size=1)\n"
        "    try:\n"
        "        print(len((await migrate(pool)).applied))\n"
        "    finally:\n"
        "        await pool.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "ignore",
            "-c",
            script,
            fresh_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    counts = sorted(int(out) for out, _ in outputs)
    assert counts == [0, len(load_migrations())]
