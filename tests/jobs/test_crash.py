"""Crash tests of the job queue with real worker processes (`utimesh serve worker`): kill -9 a
worker mid-consultation; restart Redis and PostgreSQL while 50 queued consultations run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from google.longrunning import operations_pb2

from mesh.components import RedisComponent
from mesh.stack import Stack
from tests.data.conftest import PgServer
from tests.jobs.support import (
    JobMesh,
    SlowProxy,
    job_mesh,
    metadata,
    start_request,
    worker_process,
)
from tests.redis.conftest import free_port
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.rules import Knowledge


async def state_of(mesh: JobMesh, name: str) -> cpb.ConsultationOperationMetadata:
    op = await mesh.operations.GetOperation(
        operations_pb2.GetOperationRequest(name=name), timeout=5
    )
    return metadata(op)


async def wait_for(predicate, within_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def mesh(
    knowledge: Knowledge, fresh_migrated_url: str, redis_url: str, redis: object
) -> AsyncIterator[JobMesh]:
    async with job_mesh(knowledge, fresh_migrated_url, redis_url, max_attempts=5) as m:
        yield m


async def test_kill_9_a_worker_mid_consultation_and_the_job_completes_once(mesh: JobMesh) -> None:
    doctor_port = int(mesh.targets["doctor"].rsplit(":", 1)[1])
    async with SlowProxy(doctor_port, delay_s=1.5) as slow_doctor:
        mesh.targets["doctor"] = slow_doctor.target  # the workers' doctor answers slowly
        op = await mesh.consult.StartConsultation(
            start_request(request_id="crash-1", patient_id="MRN-CRASH-1"), timeout=10
        )
        with worker_process(mesh, name="doomed") as doomed:

            async def running() -> bool:
                m = await state_of(mesh, op.name)
                return m.state == cpb.OPERATION_STATE_RUNNING and m.stage.startswith("doctor")

            await wait_for(running, 30, "the first worker to wait on the doctor")
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(5)
        assert (await state_of(mesh, op.name)).state != cpb.OPERATION_STATE_SUCCEEDED
        assert await mesh.dbs.pool.fetchval("SELECT count(*) FROM consultations") == 0

        with worker_process(mesh, name="heir"):
            [done] = await mesh.wait_done([op.name], within_s=60)
    meta = metadata(done)
    assert meta.state == cpb.OPERATION_STATE_SUCCEEDED and meta.attempts == 2
    pool = mesh.dbs.pool
    assert await pool.fetchval("SELECT count(*) FROM consultations") == 1
    assert await pool.fetchval("SELECT count(*) FROM memory_updates") == 1
    assert await pool.fetchval("SELECT count(*) FROM memory_episodes") == 1
    assert await mesh.redis.xpending("utimesh:jobs:consultations", "workers") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


@pytest_asyncio.fixture
async def restartable_redis(tmp_path: Path) -> AsyncIterator[RedisComponent]:
    """The stack's own Redis part (append-only file on), restartable on the same port and data."""
    redis = RedisComponent("redis", Stack(state_dir=tmp_path, base_port=free_port() - 21))
    await restart(redis, stop_first=False)
    try:
        yield redis
    finally:
        await redis.stop()


async def restart(redis: RedisComponent, *, stop_first: bool = True) -> None:
    if stop_first:
        await redis.stop()
    await redis.start()
    deadline = time.monotonic() + 10
    while not await redis.healthy():
        assert time.monotonic() < deadline, "redis-server did not start"
        await asyncio.sleep(0.02)


async def test_restart_redis_and_postgres_during_50_queued_consultations(
    knowledge: Knowledge,
    fresh_migrated_url: str,
    pg_server: PgServer,
    restartable_redis: RedisComponent,
) -> None:
    async with job_mesh(
        knowledge,
        fresh_migrated_url,
        f"redis://127.0.0.1:{restartable_redis.port}/0",
        max_attempts=10,
        resend_after_s=5,
    ) as mesh:
        ops = await asyncio.gather(
            *(
                mesh.consult.StartConsultation(start_request(request_id=f"bulk-{i}"), timeout=20)
                for i in range(50)
            )
        )
        names = [op.name for op in ops]
        pool = mesh.dbs.pool
        doctor_port = int(mesh.targets["doctor"].rsplit(":", 1)[1])
        async with SlowProxy(doctor_port, delay_s=0.3) as slow_doctor:
            mesh.targets["doctor"] = slow_doctor.target  # jobs take long enough to be cut
            with worker_process(mesh, name="w1"), worker_process(mesh, name="w2"):

                async def some_done() -> bool:
                    return bool(
                        await pool.fetchval("SELECT count(*) >= 3 FROM operations WHERE done")
                    )

                await wait_for(some_done, 60, "the first jobs to finish")
                await restart(restartable_redis)
                done_before_pg = await pool.fetchval("SELECT count(*) FROM operations WHERE done")
                await pg_server.restart()
                done = await mesh.wait_done_tolerant(names, within_s=120)
        assert done_before_pg < 50, "everything finished before the restarts: test proves nothing"
        states = [metadata(op).state for op in done]
        assert states == [cpb.OPERATION_STATE_SUCCEEDED] * 50
        consultations = {metadata(op).consultation for op in done}
        assert len(consultations) == 50
        assert await pool.fetchval("SELECT count(*) FROM consultations") == 50
        assert await pool.fetchval("SELECT count(DISTINCT request_id) FROM consultations") == 50
