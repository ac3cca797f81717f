"""`utimesh serve SERVICE`: run one service process in the foreground."""

from __future__ import annotations

import importlib

import click

from utimesh.kit import tracing

_SERVICES = {
    "triage": (
        "services.triage.main",
        "TriageSettings",
        "The triage service: deterministic rules over gRPC (default port 50051).",
    ),
    "doctor": ("services.doctor.main", "DoctorSettings", "The doctor agent (default port 50052)."),
    "pharmacist": (
        "services.pharmacist.main",
        "PharmacistSettings",
        "The pharmacist agent (default port 50053).",
    ),
    "evidence": (
        "services.evidence.main",
        "EvidenceSettings",
        "The evidence service (default port 50054).",
    ),
    "report": (
        "services.report.main",
        "ReportSettings",
        "The report service (default port 50055).",
    ),
    "consult": (
        "services.consult.main",
        "ConsultSettings",
        "The consultation service (default port 50050).",
    ),
    "worker": (
        "services.consult.worker_main",
        "WorkerSettings",
        "A job worker: runs queued consultations (StartConsultation) from the Redis stream;"
        " health on port 50056 by default. Run several to scale.",
    ),
}


@click.group()
def serve() -> None:
    """Run one utimesh service in the foreground (SIGTERM drains it gracefully).

    Settings come from UTIMESH_<SERVICE>_* environment variables; flags override them.
    """


def _command(name: str, module: str, settings_class: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text)
    @click.option(
        "--host",
        default=None,
        help=f"Address to bind (env UTIMESH_{name.upper()}_HOST, default 127.0.0.1).",
    )
    @click.option(
        "--port",
        type=int,
        default=None,
        help=f"Port (env UTIMESH_{name.upper()}_PORT; 0 = any free port).",
    )
    def command(host: str | None, port: int | None) -> None:
        mod = importlib.import_module(
            module
        )  # imported here: one service's dependencies per process
        overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        # Before any server or channel exists: they pick up the tracing interceptors.
        tracing.configure_from_env(name)
        mod.run(getattr(mod, settings_class)(**overrides))

    return command


for _name, (_module, _settings, _help) in _SERVICES.items():
    serve.add_command(_command(_name, _module, _settings, _help))
