"""The utimesh edge: Envoy in front of the consult service, REST/JSON <-> gRPC.

Public surface:
    EdgeSettings, JwtSettings, UpstreamTls   typed settings (env UTIMESH_EDGE_*)
    prepare(settings) -> Prepared            descriptor set + Envoy bootstrap in the state dir
    dev_settings(...)                        settings wired to the local dev token issuer
    gateway.envoy                            find, validate, start and stop Envoy
    gateway.jwt_dev                          dev RS256 issuer and `mint`
    gateway.openapi                          the OpenAPI document (python -m gateway.openapi)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.settings import EdgeSettings, JwtSettings, UpstreamTls, default_state_dir

BOOTSTRAP_FILE = "envoy.yaml"


@dataclass(frozen=True)
class Prepared:
    """Files a run of the edge needs, all under the state dir."""

    config: Path
    descriptor: Path


def prepare(settings: EdgeSettings, *, config_name: str = BOOTSTRAP_FILE) -> Prepared:
    """Build the descriptor set and write the Envoy bootstrap into `settings.state_dir`."""
    from gateway.config import write_bootstrap
    from gateway.descriptor import build_descriptor_set

    descriptor = build_descriptor_set(settings.state_dir)
    config = write_bootstrap(settings, descriptor, settings.state_dir / config_name)
    return Prepared(config=config, descriptor=descriptor)


def dev_settings(state_dir: Path | None = None, **overrides: Any) -> EdgeSettings:
    """Settings that trust the local dev issuer (creating its key pair if needed)."""
    from gateway.jwt_dev import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_issuer

    state = state_dir or default_state_dir()
    issuer = ensure_dev_issuer(state)
    jwt = JwtSettings(issuer=DEV_ISSUER, audience=DEV_AUDIENCE, jwks_file=issuer.jwks_path)
    return EdgeSettings(jwt=jwt, state_dir=state, **overrides)


__all__ = [
    "EdgeSettings",
    "JwtSettings",
    "Prepared",
    "UpstreamTls",
    "default_state_dir",
    "dev_settings",
    "prepare",
]
