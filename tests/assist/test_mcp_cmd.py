"""`utimesh mcp` refuses to start without a usable token or URL, before touching stdio."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from utimesh.cli.mcp_cmd import mcp


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {"UTIMESH_TOKEN": ""}, "set $UTIMESH_TOKEN"),
        (["--token-env", "MY_TOKEN"], {"MY_TOKEN": " "}, "set $MY_TOKEN"),
        (["--state-dir", "x"], {"UTIMESH_TOKEN": "t"}, "--state-dir only applies"),
        (["--dev-role", "clinician", "--token-env", "T"], {}, "exclude each other"),
        (["--dev-role", "nurse"], {}, "'nurse' is not one of"),
        (["--url", "ftp://edge"], {"UTIMESH_TOKEN": "t"}, "http(s)://host"),
        (["--timeout", "0"], {"UTIMESH_TOKEN": "t"}, "--timeout"),
    ],
)
def test_refuses_to_start(args: list[str], env: dict[str, str], expected: str) -> None:
    result = CliRunner().invoke(mcp, args, env=env)
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_help_says_what_it_serves(tmp_path: Path) -> None:
    result = CliRunner().invoke(mcp, ["--help"])
    assert result.exit_code == 0
    for word in ("consult_patient", "ask_consultation", "get_report", "DRAFT", "identifiers"):
        assert word in result.output
