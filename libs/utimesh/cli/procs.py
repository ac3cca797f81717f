"""Starting service processes from the CLI and waiting until they report SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_serving(target: str, service: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll grpc.health.v1 until `service` is SERVING; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"service process exited with code {proc.returncode} before it was ready")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{service or 'server'} at {target} not SERVING after {timeout:g} s")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=min(left, 0.5))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)  # poll interval while the process boots


@contextlib.asynccontextmanager
async def service_process(service: str, health_name: str, timeout: float = 30.0) -> AsyncIterator[str]:
    """Run `utimesh serve SERVICE` on a free loopback port; yield its target; drain on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "utimesh.cli", "serve", service, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        await wait_serving(target, health_name, timeout, proc)
        yield target
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
