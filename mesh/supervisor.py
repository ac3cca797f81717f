"""The local supervisor: one long-lived process that starts a stack in order, waits for health,
restarts crashed parts with backoff, and stops everything cleanly on SIGTERM.

    python -m mesh.supervisor            # normally started by `utimesh up`

State (status, logs, data, certificates) lives under the stack's state dir; the status file is
rewritten on every change so `utimesh status` can read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from mesh.components import Component, components
from mesh.stack import (
    CLIENT_IDENTITIES,
    SERVICES,
    WORKER_IDENTITY,
    Stack,
    StackSettings,
    write_status,
)
from utimesh.kit.logging import configure_logging
from utimesh.kit.tls import ensure_pki

log = logging.getLogger("utimesh.supervisor")

HEALTH_WAIT_S = 90.0
BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


class Supervisor:
    def __init__(self, stack: Stack, parts: list[Component]) -> None:
        self.stack = stack
        self.parts = parts
        self.stopping = asyncio.Event()
        self.reconcile_now = asyncio.Event()
        self.ready = False
        self.next_restart: dict[str, float] = {}

    def publish(self) -> None:
        write_status(
            self.stack,
            {
                "supervisor_pid": os.getpid(),
                "ready": self.ready,
                "base_port": self.stack.base_port,
                "rest_url": self.stack.rest_url,
                "components": {
                    p.name: {"pid": p.pid, "port": p.port, "state": p.state, "restarts": p.restarts}
                    for p in self.parts
                },
            },
        )

    async def _wait_healthy(self, part: Component) -> bool:
        deadline = time.monotonic() + HEALTH_WAIT_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            if part.exited():
                return False
            if await part.healthy():
                return True
            await asyncio.sleep(0.1)  # poll interval while the part boots
        return False

    async def _bring_up(self, part: Component) -> bool:
        log.info("starting", extra={"fields": {"component": part.name, "port": part.port}})
        await part.start()
        self.publish()
        ok = await self._wait_healthy(part)
        part.state = "healthy" if ok else "down"
        log.log(
            logging.INFO if ok else logging.ERROR,
            "healthy" if ok else "failed to become healthy",
            extra={"fields": {"component": part.name, "pid": part.pid}},
        )
        self.publish()
        return ok

    async def start_all(self) -> bool:
        for part in self.parts:
            if not await self._bring_up(part):
                return False
        self.ready = True
        self.publish()
        return True

    async def watch(self) -> None:
        """Restart crashed parts with backoff until told to stop."""
        while not self.stopping.is_set():
            now = time.monotonic()
            for part in self.parts:
                if part.state == "healthy" and part.exited():
                    part.state = "down"
                    delay = BACKOFF_S[min(part.restarts, len(BACKOFF_S) - 1)]
                    self.next_restart[part.name] = now + delay
                    log.warning(
                        "exited; restarting",
                        extra={"fields": {"component": part.name, "in_s": delay}},
                    )
                    self.publish()
                due = self.next_restart.get(part.name)
                if (
                    part.state == "down"
                    and due is not None
                    and (now >= due or self.reconcile_now.is_set())
                ):
                    del self.next_restart[part.name]
                    part.restarts += 1
                    if not await self._bring_up(part):
                        self.next_restart[part.name] = time.monotonic() + BACKOFF_S[-1]
            self.reconcile_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.25)

    async def stop_all(self) -> None:
        self.ready = False
        for part in reversed(self.parts):
            log.info("stopping", extra={"fields": {"component": part.name}})
            await part.stop()
            self.publish()


async def main(stack: Stack, with_edge: bool) -> int:
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    # Certificates for every identity, before any part starts (they all share one dev CA).
    await asyncio.to_thread(
        ensure_pki, stack.pki_dir, [*SERVICES, WORKER_IDENTITY, *CLIENT_IDENTITIES]
    )
    os.environ["UTIMESH_TLS_DIR"] = str(
        stack.pki_dir
    )  # the supervisor's own health checks use mTLS
    sup = Supervisor(stack, components(stack, with_edge=with_edge))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, sup.stopping.set)
    loop.add_signal_handler(signal.SIGINT, sup.stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, sup.reconcile_now.set)
    sup.publish()
    code = 0
    try:
        if await sup.start_all():
            await sup.watch()
        else:
            code = 1
    finally:
        await sup.stop_all()
        stack.status_file.unlink(missing_ok=True)
    return code


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--base-port", type=int, default=None)
    parser.add_argument("--no-edge", action="store_true", help="do not start the Envoy edge")
    args = parser.parse_args()
    overrides = {
        k: v
        for k, v in {"state_dir": args.state_dir, "base_port": args.base_port}.items()
        if v is not None
    }
    stack = Stack.from_settings(StackSettings(**overrides))
    configure_logging("supervisor")
    raise SystemExit(asyncio.run(main(stack, with_edge=not args.no_edge)))


if __name__ == "__main__":
    cli()
