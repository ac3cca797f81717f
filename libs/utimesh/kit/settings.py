"""Settings shared by every service process, read from the environment (fail fast when bad)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Shared by every process of one local mesh (services, supervisor, tools), whatever their prefix.
TLS_DIR_ENV = "UTIMESH_TLS_DIR"
MESH_POLICY_ENV = "UTIMESH_MESH_POLICY"


class ServiceSettings(BaseSettings):
    """Common knobs. Each service subclasses this with its own env prefix, e.g. UTIMESH_TRIAGE_.

    Mutual TLS is on when `tls_dir` is set (env UTIMESH_TLS_DIR, no service prefix): the server
    then requires a client certificate of the mesh CA and applies `mesh/policy.toml`."""

    # validate_by_name: the unprefixed aliases below still accept `tls_dir=` in code and tests.
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 = any free port")
    grace_seconds: float = Field(default=5.0, ge=0, description="drain time on SIGTERM")
    max_budget_seconds: float = Field(default=10.0, gt=0, description="longest any call may run")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    tls_dir: Path | None = Field(
        default=None,
        validation_alias=TLS_DIR_ENV,
        description="directory of the mesh PKI (utimesh.kit.tls); unset = plaintext",
    )
    service_identity: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="certificate identity (service account); default: the service's name",
    )
    mesh_policy: Path | None = Field(
        default=None,
        validation_alias=MESH_POLICY_ENV,
        description="allow-lists file; default: the repository's mesh/policy.toml",
    )
