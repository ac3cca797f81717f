"""Starting service processes from the CLI and waiting until they report SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.stack import GRPC_NAMES
from utimesh.kit.channels import supervisor_channel


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_serving(
    target: str, service: str, limit_s: float, exited: Callable[[], bool] | None = None
) -> None:
    """Poll grpc.health.v1 until `service` is SERVING; fail early once `exited()` is true."""
    deadline = time.monotonic() + limit_s
    async with supervisor_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if exited is not None and exited():
                raise RuntimeError(
                    f"the process serving {service or target} exited before it was ready"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{service or 'server'} at {target} not SERVING after {limit_s:g} s"
                )
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=min(left, 0.5)
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)  # poll interval while the process boots


@contextlib.asynccontextmanager
async def service_process(
    service: str, health_name: str, limit_s: float = 30.0, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """Run `utimesh serve SERVICE` on a free loopback port; yield its target; drain on exit."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "utimesh.cli",
        "serve",
        service,
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    target = f"127.0.0.1:{port}"
    try:
        await wait_serving(target, health_name, limit_s, lambda: proc.returncode is not None)
        yield target
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def local_consult_services(
    limit_s: float = 30.0, log_dir: Path | None = None
) -> AsyncIterator[str]:
    """Start triage, doctor, pharmacist, evidence, report and consult on loopback; yield the
    consult target.

    A minimal local mesh for the CLI and the demo (plaintext, no edge); `utimesh up` is the
    full one."""
    async with contextlib.AsyncExitStack() as stack:
        agents = ("triage", "doctor", "pharmacist", "evidence", "report")
        targets = await asyncio.gather(
            *(
                stack.enter_async_context(service_process(name, GRPC_NAMES[name], limit_s))
                for name in agents
            )
        )
        env = {
            f"UTIMESH_CONSULT_{name.upper()}_TARGET": t
            for name, t in zip(agents, targets, strict=True)
        }
        yield await stack.enter_async_context(
            service_process("consult", GRPC_NAMES["consult"], limit_s, env)
        )
