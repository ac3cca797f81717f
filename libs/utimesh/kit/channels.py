"""Client channels: created once per process and reused; retries only on UNAVAILABLE, in one
place (the service config below), so no other layer retries the same call."""

from __future__ import annotations

import json

import grpc

# Transparent retry of calls that never reached a server. Istio retries too in production:
# see mesh/ for how the two are kept from multiplying.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A plaintext aio channel to `target` (host:port). Close it with `await channel.close()`."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
