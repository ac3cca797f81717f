"""Reading patients for the CLI: one patient, a list of patients, or cases.json-style objects."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click


@dataclass(frozen=True)
class PatientInput:
    label: str  # the case id when given, else the position in the file
    patient: dict[str, Any]
    profile: str | None  # from a cases.json-style object; the --profile flag wins


def read_patients(source: str) -> tuple[list[PatientInput], bool]:
    """Patients in `source` (a path or "-"), and whether the file held a list."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {source}: {exc.strerror}", param_hint="FILE"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}", param_hint="FILE"
        ) from None
    is_list = isinstance(data, list)
    items = data if is_list else [data]
    out: list[PatientInput] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise click.BadParameter(f"item {i} is not a JSON object", param_hint="FILE")
        if isinstance(item.get("patient"), dict):  # a cases.json entry
            out.append(PatientInput(str(item.get("id", i)), item["patient"], item.get("profile")))
        else:
            out.append(PatientInput(str(i), item, None))
    return out, is_list
