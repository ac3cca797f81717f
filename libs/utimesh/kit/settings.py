"""Settings shared by every service process, read from the environment (fail fast when bad)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common knobs. Each service subclasses this with its own env prefix, e.g. UTIMESH_TRIAGE_."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 = any free port")
    grace_seconds: float = Field(default=5.0, ge=0, description="drain time on SIGTERM")
    max_budget_seconds: float = Field(default=10.0, gt=0, description="longest any call may run")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
