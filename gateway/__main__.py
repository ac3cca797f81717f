"""Run the edge in the foreground: python -m gateway [--dev] [--validate-only] [--print-config].

Reads UTIMESH_EDGE_* (see gateway.settings), writes the descriptor set and the bootstrap into
the state dir, validates the bootstrap, then replaces this process with Envoy (so a supervisor
that started `python -m gateway` signals and reaps Envoy itself). `--dev` trusts the local dev
token issuer (its JWKS in the state dir; mint tokens with `utimesh token`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from pydantic import ValidationError

from gateway import dev_settings, prepare
from gateway.envoy import EnvoyError, LogLevel, command, validate
from gateway.settings import EdgeSettings


def _become_envoy(argv: list[str]) -> NoReturn:
    """Replace this process with Envoy: signals and exit code are then Envoy's own."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dev", action="store_true", help="trust the local dev token issuer")
    parser.add_argument("--validate-only", action="store_true", help="check, do not run")
    parser.add_argument("--print-config", action="store_true", help="print the bootstrap YAML")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["trace", "debug", "info", "warning", "error", "critical", "off"],
    )
    args = parser.parse_args(argv)
    try:
        settings = dev_settings() if args.dev else EdgeSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"bad edge settings (UTIMESH_EDGE_*):\n{exc}", file=sys.stderr)
        return 2
    prepared = prepare(settings)
    try:
        validate(prepared.config)
    except EnvoyError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.print_config:
        print(prepared.config.read_text())
    if args.validate_only or args.print_config:
        return 0
    level: LogLevel = args.log_level
    _become_envoy(command(prepared.config, base_id=settings.admin_port, log_level=level))


if __name__ == "__main__":
    raise SystemExit(main())
