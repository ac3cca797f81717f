"""The `utimesh` command line: triage patients, run services, run the demo."""

from __future__ import annotations

import click

from utimesh.cli import token as token_module
from utimesh.cli.audit import audit
from utimesh.cli.config import config
from utimesh.cli.consult import consult
from utimesh.cli.demo import demo
from utimesh.cli.mcp_cmd import mcp
from utimesh.cli.rest import ask, report
from utimesh.cli.serve import serve
from utimesh.cli.stack import down, status, up
from utimesh.cli.triage import ruleset, triage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="utimesh")
def cli() -> None:
    """utimesh: pharmacist UTI care. Every result is a draft for prescriber sign-off."""


cli.add_command(triage)
cli.add_command(ruleset)
cli.add_command(serve)
cli.add_command(demo)
cli.add_command(consult)
cli.add_command(config)
cli.add_command(audit)
for _command in (up, status, down, token_module.token, report, ask, mcp):
    cli.add_command(_command)


def main() -> None:
    cli()
