"""`utimesh audit verify` and `utimesh audit list` against a real PostgreSQL: exit 0 when the
chain is intact, 1 at the first broken event, 2 when the database cannot be read.

Synchronous tests: the commands run their own event loop, as they do from a terminal."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from click.testing import CliRunner

from tests.data.conftest import PgServer, create_database
from utimesh.cli.audit import audit
from utimesh.db import audit as audit_log
from utimesh.db.migrations import migrate


def _setup(server: PgServer, label: str, events: int) -> str:
    async def make() -> str:
        url = await create_database(server, label)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            for i in range(events):
                await audit_log.append(
                    conn,
                    "consult",
                    "consultation.create",
                    f"consultations/{i}",
                    f"req-{i}",
                    {"consultation_id": f"id-{i}"},
                )
        finally:
            await conn.close()
        return url

    return asyncio.run(make())


def _execute(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def test_verify_exits_0_when_intact(pg_server: PgServer) -> None:
    url = _setup(pg_server, "cli_intact", 3)
    result = CliRunner().invoke(audit, ["verify", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "intact: 3 events" in result.output

    as_json = CliRunner().invoke(audit, ["verify", "--database-url", url, "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == {
        "ok": True,
        "checked": 3,
        "head_seq": 3,
        "first_broken_seq": None,
        "reason": "",
    }


def test_verify_exits_1_at_the_first_broken_event(pg_server: PgServer) -> None:
    url = _setup(pg_server, "cli_broken", 4)
    _execute(url, "UPDATE audit_events SET resource = 'consultations/other' WHERE seq = 2")
    result = CliRunner().invoke(audit, ["verify", "--database-url", url])
    assert result.exit_code == 1
    assert "BROKEN at seq 2" in result.output

    _execute(url, "DELETE FROM audit_events WHERE seq = 1")
    as_json = CliRunner().invoke(audit, ["verify", "--database-url", url, "--json"])
    assert as_json.exit_code == 1
    report = json.loads(as_json.output)
    assert (report["ok"], report["first_broken_seq"]) == (False, 1)


def test_verify_exits_2_when_the_database_cannot_be_read(pg_server: PgServer) -> None:
    unmigrated = _setup_unmigrated(pg_server)
    result = CliRunner().invoke(audit, ["verify", "--database-url", unmigrated])
    assert result.exit_code == 2
    assert "run the migrations" in result.output

    nobody = "postgresql://postgres:secret@127.0.0.1:1/postgres"
    result = CliRunner().invoke(audit, ["verify", "--database-url", nobody])
    assert result.exit_code == 2
    assert "cannot read the audit log" in result.output
    assert "secret" not in result.output


def _setup_unmigrated(server: PgServer) -> str:
    return asyncio.run(create_database(server, "cli_unmigrated"))


def test_list_shows_the_latest_events(pg_server: PgServer) -> None:
    url = _setup(pg_server, "cli_list", 3)
    result = CliRunner().invoke(audit, ["list", "--database-url", url, "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["seq"] for r in rows] == [3, 2]
    assert rows[0]["payload"] == {"consultation_id": "id-2"}
    assert rows[0]["prev_hash"] == rows[1]["hash"]

    table = CliRunner().invoke(audit, ["list", "--database-url", url])
    assert table.exit_code == 0, table.output
    assert "audit events (latest 3)" in table.output

    env = {"UTIMESH_DATABASE_URL": url}
    filtered = CliRunner(env=env).invoke(audit, ["list", "--resource", "consultations/0", "--json"])
    assert [json.loads(line)["seq"] for line in filtered.output.splitlines()] == [1]
