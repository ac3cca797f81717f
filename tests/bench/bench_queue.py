"""Queued consultations (StartConsultation -> Redis stream -> workers -> PostgreSQL), with 1 and
2 worker processes.

Run from the repository root with ``python -m tests.bench.bench_queue`` (``make bench``). It
prints a table, writes ``bench-results/queue.json`` and takes about a minute. Loopback only.

Setup: embedded PostgreSQL and Redis (the stack's own components, in a temporary state dir),
triage, doctor, pharmacist, evidence, report and consult as separate processes (``utimesh serve
NAME``, plaintext), and N worker processes (``utimesh serve worker``, concurrency 4 each).
Agents run offline. The client is grpc.aio in this process; every call has a deadline.

1. Throughput: M consultations are started (StartConsultation, 16 at a time) as fast as the
   consult service takes them; consultations/s = M / (time from the first start to the last
   operation done). "done" is read from PostgreSQL (``operations.done``), every 20 ms.
2. Latency at a fixed arrival rate R/s for T s (open loop: a start is sent every 1/R s whether
   or not earlier ones finished): per operation, done_at - created_at as PostgreSQL recorded
   them (start to done, queueing included); p50 and p99.

Every operation must end SUCCEEDED; anything else marks the run FAILED (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc

from mesh.components import PostgresComponent, RedisComponent
from mesh.stack import GRPC_NAMES as SERVICES
from mesh.stack import Stack
from services.consult.worker_main import HEALTH_NAME
from tests.factories import patient
from utimesh.cli.procs import free_port, service_process
from utimesh.codec.clinical import intake_to_proto
from utimesh.consult.v1 import consult_pb2 as cpb
from utimesh.consult.v1 import consult_pb2_grpc
from utimesh.kit.channels import insecure_channel
from utimesh.rules import parse_intake

RESULTS = Path("bench-results")


@contextlib.asynccontextmanager
async def data_stores() -> AsyncIterator[tuple[str, str, Path]]:
    state = Path(tempfile.mkdtemp(prefix="utimesh-bench-queue-"))
    base = free_port() - 20
    stack = Stack(state_dir=state, base_port=base)
    pg, redis = PostgresComponent("postgres", stack), RedisComponent("redis", stack)
    try:
        await pg.start()
        await redis.start()
        for part in (pg, redis):
            deadline = time.monotonic() + 60
            while not await part.healthy():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{part.name} did not start")
                await asyncio.sleep(0.05)
        yield (
            f"postgresql://postgres@127.0.0.1:{pg.port}/postgres",
            f"redis://127.0.0.1:{redis.port}/0",
            state,
        )
    finally:
        await redis.stop()
        await pg.stop()
        shutil.rmtree(state, ignore_errors=True)


def request() -> cpb.StartConsultationRequest:
    r = cpb.StartConsultationRequest(intake=intake_to_proto(parse_intake(patient())))
    r.request_id = str(uuid.uuid4())
    return r


async def wait_all_done(conn: asyncpg.Connection, names: list[str], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while await conn.fetchval(
        "SELECT count(*) FROM operations WHERE done AND name = ANY($1)", names
    ) < len(names):
        if time.monotonic() > deadline:
            raise TimeoutError("operations not done in time")
        await asyncio.sleep(0.02)


async def throughput(
    stub: consult_pb2_grpc.ConsultationServiceStub, conn: asyncpg.Connection, m: int
) -> dict[str, float]:
    queue = [request() for _ in range(m)]
    names: list[str] = []
    started = time.perf_counter()

    async def client() -> None:
        while queue:
            op = await stub.StartConsultation(queue.pop(), timeout=10)
            names.append(op.name)

    await asyncio.gather(*(client() for _ in range(16)))
    enqueued = time.perf_counter() - started
    await wait_all_done(conn, names, 300)
    elapsed = time.perf_counter() - started
    await check_succeeded(conn, names)
    return {
        "jobs": m,
        "enqueue_s": round(enqueued, 2),
        "s": round(elapsed, 2),
        "per_s": round(m / elapsed, 1),
    }


async def fixed_rate(
    stub: consult_pb2_grpc.ConsultationServiceStub,
    conn: asyncpg.Connection,
    rate: float,
    seconds: float,
) -> dict[str, float]:
    names: list[str] = []
    tasks = []

    async def one() -> None:
        op = await stub.StartConsultation(request(), timeout=10)
        names.append(op.name)

    t0 = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await wait_all_done(conn, names, 300)
    await check_succeeded(conn, names)
    rows = await conn.fetch(
        "SELECT extract(epoch FROM done_at - created_at) * 1000 AS ms FROM operations"
        " WHERE name = ANY($1)",
        names,
    )
    ms = sorted(float(r["ms"]) for r in rows)
    return {
        "rate_per_s": rate,
        "jobs": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
    }


async def check_succeeded(conn: asyncpg.Connection, names: list[str]) -> None:
    bad = await conn.fetchval(
        "SELECT count(*) FROM operations WHERE name = ANY($1) AND state <> 'succeeded'", names
    )
    if bad:
        raise RuntimeError(f"{bad} operations did not succeed")


async def main(args: argparse.Namespace) -> int:
    results: dict[str, object] = {}
    ok = True
    async with data_stores() as (db_url, redis_url, state):
        env = {
            "UTIMESH_DATABASE_URL": db_url,
            "UTIMESH_REDIS_URL": redis_url,
            "UTIMESH_PHI_KEY_FILE": str(state / "phi-keys.json"),
            "UTIMESH_CONSULT_RATE_PER_MINUTE": "10000000",
            "UTIMESH_CONSULT_RATE_BURST": "1000000",
            "UTIMESH_WORKER_LOG_LEVEL": "WARNING",  # a line per job otherwise
        }
        os.environ.update(env)
        async with contextlib.AsyncExitStack() as stack:
            agents = ("triage", "doctor", "pharmacist", "evidence", "report")
            targets = await asyncio.gather(
                *(stack.enter_async_context(service_process(n, SERVICES[n], 60)) for n in agents)
            )
            env |= {
                f"UTIMESH_CONSULT_{n.upper()}_TARGET": t
                for n, t in zip(agents, targets, strict=True)
            }
            consult = await stack.enter_async_context(
                service_process("consult", SERVICES["consult"], 60, env)
            )
            channel = insecure_channel(consult)
            stack.push_async_callback(channel.close)
            stub = consult_pb2_grpc.ConsultationServiceStub(channel)
            conn = await asyncpg.connect(db_url)
            stack.push_async_callback(conn.close)
            for workers in (1, 2):
                async with contextlib.AsyncExitStack() as pool:
                    await asyncio.gather(
                        *(
                            pool.enter_async_context(
                                service_process(
                                    "worker",
                                    HEALTH_NAME,
                                    60,
                                    env | {"UTIMESH_WORKER_CONSUMER": f"bench-{i}"},
                                )
                            )
                            for i in range(workers)
                        )
                    )
                    try:
                        await throughput(stub, conn, 20)  # warm-up
                        tput = await throughput(stub, conn, args.jobs)
                        lat = await fixed_rate(stub, conn, args.rate, args.seconds)
                    except (RuntimeError, TimeoutError, grpc.aio.AioRpcError) as exc:
                        ok = False
                        results[f"workers_{workers}"] = {"error": repr(exc)}
                        print(f"{workers} worker(s): FAILED {exc!r}")
                        continue
                    results[f"workers_{workers}"] = {"throughput": tput, "fixed_rate": lat}
    print("\nqueued consultations (offline agents, workers x4 concurrency, 2 cores shared by all)")
    print(f"{'workers':>8} {'jobs':>6} {'per s':>8} {'rate/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for workers in (1, 2):
        r = results.get(f"workers_{workers}")
        if isinstance(r, dict) and "throughput" in r:
            t, f = r["throughput"], r["fixed_rate"]
            print(
                f"{workers:>8} {t['jobs']:>6} {t['per_s']:>8} {f['rate_per_s']:>8g}"
                f" {f['p50_ms']:>8} {f['p99_ms']:>8}"
            )
    await asyncio.to_thread(write_results, results)
    return 0 if ok else 1


def write_results(results: dict[str, object]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "queue.json").write_text(json.dumps(results, indent=1))


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300, help="jobs for the throughput run")
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the fixed-rate run")
    raise SystemExit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
