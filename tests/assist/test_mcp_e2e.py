"""The MCP server as an assistant meets it: `utimesh mcp` started as a stdio subprocess by the
SDK's client, in front of a real Envoy edge and the real in-process consult mesh, on loopback."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, TextContent

from tests.consult.mesh import Mesh, running_mesh
from tests.factories import BASELINE, patient
from tests.gateway.harness import Edge, running_edge
from utimesh.rules import Knowledge

pytestmark = pytest.mark.asyncio(loop_scope="module")

READ_TIMEOUT_S = 60.0  # every MCP request is bounded; the suite's own timeout bounds the rest


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(knowledge: Knowledge) -> AsyncIterator[Mesh]:
    async with running_mesh(knowledge) as m:
        yield m


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def edge(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    state = tmp_path_factory.mktemp("edge")
    async with running_edge(state, mesh.servers["consult"].port, rate_limit_tokens=10_000) as e:
        yield e


def server_command() -> list[str]:
    """`python -m utimesh.cli mcp` once the command is registered in the CLI group, until then
    the module's own entry point."""
    from utimesh.cli import cli

    if "mcp" in cli.commands:
        return ["-m", "utimesh.cli", "mcp"]
    return ["-m", "utimesh.cli.mcp_cmd"]


@contextlib.asynccontextmanager
async def mcp_client(
    edge: Edge, log_dir: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Client, Path]]:
    """An MCP client session with a fresh `utimesh mcp` subprocess (stderr kept in a file)."""
    log = log_dir / "mcp-server.stderr.log"
    params = StdioServerParameters(
        command=sys.executable,
        args=[*server_command(), "--url", edge.url, *args],
        env={"PYTHONWARNINGS": "error", **(env or {})},
        cwd=str(log_dir),
    )
    with log.open("w") as errlog:
        async with Client(
            stdio_client(params, errlog=errlog), read_timeout_seconds=READ_TIMEOUT_S
        ) as client:
            yield client, log


