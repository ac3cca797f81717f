"""Typed settings of the edge gateway, read from UTIMESH_EDGE_* (nested fields use `__`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CONSULT_SERVICE = "utimesh.consult.v1.ConsultationService"
OPERATIONS_SERVICE = "google.longrunning.Operations"
#: The gRPC services the edge publishes as REST (both served by consult).
EDGE_SERVICES = (CONSULT_SERVICE, OPERATIONS_SERVICE)
"""The one gRPC service the edge exposes (transcoded to REST)."""

MIB = 1024 * 1024


def default_state_dir() -> Path:
    """Where run-time artefacts live (descriptor set, dev keys, bootstrap): never in the repo.

    `$UTIMESH_EDGE_STATE_DIR`, else `$XDG_STATE_HOME/utimesh/edge`, else
    `~/.local/state/utimesh/edge`. Stable across runs so that `utimesh token` and a running
    gateway share the dev issuer's key.
    """
    if explicit := os.environ.get("UTIMESH_EDGE_STATE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "utimesh" / "edge"


class UpstreamTls(BaseModel):
    """TLS from the edge to the consult service (mTLS when a client certificate is given).

    Env: UTIMESH_EDGE_UPSTREAM_TLS__CA_FILE, __CERT_FILE, __KEY_FILE, __SNI, __SPIFFE_ID.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path = Field(description="PEM bundle that signs the consult service's certificate")
    cert_file: Path | None = Field(default=None, description="edge client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="edge client private key (PEM)")
    sni: str = Field(default="", description="server name sent in the TLS hello; empty = none")
    spiffe_id: str = Field(
        default="",
        description="URI SAN the consult certificate must carry, e.g. "
        "spiffe://utimesh.local/ns/utimesh/sa/consult; empty = any certificate the CA signed",
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        if self.spiffe_id and not self.spiffe_id.startswith("spiffe://"):
            raise ValueError("spiffe_id must start with spiffe://")
        return self


class JwtSettings(BaseModel):
    """Who may call: RS256 tokens of one issuer for one audience.

    Exactly one key source: `jwks_file` (local development; see gateway.jwt_dev) or `jwks_url`
    (production: the identity provider's JWKS endpoint, fetched and cached by Envoy).
    Env: UTIMESH_EDGE_JWT__ISSUER, __AUDIENCE, __JWKS_FILE, __JWKS_URL, __ROLES_CLAIM, ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = "https://dev-issuer.utimesh.local"
    audience: str = "utimesh-edge"
    jwks_file: Path | None = None
    jwks_url: AnyHttpUrl | None = None
    jwks_ca_file: Path = Field(
        default=Path("/etc/ssl/certs/ca-certificates.crt"),
        description="CA bundle to verify an https JWKS endpoint",
    )
    jwks_cache_seconds: int = Field(default=300, ge=1)
    jwks_fetch_timeout_seconds: float = Field(default=5.0, gt=0)
    roles_claim: str = Field(default="roles", pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    cache_size: int = Field(default=1000, ge=0, description="verified tokens kept (jwt_cache)")

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of jwks_file (dev) or jwks_url (production)")
        return self


class EdgeSettings(BaseSettings):
    """Everything the Envoy bootstrap is generated from. Fails fast on bad values."""

    model_config = SettingsConfigDict(
        env_prefix="UTIMESH_EDGE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=1, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=9901, ge=1, le=65535)

    consult_host: str = "127.0.0.1"
    consult_port: int = Field(default=50050, ge=1, le=65535)
    upstream_tls: UpstreamTls | None = None
    upstream_connect_timeout_seconds: float = Field(default=2.0, gt=0)
    health_check_interval_seconds: float = Field(
        default=5.0, gt=0, description="active gRPC health checks of the consult service"
    )

    jwt: JwtSettings

    rate_limit_tokens: int = Field(
        default=60, ge=1, description="requests allowed per fill interval, per client IP"
    )
    rate_limit_fill_interval_seconds: float = Field(default=60.0, ge=0.05)
    rate_limit_max_clients: int = Field(
        default=10_000, ge=1, description="client buckets kept (LRU) before the oldest is dropped"
    )

    max_request_bytes: int = Field(default=1 * MIB, ge=1024, le=64 * MIB)
    max_connections: int = Field(default=10_000, ge=1, description="open client connections")
    trusted_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=5,
        description="proxies in front whose X-Forwarded-For entries are trusted for the client "
        "address (rate limits are per client); 0 when clients connect directly",
    )
    unary_timeout_seconds: float = Field(default=90.0, gt=1)
    stream_timeout_seconds: float = Field(default=180.0, gt=1)
    cors_allowed_origins: list[str] = Field(
        default_factory=list, description="exact origins, e.g. https://app.utimesh.example"
    )
    access_log_path: str = "/dev/stdout"
    state_dir: Path = Field(default_factory=default_state_dir)

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        if self.listen_port == self.admin_port:
            raise ValueError("listen_port and admin_port must differ")
        for origin in self.cors_allowed_origins:
            if origin == "*" or "://" not in origin:
                raise ValueError(f"CORS origin must be an exact scheme://host[:port]: {origin!r}")
        return self
