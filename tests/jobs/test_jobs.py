"""Queued consultations (StartConsultation + google.longrunning.Operations) against real
PostgreSQL and Redis, with workers running in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from google.longrunning import operations_pb2
from google.rpc import error_details_pb2

from services.consult.jobs.store import OperationStore
from services.consult.jobs.stream import DEAD_LETTERS
from services.consult.jobs.worker import Handled, WorkerConfig
from tests.data.conftest import PgServer, create_database, open_pool
from tests.jobs.support import JobMesh, consultation, job_mesh, metadata, start_request
from utimesh.clinical.v1 import clinical_pb2 as pb
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.db.crypto import keyring_from_env
from utimesh.db.migrations import migrate
from utimesh.rules import Knowledge

FAST = WorkerConfig(
    concurrency=4,
    lease_s=2.0,
    backoff_base_s=0.05,
    block_ms=200,
    reclaim_every_s=0.3,
    sweep_every_s=0.2,
)


@pytest_asyncio.fixture
async def mesh(
    knowledge: Knowledge, fresh_migrated_url: str, redis_url: str, redis: aioredis.Redis
) -> AsyncIterator[JobMesh]:
    async with job_mesh(knowledge, fresh_migrated_url, redis_url, max_attempts=3) as m:
        yield m


async def start(mesh: JobMesh, **kwargs: object) -> operations_pb2.Operation:
    return await mesh.consult.StartConsultation(start_request(**kwargs), timeout=10)  # type: ignore[arg-type]


async def test_start_returns_at_once_and_a_worker_completes_it(mesh: JobMesh) -> None:
    op = await start(mesh, request_id="rq-1")
    assert op.name.startswith("operations/") and not op.done
    assert metadata(op).state == cpb.OPERATION_STATE_QUEUED
    assert metadata(op).max_attempts == 3
    # Nothing runs it until a worker is there: it waits, durably.
    await asyncio.sleep(0.3)
    again = await mesh.operations.GetOperation(
        operations_pb2.GetOperationRequest(name=op.name), timeout=5
    )
    assert not again.done and metadata(again).state == cpb.OPERATION_STATE_QUEUED

    mesh.start_worker(FAST)
    done = await mesh.operations.WaitOperation(
        operations_pb2.WaitOperationRequest(name=op.name), timeout=30
    )
    assert done.done and not done.HasField("error")
    meta = metadata(done)
    assert meta.state == cpb.OPERATION_STATE_SUCCEEDED and meta.attempts == 1
    c = consultation(done)
    assert c.name == f"consultations/{op.name.removeprefix('operations/')}" == meta.consultation
    assert c.decision == pb.DECISION_RECOMMEND_TREATMENT and c.report_markdown
    got = await mesh.consult.GetConsultation(cpb.GetConsultationRequest(name=c.name), timeout=5)
    assert got.consultation.name == c.name


async def test_the_same_request_id_returns_the_same_operation(mesh: JobMesh) -> None:
    first = await start(mesh, request_id="rq-same")
    second = await start(mesh, request_id="rq-same")
    assert first.name == second.name
    assert await mesh.redis.xlen("utimesh:jobs:consultations") == 1  # queued once


async def test_bad_input_is_refused_before_anything_is_queued(mesh: JobMesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.consult.StartConsultation(cpb.StartConsultationRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = start_request()
    request.profile = "XX-NOPE"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.consult.StartConsultation(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await mesh.operations.ListOperations(operations_pb2.ListOperationsRequest(), timeout=5)
    assert not listed.operations


async def test_cancel_a_queued_operation(mesh: JobMesh) -> None:
    op = await start(mesh)
    await mesh.operations.CancelOperation(
        operations_pb2.CancelOperationRequest(name=op.name), timeout=5
    )
    mesh.start_worker(FAST)
    await asyncio.sleep(0.5)  # the worker sees the message and drops it
    got = await mesh.operations.GetOperation(
        operations_pb2.GetOperationRequest(name=op.name), timeout=5
    )
    assert got.done and got.error.code == grpc.StatusCode.CANCELLED.value[0]
    assert metadata(got).state == cpb.OPERATION_STATE_CANCELLED and metadata(got).attempts == 0
    count = await mesh.dbs.pool.fetchval("SELECT count(*) FROM consultations")
    assert count == 0


async def test_list_pages_and_filters(mesh: JobMesh) -> None:
    names = [(await start(mesh)).name for _ in range(5)]
    page = await mesh.operations.ListOperations(
        operations_pb2.ListOperationsRequest(name="operations", page_size=2), timeout=5
    )
    assert [o.name for o in page.operations] == names[::-1][:2] and page.next_page_token
    rest = await mesh.operations.ListOperations(
        operations_pb2.ListOperationsRequest(page_size=10, page_token=page.next_page_token),
        timeout=5,
    )
    assert [o.name for o in rest.operations] == names[::-1][2:] and not rest.next_page_token
    done = await mesh.operations.ListOperations(
        operations_pb2.ListOperationsRequest(filter="done = true"), timeout=5
    )
    assert not done.operations
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.operations.ListOperations(
            operations_pb2.ListOperationsRequest(filter="state=RUNNING"), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await mesh.operations.GetOperation(
            operations_pb2.GetOperationRequest(name="operations/x"), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def error_info(op: operations_pb2.Operation) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert op.error.details and op.error.details[0].Unpack(info)
    return info


async def test_an_unreadable_job_is_dead_lettered_with_its_reason(mesh: JobMesh) -> None:
    op = await start(mesh)
    await mesh.dbs.pool.execute(
        "UPDATE operations SET payload = '\\x01056a6f627331deadbeef'::bytea WHERE name = $1",
        op.name,
    )
    mesh.start_worker(FAST)
    [done] = await mesh.wait_done([op.name], within_s=20)
    assert done.error.code == grpc.StatusCode.DATA_LOSS.value[0]
    assert error_info(done).reason == "DEAD_LETTERED"
    assert "cannot be read" in done.error.message
    assert metadata(done).dead_lettered and metadata(done).state == cpb.OPERATION_STATE_FAILED
    dead = await mesh.redis.xrange(DEAD_LETTERS)
    assert [fields[b"op"].decode() for _, fields in dead] == [op.name]


async def test_a_failing_job_is_retried_with_backoff_then_dead_lettered(mesh: JobMesh) -> None:
    op = await start(mesh)
    # This worker's triage is down: every attempt fails with UNAVAILABLE (retryable).
    mesh.start_worker(FAST, triage_target="127.0.0.1:1")
    [done] = await mesh.wait_done([op.name], within_s=30)
    meta = metadata(done)
    assert meta.attempts == 3 and meta.dead_lettered
    assert error_info(done).reason == "DEAD_LETTERED"
    assert "gave up after 3 attempts" in done.error.message
    assert "TRIAGE_UNAVAILABLE" in done.error.message
    assert await mesh.dbs.pool.fetchval("SELECT count(*) FROM consultations") == 0
    # Every delivery was acknowledged: failed attempts too (the sweep re-sends; nothing lingers).
    await asyncio.sleep(0.3)
    assert (await mesh.redis.xpending("utimesh:jobs:consultations", "workers"))["pending"] == 0


async def test_a_job_run_twice_keeps_one_consultation_and_one_memory_update(mesh: JobMesh) -> None:
    """What a worker dying after its commit but before XACK leads to: the job is handled again.
    The second run finds the stored consultation and changes nothing."""
    op = await start(mesh, patient_id="MRN-ONCE-1", request_id="rq-once")
    worker = mesh.worker(FAST)
    assert await worker.handle(op.name) is Handled.ENDED
    # The lease ran out as if the worker had died before acknowledging; the op is done, so a
    # redelivered message is dropped...
    assert await worker.handle(op.name) is Handled.NOT_OURS
    # ...and even a forced second attempt (state rewound) writes nothing new.
    await mesh.dbs.pool.execute(
        "UPDATE operations SET done = false, state = 'running', lease_until = now() - interval '1s'"
        " WHERE name = $1",
        op.name,
    )
    assert await worker.handle(op.name) is Handled.ENDED
    pool = mesh.dbs.pool
    assert await pool.fetchval("SELECT count(*) FROM consultations") == 1
    assert await pool.fetchval("SELECT count(*) FROM memory_updates") == 1
    assert await pool.fetchval("SELECT count(*) FROM memory_episodes") == 1
    got = await mesh.operations.GetOperation(
        operations_pb2.GetOperationRequest(name=op.name), timeout=5
    )
    assert metadata(got).attempts == 2 and consultation(got).patient.startswith("patients/")


async def test_a_job_whose_worker_dies_every_time_is_dead_lettered(mesh: JobMesh) -> None:
    """A poison job that kills its worker never reaches a failure handler: its attempts are
    counted when taken, and one more than allowed dead-letters it unrun."""
    op = await start(mesh)
    await mesh.dbs.pool.execute(
        "UPDATE operations SET state = 'running', attempts = max_attempts,"
        " lease_owner = 'dead', lease_until = now() - interval '1s' WHERE name = $1",
        op.name,
    )
    assert await mesh.worker(FAST).handle(op.name) is Handled.ENDED
    got = await mesh.operations.GetOperation(
        operations_pb2.GetOperationRequest(name=op.name), timeout=5
    )
    assert got.done and error_info(got).reason == "DEAD_LETTERED"
    assert "gave up after 3 attempts (each ended with its worker)" in got.error.message
    assert got.error.code == grpc.StatusCode.ABORTED.value[0]
    assert await mesh.dbs.pool.fetchval("SELECT count(*) FROM consultations") == 0


async def test_reads_that_write_nothing_go_to_the_read_replica(
    mesh: JobMesh, pg_server: PgServer
) -> None:
    """With UTIMESH_DATABASE_READ_URL, Get and List of operations read the replica (here a
    second database that has seen none of the writes); writes go to the primary."""
    replica_url = await create_database(pg_server, "replica")
    async with open_pool(replica_url) as replica:
        await migrate(replica)
        store = OperationStore(mesh.dbs.pool, keyring_from_env(), read_pool=replica)
        row, created = await store.create(start_request(), actor="tester")
        assert created
        assert await mesh.dbs.pool.fetchval("SELECT count(*) FROM operations") == 1  # primary
        assert await store.get(row.name) is None  # the replica has not seen it
        assert await store.list(limit=10, after=None, done=None) == []
        primary_only = OperationStore(mesh.dbs.pool, keyring_from_env())
        assert (await primary_only.get(row.name)) is not None


async def test_a_finished_consultation_is_counted_in_the_online_metrics(mesh: JobMesh) -> None:
    from prometheus_client import REGISTRY

    labels = {"profile": "CA-ON", "decision": "recommend_treatment", "outcome": "agreed"}
    before = REGISTRY.get_sample_value("utimesh_consultations_total", labels) or 0.0
    op = await start(mesh)
    mesh.start_worker(FAST)
    await mesh.wait_done([op.name], within_s=30)
    assert REGISTRY.get_sample_value("utimesh_consultations_total", labels) == before + 1


async def test_progress_is_written_at_most_once_per_interval_and_never_lost() -> None:
    from services.consult.jobs.worker import _Progress

    written: list[str] = []

    async def write(stage: str) -> None:
        written.append(stage)

    progress = _Progress(write, every_s=0.1)
    progress.report("triage")
    await asyncio.sleep(0.01)
    assert written == ["triage"]  # the first at once
    progress.report("doctor_propose")
    progress.report("pharmacist_review")
    await asyncio.sleep(0.01)
    assert written == ["triage"]  # the rest wait for the interval
    await asyncio.sleep(0.15)
    assert written == ["triage", "pharmacist_review"]  # the latest, late rather than lost
    progress.report("pharmacist_review")
    await asyncio.sleep(0.15)
    assert written == ["triage", "pharmacist_review"]  # nothing new: nothing written
    progress.close()