def dev_args(edge: Edge, role: str = "clinician") -> list[str]:
    return ["--dev-role", role, "--state-dir", str(edge.settings.state_dir)]


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@contextlib.contextmanager
def explained(log: Path) -> Iterator[None]:
    """On a failed assertion, show what the server wrote to stderr."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- server stderr ---\n{log.read_text()[-4000:]}") from None


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    return await client.call_tool(tool, arguments, read_timeout_seconds=READ_TIMEOUT_S)


# --- the happy path --------------------------------------------------------------------------


async def test_lists_three_documented_tools(edge: Edge, tmp_path: Path) -> None:
    async with mcp_client(edge, tmp_path, *dev_args(edge)) as (client, log):
        with explained(log):
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"consult_patient", "ask_consultation", "get_report"}
            for tool in tools.values():
                assert tool.description and len(tool.description) > 80, tool.name
                assert tool.input_schema["type"] == "object"
            consult = tools["consult_patient"]
            assert "identifiers" in (consult.description or "")
            assert "DRAFT for prescriber sign-off" in (consult.description or "")
            props = consult.input_schema["properties"]
            assert consult.input_schema["required"] == ["patient"]
            assert props["profile"]["default"] == "CA-ON"
            patient_schema = props["patient"]
            assert patient_schema["additionalProperties"] is False
            assert set(patient_schema["properties"]) == set(BASELINE)
            assert consult.output_schema is not None
            assert {"name", "decision", "regimen", "notice"} <= set(
                consult.output_schema["properties"]
            )
            assert set(tools["ask_consultation"].input_schema["required"]) == {"name", "question"}
            assert tools["get_report"].input_schema["required"] == ["name"]
            assert (
                tools["get_report"].annotations and tools["get_report"].annotations.read_only_hint
            )


async def test_consult_ask_and_report_round_trip(edge: Edge, tmp_path: Path) -> None:
    """Production path: the token comes from $UTIMESH_TOKEN (here minted by the dev issuer)."""
    token = edge.issuer.mint("assistant", ["clinician"])
    async with mcp_client(edge, tmp_path, env={"UTIMESH_TOKEN": token}) as (client, log):
        with explained(log):
            result = await call(client, "consult_patient", {"patient": patient()})
            assert not result.is_error, text_of(result)
            summary = result.structured_content
            assert summary is not None
            assert json.loads(text_of(result)) == summary  # the same view as text
            assert summary["name"].startswith("consultations/")
            assert summary["decision"] == "recommend_treatment"
            assert summary["outcome"] == "agreed"
            assert summary["notice"].startswith("DRAFT for prescriber sign-off")
            regimen = summary["regimen"]
            assert regimen["agent"] == "nitrofurantoin"
            assert regimen["dose"] == [
                {"ingredient": "nitrofurantoin", "amount": 100, "unit": "mg"}
            ]
            assert regimen["duration"] == {"amount": 5, "unit": "days"}
            assert regimen["frequency"] == "twice_daily" and regimen["route"] == "oral"
            assert "100 mg" in regimen["text"] and "5 days" in regimen["text"]
            rules = [r["rule_id"] for r in summary["rules_fired"]]
            assert "SX-001" in rules and "RX-SEL-NIT" in rules
            assert summary["pharmacist_verdict"] == "approve"
            assert summary["pharmacist_concerns"] == [] and summary["missing_reviews"] == []
            assert summary["report_available"] is True
            assert "intake" not in summary  # the patient is not echoed back

            name = summary["name"]
            asked = await call(
                client, "ask_consultation", {"name": name, "question": "why this antibiotic?"}
            )
            assert not asked.is_error, text_of(asked)
            answer = asked.structured_content
            assert answer is not None
            assert answer["kind"] == "ANSWERED"
            assert "itrofurantoin" in answer["answer"]
            assert answer["rule_ids"] and answer["passage_ids"] and answer["section_ids"]

            report = await call(client, "get_report", {"name": name})
            assert not report.is_error, text_of(report)
            markdown = text_of(report)
            assert markdown.startswith("# ")
            assert "DRAFT" in markdown and name in markdown
            assert token not in log.read_text()


async def test_a_referral_has_no_regimen(edge: Edge, tmp_path: Path) -> None:
    async with mcp_client(edge, tmp_path, *dev_args(edge, "pharmacist")) as (client, log):
        with explained(log):
            result = await call(
                client, "consult_patient", {"patient": patient(red_flags__fever=True)}
            )
            assert not result.is_error, text_of(result)
            summary = result.structured_content
            assert summary is not None
            assert summary["decision"] == "refer"
            assert summary["regimen"] is None
            assert "DRAFT for prescriber sign-off" in summary["notice"]


# --- errors ----------------------------------------------------------------------------------


async def test_bad_patient_and_unknown_consultation_are_tool_errors(
    edge: Edge, tmp_path: Path
) -> None:
    async with mcp_client(edge, tmp_path, *dev_args(edge)) as (client, log):
        with explained(log):
            too_old = await call(client, "consult_patient", {"patient": patient(age=130)})
            assert too_old.is_error
            text = text_of(too_old)
            assert "intake.age" in text and "between 0 and 120" in text, text
            assert "HTTP 400" in text

            profile = await call(
                client, "consult_patient", {"patient": patient(), "profile": "XX-YY"}
            )
            assert profile.is_error and "profile" in text_of(profile), text_of(profile)

            typo = await call(client, "consult_patient", {"patient": patient(dysuira=True)})
            assert typo.is_error and "intake.dysuira" in text_of(typo), text_of(typo)

            missing = await call(client, "get_report", {"name": "consultations/no-such-id"})
            assert missing.is_error and "not found (HTTP 404" in text_of(missing)

            bad_name = await call(client, "get_report", {"name": "consultations/../admin"})
            assert bad_name.is_error and text_of(bad_name).startswith("Error executing tool")
            assert "name:" in text_of(bad_name)


async def test_bad_token_is_unauthorized_and_never_shown(edge: Edge, tmp_path: Path) -> None:
    from gateway.jwt_dev import ensure_dev_issuer

    stranger = ensure_dev_issuer(tmp_path / "other-issuer").mint("mallory", ["clinician"])
    env = {"UTIMESH_TOKEN": stranger}
    async with mcp_client(edge, tmp_path, env=env) as (client, log):
        with explained(log):
            result = await call(client, "consult_patient", {"patient": patient()})
            assert result.is_error
            text = text_of(result)
            assert "unauthorized (HTTP 401)" in text, text
            assert stranger not in text
            assert stranger not in log.read_text()


async def test_a_role_that_may_not_consult_is_forbidden(edge: Edge, tmp_path: Path) -> None:
    async with mcp_client(edge, tmp_path, *dev_args(edge, "auditor")) as (client, log):
        with explained(log):
            result = await call(client, "consult_patient", {"patient": patient()})
            assert result.is_error and "forbidden (HTTP 403)" in text_of(result), text_of(result)
