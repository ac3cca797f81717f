"""How the supervisor runs the edge: `python -m gateway --dev` (which becomes Envoy) with the
stack's ports, the dev token issuer in the stack's state dir, and mTLS to consult as "edge"."""

from __future__ import annotations

import sys

from mesh.stack import Stack
from utimesh.kit.tls import identity


def edge_state_dir(stack: Stack) -> str:
    return str(stack.state_dir / "edge")


def envoy_command(stack: Stack) -> list[str]:
    return [sys.executable, "-m", "gateway", "--dev"]


def edge_env(stack: Stack) -> dict[str, str]:
    pki = stack.pki_dir
    return {
        "UTIMESH_EDGE_LISTEN_PORT": str(stack.port("edge")),
        "UTIMESH_EDGE_ADMIN_PORT": str(stack.port("edge_admin")),
        "UTIMESH_EDGE_CONSULT_PORT": str(stack.port("consult")),
        "UTIMESH_EDGE_STATE_DIR": edge_state_dir(stack),
        "UTIMESH_EDGE_ACCESS_LOG_PATH": str(stack.logs / "edge-access.log"),
        "UTIMESH_EDGE_UPSTREAM_TLS__CA_FILE": str(pki / "ca.crt"),
        "UTIMESH_EDGE_UPSTREAM_TLS__CERT_FILE": str(pki / "edge.crt"),
        "UTIMESH_EDGE_UPSTREAM_TLS__KEY_FILE": str(pki / "edge.key"),
        "UTIMESH_EDGE_UPSTREAM_TLS__SPIFFE_ID": identity("consult"),
    }
