"""Client channels: created once per process and reused.

Retries live at one layer only. gRPC's transparent retry re-sends a call that never reached a
server (on by default); nothing here retries a call a server has seen, because an UNAVAILABLE
from an agent usually means its model is failing, and the LLM adapter has already retried that
(utimesh.llm.openai_compat). Retrying again here would multiply the attempts.

Between services, use `service_channel`: mutual TLS with the caller's own certificate when the
mesh PKI is configured (UTIMESH_TLS_DIR, see utimesh.kit.tls), plaintext otherwise.
`insecure_channel` stays plaintext whatever the environment (tests, tools, the edge's clients).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc

from utimesh.kit import tracing
from utimesh.kit.settings import TLS_DIR_ENV
from utimesh.kit.tls import Pki, channel_credentials, dns_name, ensure_pki

_SERVICE_CONFIG = json.dumps({"methodConfig": [{"name": [{}], "waitForReady": False}]})

CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # A restarted peer is back within seconds under the supervisor (or Kubernetes): reconnect
    # quickly instead of gRPC's default backoff, which grows to 120 s and keeps calls failing.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)

SUPERVISOR = "supervisor"  # the identity that starts processes and checks their health
OPERATOR = "operator"  # the identity of a person's tools (health, reflection)

# Certificates read per (directory, identity), re-read at most this often: channels made in a
# poll loop do no file I/O, and a renewed certificate is picked up well before the old expires.
_RELOAD_SECONDS = 3600.0
_loaded: dict[tuple[Path, str], tuple[float, Pki]] = {}


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A plaintext aio channel to `target` (host:port). Close it with `await channel.close()`."""
    return grpc.aio.insecure_channel(
        target, options=CHANNEL_OPTIONS, interceptors=tracing.client_interceptors() or None
    )


def tls_dir_from_env() -> Path | None:
    """The mesh PKI directory of this process (UTIMESH_TLS_DIR), or None: plaintext."""
    value = os.environ.get(TLS_DIR_ENV, "").strip()
    return Path(value) if value else None


def service_channel(
    target: str,
    caller: str,
    *,
    callee: str | None = None,
    pki: Pki | None = None,
    tls_dir: Path | None = None,
) -> grpc.aio.Channel:
    """A channel from service identity `caller` to `target` (host:port).

    Mutual TLS when `pki` is given, or else when `tls_dir` or UTIMESH_TLS_DIR names the mesh
    PKI: the channel presents `caller`'s certificate and trusts only the mesh CA. With `callee`,
    the server must also prove it is that service (its DNS SAN `<callee>.utimesh.svc`), so a
    process of another service listening on the expected port is refused. Plaintext when no PKI
    is configured.

    Without `pki`, the first channel of `caller` in a process makes sure its certificate
    exists (utimesh.kit.tls.ensure_pki: blocking file I/O, milliseconds; later channels reuse
    it for an hour): build channels at composition time, before serving, as with every channel;
    an async caller already running can pass a `pki` loaded in a thread.
    """
    if pki is None:
        directory = tls_dir or tls_dir_from_env()
        if directory is None:
            return insecure_channel(target)
        pki = _pki_for(directory, caller)
    options = CHANNEL_OPTIONS
    if callee is not None:
        options = (*options, ("grpc.ssl_target_name_override", dns_name(callee)))
    return grpc.aio.secure_channel(
        target,
        channel_credentials(pki, caller),
        options=options,
        interceptors=tracing.client_interceptors() or None,
    )


def supervisor_channel(target: str) -> grpc.aio.Channel:
    """The supervisor's channel for health checks: identity "supervisor" under mutual TLS
    (UTIMESH_TLS_DIR set), plaintext otherwise."""
    return service_channel(target, SUPERVISOR)


def _pki_for(directory: Path, caller: str) -> Pki:
    key = (directory, caller)
    now = time.monotonic()
    hit = _loaded.get(key)
    if hit is not None and now < hit[0]:
        return hit[1]
    pki = ensure_pki(directory, [caller])
    _loaded[key] = (now + _RELOAD_SECONDS, pki)
    return pki
