"""The layout of one local stack: where its state lives and which loopback ports it uses.

Two stacks run side by side with different state dirs and base ports. Nothing here starts
anything; `mesh.supervisor` does."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("triage", "doctor", "pharmacist", "evidence", "report", "consult")
# Identities that call but serve nothing: the edge, this supervisor, an operator at a terminal.
CLIENT_IDENTITIES = ("edge", "supervisor", "operator")
# The consult service's job workers (`utimesh serve worker`): one identity, N processes.
WORKER_IDENTITY = "worker"
MAX_WORKERS = 4
GRPC_NAMES = {
    "triage": "utimesh.triage.v1.TriageService",
    "doctor": "utimesh.doctor.v1.DoctorService",
    "pharmacist": "utimesh.pharmacist.v1.PharmacistService",
    "evidence": "utimesh.evidence.v1.EvidenceService",
    "report": "utimesh.report.v1.ReportService",
    "consult": "utimesh.consult.v1.ConsultationService",
}
# Offsets from the base port. The edge takes the base port itself.
_OFFSETS = {
    "edge": 0,
    "edge_admin": 1,
    "consult": 10,
    "triage": 11,
    "doctor": 12,
    "pharmacist": 13,
    "evidence": 14,
    "report": 15,
    **{f"worker-{i}": 15 + i for i in range(1, MAX_WORKERS + 1)},  # health ports
    "postgres": 20,
    "redis": 21,
}


class StackSettings(BaseSettings):
    """UTIMESH_STATE_DIR, UTIMESH_BASE_PORT, UTIMESH_DATABASE_URL, UTIMESH_REDIS_URL,
    UTIMESH_WORKERS."""

    model_config = SettingsConfigDict(env_prefix="UTIMESH_", extra="ignore", frozen=True)

    state_dir: Path = Path(".state")
    base_port: int = Field(default=8080, ge=1024, le=65000)
    database_url: str = ""  # empty: start the embedded PostgreSQL
    redis_url: str = ""  # empty: start the embedded Redis
    workers: int = Field(default=1, ge=0, le=MAX_WORKERS)  # job workers (queued consultations)


@dataclass(frozen=True)
class Stack:
    state_dir: Path
    base_port: int
    database_url: str = ""
    redis_url: str = ""
    workers: int = 1

    @classmethod
    def from_settings(cls, s: StackSettings) -> Stack:
        return cls(s.state_dir.resolve(), s.base_port, s.database_url, s.redis_url, s.workers)

    def port(self, part: str) -> int:
        return self.base_port + _OFFSETS[part]

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.port(service)}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port('edge')}"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def status_file(self) -> Path:
        return self.state_dir / "stack.json"

    def service_env(self) -> dict[str, str]:
        """Environment every service process of this stack gets."""
        env = {
            f"UTIMESH_CONSULT_{s.upper()}_TARGET": self.target(s)
            for s in SERVICES
            if s != "consult"
        }
        env["UTIMESH_DATABASE_URL"] = (
            self.database_url or f"postgresql://postgres@127.0.0.1:{self.port('postgres')}/postgres"
        )
        env["UTIMESH_REDIS_URL"] = self.redis_url or f"redis://127.0.0.1:{self.port('redis')}/0"
        env["UTIMESH_TLS_DIR"] = str(self.pki_dir)  # every service speaks mTLS inside the stack
        return env

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"


def read_status(stack: Stack) -> dict[str, Any] | None:
    try:
        data = json.loads(stack.status_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(stack: Stack, status: dict[str, Any]) -> None:
    """Atomic: readers never see half a file."""
    tmp = stack.status_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=1))  # keeps the start order of the parts
    os.replace(tmp, stack.status_file)


def process_alive(pid: int) -> bool:
    """True for a running process; False for a missing or zombie one (PID 1 may not reap here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")
