"""`utimesh config`: show the effective configuration (LLM profiles per agent), secrets masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from utimesh.llm.settings import load_llm_settings, masked
from utimesh.llm.types import ConfigError


@click.group()
def config() -> None:
    """Inspect utimesh configuration."""


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--llm-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="An LLM models.toml instead of $UTIMESH_LLM_CONFIG or the packaged one.",
)
def show(as_json: bool, llm_config: Path | None) -> None:
    """Print the effective LLM settings per agent, after environment overrides.

    API keys are never shown: only the name of the variable that holds each key and whether
    it is set. Credentials in base URLs are masked."""
    try:
        shown = masked(load_llm_settings(llm_config))
    except ConfigError as exc:
        raise click.ClickException(exc.message) from exc
    if as_json:
        click.echo(json.dumps({"llm": shown}, indent=2))
        return
    Console().print(_table(shown))


def _table(shown: dict[str, Any]) -> Table:
    table = Table(title=f"LLM profiles (from {shown['source']})")
    columns = (
        ("agent", None),
        ("provider", "provider"),
        ("model", "model"),
        ("base_url", "base_url"),
        ("api key", None),
        ("temp", "temperature"),
        ("max out", "max_output_tokens"),
        ("timeout s", "timeout_s"),
        ("retries", "retries"),
        ("reasks", "reasks"),
        ("$/1k in", "input_cost_per_1k"),
        ("$/1k out", "output_cost_per_1k"),
    )
    for title, _ in columns:
        table.add_column(title, overflow="fold")
    for agent, profile in shown["agents"].items():
        cells = []
        for title, key in columns:
            if title == "agent":
                cells.append(agent)
            elif title == "api key":
                offline = profile["provider"] == "offline"  # no key is used: nothing to check
                cells.append("-" if offline else f"{profile['api_key_env']} ({profile['api_key']})")
            elif key == "base_url" and profile[key] is None:
                cells.append("-" if profile["provider"] == "offline" else "OpenAI default")
            else:
                cells.append(str(profile[key]))
        table.add_row(*cells)
    return table
