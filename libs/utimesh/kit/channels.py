"""Client channels: created once per process and reused.

Retries live at one layer only. gRPC's transparent retry re-sends a call that never reached a
server (on by default); nothing here retries a call a server has seen, because an UNAVAILABLE
from an agent usually means its model is failing, and the LLM adapter has already retried that
(utimesh.llm.openai_compat). Retrying again here would multiply the attempts.
"""

from __future__ import annotations

import json

import grpc

_SERVICE_CONFIG = json.dumps({"methodConfig": [{"name": [{}], "waitForReady": False}]})

CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A plaintext aio channel to `target` (host:port). Close it with `await channel.close()`."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
