"""A real embedded PostgreSQL for the data-layer tests, started once per session with the
stack's own `PostgresComponent` (pgserver's binaries) on a free loopback port, and a fresh
database per test module (or per test, for tests that break what they touch)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from mesh.components import PostgresComponent
from mesh.stack import Stack
from utimesh.db.migrations import migrate
from utimesh.db.pool import Pool, create_pool

_counter = itertools.count(1)


@dataclass
class PgServer:
    """The running test server: `url(db)` is a DSN for database `db`."""

    component: PostgresComponent
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def restart(self) -> None:
        """Stop and start PostgreSQL (data kept): what a host or container restart does."""
        await self.component.stop()
        await self.component.start()
        await _wait_tcp(self.component)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_tcp(component: PostgresComponent, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await component.healthy():
        if time.monotonic() > deadline:
            raise RuntimeError("embedded PostgreSQL did not open its port")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    # Not under pytest's basetemp: pytest makes /tmp/pytest-of-<user> private (0700) at every
    # start, which would lock the `pgserver` system user (used when running as root) out of
    # the data directory whenever another pytest run starts on the machine.
    state = Path(tempfile.mkdtemp(prefix="utimesh-pg-"))
    port = _free_port()
    component = PostgresComponent("postgres", Stack(state_dir=state, base_port=port - 20))
    assert component.port == port

    async def start() -> None:
        await component.start()
        await _wait_tcp(component)
        # Throw-away data: skip fsyncs (a clean stop still writes everything, so the restart
        # test keeps its meaning). Creating ~40 databases is then quick, and so is stopping.
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        try:
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    try:
        asyncio.run(start())
        yield PgServer(component, port)
    finally:
        asyncio.run(component.stop())
        shutil.rmtree(state, ignore_errors=True)


async def create_database(server: PgServer, label: str) -> str:
    """A new, empty database; returns its DSN."""
    name = f"t{os.getpid()}_{next(_counter)}_{label}"[:63].lower()
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.url(name)


def _label(request: pytest.FixtureRequest) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in request.node.name)


@pytest.fixture(scope="module")
def module_database_url(pg_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh database for the test module, migrated to the latest schema."""

    async def make() -> str:
        url = await create_database(pg_server, _label(request))
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return url

    return asyncio.run(make())


@pytest.fixture
async def fresh_url(pg_server: PgServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty (unmigrated) database for this test only."""
    return await create_database(pg_server, _label(request))


@pytest.fixture
async def fresh_migrated_url(fresh_url: str) -> str:
    """A fresh database for this test only, migrated to the latest schema."""
    conn = await asyncpg.connect(fresh_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return fresh_url


@contextlib.asynccontextmanager
async def open_pool(url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(url, min_size=1, max_size=5, application_name="utimesh-tests")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def pool(module_database_url: str) -> AsyncIterator[Pool]:
    """A pool on the module's database, closed after the test."""
    async with open_pool(module_database_url) as p:
        yield p
