"""The `utimesh` command line: triage patients, run services and the stack, consult, ask."""

from __future__ import annotations

import click

# Modules, not their commands, are imported here: a command named like its module (e.g. the
# `consult` command in utimesh.cli.consult) would otherwise hide the module behind it.
from utimesh.cli import audit as _audit
from utimesh.cli import config as _config
from utimesh.cli import consult as _consult
from utimesh.cli import demo as _demo
from utimesh.cli import eval_cmd as _eval
from utimesh.cli import mcp_cmd as _mcp
from utimesh.cli import queue as _queue
from utimesh.cli import rest as _rest
from utimesh.cli import serve as _serve
from utimesh.cli import stack as _stack
from utimesh.cli import timeline as _timeline
from utimesh.cli import token as _token
from utimesh.cli import triage as _triage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="utimesh")
def cli() -> None:
    """utimesh: pharmacist UTI care. Every result is a draft for prescriber sign-off."""


for _command in (
    _triage.triage,
    _triage.ruleset,
    _serve.serve,
    _demo.demo,
    _consult.consult,
    _config.config,
    _audit.audit,
    _stack.up,
    _stack.status,
    _stack.down,
    _token.token,
    _rest.report,
    _rest.ask,
    _queue.queue,
    _queue.operation,
    _mcp.mcp,
    _timeline.timeline,
    _eval.eval_group,
):
    cli.add_command(_command)


def main() -> None:
    cli()
