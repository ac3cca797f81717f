"""An MCP server that lets an assistant run utimesh consultations through the REST edge.

(Named `assist`, not `mcp`, so that it never shadows the `mcp` SDK package.)

Public surface:
    build_server(edge) -> MCPServer        the three tools: consult_patient, ask_consultation,
                                           get_report
    EdgeClient(url, tokens)                the REST edge client (one reused httpx2 client)
    StaticToken(value), DevTokens(dir, roles)   bearer tokens: given, or minted by the dev issuer
    EdgeError                              a failed edge call, with its status and fields
    intake_json(patient), PATIENT_SCHEMA   the cases.json patient -> the REST intake JSON
    serve_stdio(url, tokens)               run the server on stdin/stdout until EOF
"""

from __future__ import annotations

from utimesh.assist.edge import DevTokens, EdgeClient, EdgeError, StaticToken, TokenSource
from utimesh.assist.patient import PATIENT_SCHEMA, PatientError, intake_json
from utimesh.assist.server import ConsultationsApi, build_server


async def serve_stdio(url: str, tokens: TokenSource, *, timeout_s: float = 120.0) -> None:
    """Serve the tools over stdio (one MCP client) until it closes stdin."""
    async with EdgeClient(url, tokens, timeout_s=timeout_s) as edge:
        await build_server(edge).run_stdio_async()


__all__ = [
    "PATIENT_SCHEMA",
    "ConsultationsApi",
    "DevTokens",
    "EdgeClient",
    "EdgeError",
    "PatientError",
    "StaticToken",
    "TokenSource",
    "build_server",
    "intake_json",
    "serve_stdio",
]
